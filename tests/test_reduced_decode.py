"""Reduced JPEG decoding, on by default: big JPEGs decoded at 1/2..1/8 scale (libjpeg's DCT
scaling), never below twice what the model's resize needs, checked through the model on
photographs before a predictor relies on it; results still in the file's pixels;
``exact_decode`` gives torchvision's reference pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou
from typer.testing import CliRunner

import torchinfer as ti
from torchinfer.cli.app import app
from torchinfer.datasets import generate_scene, generate_single, scene_rng
from torchinfer.runner.images import ImageLoader, full_size, short_side_at_least
from torchinfer.verify import Tolerance


def _upscaled(scene_image: Image.Image, size: tuple[int, int], seed: int) -> Image.Image:
    """A picture drawn small, enlarged to ``size`` (w, h) with a little sensor noise, as a big
    photograph's JPEG has entropy in every block."""
    big = np.asarray(scene_image.resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
    big = big + np.random.default_rng(seed).normal(0, 3, big.shape)
    return Image.fromarray(np.clip(big, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def big_pictures(tmp_path_factory):
    """Single shapes (classifier) and scenes (segmenter, detector) saved as 3000 x 2250 JPEGs:
    decoded at 1/4 by default, at full size with exact_decode."""
    folder = tmp_path_factory.mktemp("big")
    singles, scenes = [], []
    for i in range(6):
        single = generate_single(scene_rng(41, i), 300, class_id=i % 4)
        singles.append(folder / f"single{i}.jpg")
        _upscaled(single.image, (2250, 2250), i).save(singles[-1], quality=90)
        scene = generate_scene(scene_rng(43, i), (225, 300))
        scenes.append(folder / f"scene{i}.jpg")
        _upscaled(scene.image, (3000, 2250), i).save(scenes[-1], quality=90)
    return singles, scenes


def test_reduced_decode_never_goes_below_the_size_asked(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (2048, 1536), (90, 120, 200)).save(path)
    loader = ImageLoader()
    assert loader.load(path).size == (2048, 1536)
    half = loader.load(path, min_short_side=512)
    assert half.size == (1024, 768) and full_size(half) == (2048, 1536)  # 1/4 would be 384
    assert loader.load(path, min_short_side=100).size == (256, 192)  # 1/8 at most
    assert loader.load(path, min_size=lambda size: (2000, 10)).size == (2048, 1536)
    png = tmp_path / "big.png"
    Image.new("RGB", (2048, 1536)).save(png)
    assert loader.load(png, min_short_side=100).size == (2048, 1536)  # JPEG only


def test_reduced_decode_gives_libjpegs_own_scaled_pixels_and_turns_them_upright(tmp_path,
                                                                                photo_paths):
    """The fast path (simplejpeg) and Pillow's draft decode the same pixels; an EXIF
    orientation is applied and the full size reported upright."""
    photo = Image.open(photo_paths[0]).convert("RGB").resize((1600, 1200))
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored lying down: upright is 1200 x 1600
    photo.save(path, quality=90, exif=exif)
    loader = ImageLoader()
    reduced = loader.load(path, min_short_side=300)
    assert reduced.size == (300, 400) and full_size(reduced) == (1200, 1600)
    with Image.open(path) as img:
        img.draft("RGB", (400, 300))
        reference = np.asarray(img.convert("RGB").transpose(Image.Transpose.ROTATE_270))
    assert np.array_equal(np.asarray(reduced), reference)
    exact = loader.load(path)
    assert exact.size == (1200, 1600) and full_size(exact) == (1200, 1600)


def prepared(*args, **kwargs):
    """``ti.load`` and its preparation (the decode's check runs before the first batch)."""
    predictor = ti.load(*args, **kwargs)
    predictor.prepare()
    return predictor


def test_default_predictors_reduce_after_their_check_and_exact_decode_does_not():
    for task, model in (("classify", "shapes_classifier"), ("segment", "shapes_segmenter"),
                        ("detect", "shapes_detector")):
        default = prepared(task, model, device="cpu")
        assert default.reduced_decode and default.decode_report.reduced, task
        assert default.decode_report.reason.startswith("reduced: within")
        exact = prepared(task, model, device="cpu", exact_decode=True)
        assert not exact.reduced_decode
        assert exact.decode_report.reason == "exact decoding asked for"


def test_answers_on_big_pictures_equal_an_exact_decode_and_stay_in_the_files_pixels(
        big_pictures):
    singles, scenes = big_pictures
    pairs = {task: (ti.load(task, model, device="cpu"),
                    ti.load(task, model, device="cpu", exact_decode=True))
             for task, model in (("classify", "shapes_classifier"),
                                 ("segment", "shapes_segmenter"),
                                 ("detect", "shapes_detector"))}
    fast, exact = pairs["classify"]
    a, b = fast(list(map(str, singles))), exact(list(map(str, singles)))
    assert [r.top1.label for r in a] == [r.top1.label for r in b]
    fast, exact = pairs["segment"]
    for path in scenes:
        m1, m2 = fast(str(path)).mask, exact(str(path)).mask
        assert m1.shape == m2.shape == (2250, 3000)  # the file's pixels
        assert (m1 == m2).mean() > 0.99
    fast, exact = pairs["detect"]
    for path in scenes:
        d1, d2 = fast(str(path)), exact(str(path))
        assert d1.image_size == d2.image_size == (2250, 3000)
        # every confident box of one is the other's, same class, IoU >= 0.9 (near the
        # threshold a box may come and go, as it does between backends)
        for one, other in ((d1, d2), (d2, d1)):
            for box, score, cls in zip(one.boxes, one.scores, one.class_ids):
                if score >= 0.5:
                    same = other.boxes[other.class_ids == cls]
                    assert len(same) and box_iou(torch.from_numpy(box[None]),
                                                 torch.from_numpy(same)).max() >= 0.9


def test_a_model_the_reduction_changes_too_much_decodes_in_full(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINFER_CACHE", str(tmp_path))  # no verdict kept from other tests
    monkeypatch.setattr("torchinfer.runtime.decoding.DECODE_TOLERANCE",
                        Tolerance(atol=0.0, rtol=0.0))
    clf = prepared("classify", "shapes_classifier", device="cpu")
    assert not clf.reduced_decode and not clf.decode_report.reduced
    assert clf.decode_report.reason.startswith("exact: a reduced decode changes")
    again = prepared("classify", "shapes_classifier", device="cpu")  # the verdict is kept
    assert not again.reduced_decode and "kept from an earlier check" in again.decode_report.reason
    unchecked = prepared("classify", "shapes_classifier", device="cpu", verify_backend=False)
    assert unchecked.reduced_decode and unchecked.decode_report.reason == "reduced, not verified"


def test_the_run_summary_says_how_jpegs_were_decoded(big_pictures, tmp_path):
    folder = big_pictures[0][0].parent
    for flags, reduced in (([], True), (["--exact-decode"], False)):
        out = tmp_path / f"out{len(flags)}"
        result = CliRunner().invoke(app, ["predict", "classify", str(folder), "-m",
                                          "shapes_classifier", "--out", str(out), "--quiet",
                                          *flags])
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "summary.json").read_text())
        assert summary["decode"]["reduced"] is reduced and summary["succeeded"] == 12


def test_short_side_request_is_proportional():
    assert short_side_at_least(512)((2048, 1536)) == (683, 512)
    assert short_side_at_least(4000)((2048, 1536)) == (2048, 1536)
