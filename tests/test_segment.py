"""Semantic segmentation: parity with torchvision's own pipeline, an oracle whose exact answer
is known, drawing checked by pixels, and the CLI outputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from PIL import Image, ImageDraw
from torch import nn
from torchvision.models import get_model_weights
from typer.testing import CliRunner

import torchinfer as ti
from torchinfer.cli.app import app
from torchinfer.draw import mask_image, overlay_segmentation, voc_palette
from torchinfer.results import Segmentation
from torchinfer.tasks.segment import upsampled_argmax
from torchinfer.testing import main_output

SEGMENTERS = ["deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"]


@pytest.fixture(scope="module")
def segmenter_weights(calibrated):
    return {arch: calibrated(arch, weights_backbone=None) for arch in SEGMENTERS}


@pytest.mark.parametrize("arch", SEGMENTERS)
def test_logits_and_masks_match_torchvision(arch, segmenter_weights, photo_paths):
    model, weights = segmenter_weights[arch]
    seg = ti.load("segment", arch, weights, device="cpu")
    reference_tf = get_model_weights(arch).DEFAULT.transforms()
    assert seg.config.resize_size == (520,) and seg.config.crop_size is None
    assert seg.model.labels == get_model_weights(arch).DEFAULT.meta["categories"]

    paths = photo_paths[:3]  # three sizes: 451x300, 512x512, 600x400 -> three model input sizes
    images = [seg.loader.load(p) for p in paths]
    batch = seg.preprocess(images, [str(p) for p in paths])
    with torch.inference_mode():
        ours = seg.forward(seg.device_preprocess(batch.tensor), batch)
        results = seg.postprocess(ours, batch)
        for path, logits, result in zip(paths, ours, results):
            img = Image.open(path).convert("RGB")
            reference = main_output(model.eval()(reference_tf(img)[None]))[0]
            assert logits.shape == reference.shape
            assert torch.allclose(logits, reference, atol=1e-3, rtol=1e-3)
            # the mask is at the ORIGINAL size, from logits resized before the argmax
            assert result.size == (img.height, img.width)
            expected = TF.interpolate(reference[None], size=result.size, mode="bilinear",
                                      align_corners=False)[0].argmax(0).numpy()
            assert (result.mask == expected).mean() > 0.999
            assert len(result.areas) >= 2  # calibrated weights: the answer depends on the picture


@pytest.mark.parametrize("grain, size", [(32, (1067, 1600)), (32, (300, 200)), (4, (700, 900)),
                                         (1, (520, 520)), (4, (130, 97))])
def test_upsampled_argmax_is_the_full_interpolation(grain, size):
    """Large regions (few boundary pixels interpolated), dense boundaries (everything
    interpolated), upscaling, downscaling and the same size: the same labels as interpolating
    every class; also for a window of the answer, for a letterboxed image's part of
    channels-last logits (a strided view) and in uint8."""
    torch.manual_seed(grain)
    h, w = 130, 97
    coarse = torch.randn(1, 21, h // grain + 2, w // grain + 2) * 5
    logits = TF.interpolate(coarse, size=(h, w), mode="bilinear")[0]
    full = TF.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
    assert torch.equal(upsampled_argmax(logits, size), full.argmax(0))
    window = (slice(size[0] // 5, size[0] - 2), slice(1, size[1] * 2 // 3))
    assert torch.equal(upsampled_argmax(logits, size, window=window), full.argmax(0)[window])
    for bad in [(slice(0, size[0] + 1), slice(0, 2)), (slice(3, 3), slice(0, 2)),
                (slice(None), slice(0, 2)), (slice(0, 4, 2), slice(0, 2))]:
        with pytest.raises(ValueError, match="is not a part of"):
            upsampled_argmax(logits, size, window=bad)
    part = logits[None].contiguous(memory_format=torch.channels_last)[0][:, 3:121, 2:90]
    full = TF.interpolate(part[None], size=size, mode="bilinear", align_corners=False)[0]
    assert torch.equal(upsampled_argmax(part, size, torch.uint8), full.argmax(0).to(torch.uint8))
    one_row = logits[:, :1]  # a source one pixel high
    assert torch.equal(upsampled_argmax(one_row, (5, 40)),
                       TF.interpolate(one_row[None], size=(5, 40), mode="bilinear",
                                      align_corners=False)[0].argmax(0))


def test_batched_mixed_sizes_equal_one_at_a_time(segmenter_weights, photo_paths):
    _, weights = segmenter_weights["lraspp_mobilenet_v3_large"]
    seg = ti.load("segment", "lraspp_mobilenet_v3_large", weights, device="cpu", batch_size=3)
    together = seg(photo_paths[:3])
    for path, result in zip(photo_paths[:3], together):
        alone = seg(path)
        assert (alone.mask == result.mask).all()


def colour_segmenter() -> nn.Module:
    """Oracle: classes background / red / green from a fixed 1x1 conv on RGB in [0, 1], run at
    a quarter of the input resolution so mapping back to the original size is exercised."""
    conv = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[0.0, 0, 0], [40, -40, -40], [-40, 40, -40]]).view(3, 3, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, -10, -10]))
    return nn.Sequential(nn.AvgPool2d(4), conv)


def drawn_scene(size=(517, 333)) -> tuple[Image.Image, np.ndarray]:
    img = Image.new("RGB", size, (128, 128, 128))
    truth = Image.new("L", size, 0)
    for canvas, red, green in ((img, (255, 0, 0), (0, 255, 0)), (truth, 1, 2)):
        d = ImageDraw.Draw(canvas)
        d.ellipse((40, 30, 300, 250), fill=red)
        d.rectangle((330, 120, 480, 300), fill=green)
    return img, np.asarray(truth)


def test_oracle_mask_at_original_resolution():
    img, truth = drawn_scene()
    seg = ti.load("segment", colour_segmenter(), device="cpu", labels=["background", "red", "green"],
                  mean=(0, 0, 0), std=(1, 1, 1))
    result = seg(img)
    assert result.size == (333, 517)
    for cls in (1, 2):
        pred, true = result.mask == cls, truth == cls
        iou = (pred & true).sum() / (pred | true).sum()
        assert iou >= 0.98, f"class {cls}: IoU {iou:.4f}"
    fractions = {a.label: a.fraction for a in result.areas}
    assert fractions["green"] == pytest.approx((truth == 2).mean(), abs=0.005)


def test_probabilities_on_request():
    img, _ = drawn_scene((120, 80))
    seg = ti.load("segment", colour_segmenter(), device="cpu", labels=["bg", "red", "green"],
                  mean=(0, 0, 0), std=(1, 1, 1), return_probabilities=True)
    result = seg(img)
    assert result.probabilities.shape == (3, 80, 120)
    assert np.allclose(result.probabilities.astype(np.float32).sum(0), 1.0, atol=1e-2)
    assert (result.probabilities.argmax(0) == result.mask).mean() > 0.99


def test_overlay_and_palette_png_by_pixels():
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 20:50] = 15  # VOC "person"
    result = Segmentation(source="x", mask=mask, labels=tuple(f"c{i}" for i in range(21)))
    image = Image.new("RGB", (60, 40), (200, 100, 50))
    out = np.asarray(overlay_segmentation(image, result, alpha=0.5, legend=False)).astype(int)
    person = voc_palette()[15].astype(int)
    assert tuple(out[20, 35]) == tuple(np.rint((np.array([200, 100, 50]) + person) / 2).astype(int))
    assert tuple(out[2, 2]) == (200, 100, 50)  # background untouched
    png = mask_image(result)
    assert png.mode == "P" and (np.asarray(png) == mask).all()
    assert tuple(png.getpalette()[15 * 3:15 * 3 + 3]) == tuple(person)


def test_result_validation():
    with pytest.raises(ValueError, match="mask has class 5 but only 3 labels"):
        Segmentation(source="x", mask=np.full((2, 2), 5, np.uint8), labels=("a", "b", "c"))
    with pytest.raises(ValueError, match="2-D integer array"):
        Segmentation(source="x", mask=np.zeros((2, 2), np.float32), labels=("a",))


def test_cli_segment_writes_masks_vis_and_areas(tmp_path, photo_paths, segmenter_weights):
    _, weights = segmenter_weights["lraspp_mobilenet_v3_large"]
    images = tmp_path / "images"
    images.mkdir()
    for p in photo_paths[:2]:
        shutil.copy(p, images / p.name)
    (images / "broken.png").write_bytes(b"\x89PNG nope")
    out = images / "out"  # inside the input folder: must not be read back as input
    args = ["predict", "segment", str(images), "-m", "lraspp_mobilenet_v3_large", "-w", str(weights),
            "--device", "cpu", "--save-masks", "--save-vis", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output  # broken.png failed, the others went on
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    ok = [x for x in lines if "error" not in x]
    for line in ok:
        mask = np.asarray(Image.open(line["files"]["mask"]))
        assert list(mask.shape) == line["size"]
        pixels = {c["index"]: c["pixels"] for c in line["classes"]}
        assert pixels == {int(k): int(v) for k, v in zip(*np.unique(mask, return_counts=True))}
        assert Image.open(line["files"]["vis"]).size == (line["size"][1], line["size"][0])
    again = CliRunner().invoke(app, args)
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 3, again.output
