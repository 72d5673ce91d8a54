"""JPEG draft decoding: big JPEGs decoded at 1/2..1/8 scale, never below the size asked for,
verified against a full decode before a predictor uses it, reported in the run summary."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import torchinfer as ti
from torchinfer.cli.app import app
from torchinfer.datasets import generate_single, scene_rng
from torchinfer.errors import TorchinferError
from torchinfer.runner.images import ImageLoader
from torchinfer.verify import Tolerance


@pytest.fixture(scope="module")
def big_shapes(tmp_path_factory):
    """Shapes drawn at 640 px and saved as JPEGs: 1/2 scale is what a 128-px resize allows."""
    folder = tmp_path_factory.mktemp("big")
    paths = []
    for i in range(8):
        scene = generate_single(scene_rng(5, i), 640, class_id=i % 4)
        paths.append(folder / f"{i}.jpg")
        scene.image.save(paths[-1], quality=90)
    return paths


def test_draft_decodes_smaller_but_never_below_the_size_asked(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (2048, 1536), (90, 120, 200)).save(path)
    loader = ImageLoader()
    assert loader.load(path).size == (2048, 1536)
    assert loader.load(path, min_short_side=512).size == (1024, 768)  # 1/2: 1/4 would be 384
    assert loader.load(path, min_short_side=100).size == (256, 192)  # 1/8 at most
    png = tmp_path / "big.png"
    Image.new("RGB", (2048, 1536)).save(png)
    assert loader.load(png, min_short_side=100).size == (2048, 1536)  # JPEG only


def test_draft_on_a_trained_model_passes_its_check_and_keeps_the_answers(big_shapes):
    full = ti.load("classify", "shapes_classifier", device="cpu")
    drafted = ti.load("classify", "shapes_classifier", device="cpu", jpeg_draft=True)
    assert drafted.decode_short_side == 256 and drafted.draft_check.passed
    sources = [str(p) for p in big_shapes]
    a, b = full(sources), drafted(sources)
    assert [r.top1.label for r in a] == [r.top1.label for r in b]
    assert np.allclose([r.top1.score for r in a], [r.top1.score for r in b], atol=0.05)


def test_draft_beyond_tolerance_is_refused(monkeypatch):
    monkeypatch.setattr("torchinfer.tasks.classify.DRAFT_TOLERANCE", Tolerance(atol=0.0, rtol=0.0))
    with pytest.raises(TorchinferError, match="draft decoding changes"):
        ti.load("classify", "shapes_classifier", device="cpu", jpeg_draft=True)
    unchecked = ti.load("classify", "shapes_classifier", device="cpu", jpeg_draft=True,
                        verify_backend=False)
    assert unchecked.draft_check is None


def test_cli_jpeg_draft_is_in_the_summary(big_shapes, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["predict", "classify", str(big_shapes[0].parent), "-m",
                                      "shapes_classifier", "--jpeg-draft", "--out", str(out),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["jpeg_draft"]["verified"] is True and summary["succeeded"] == len(big_shapes)
    assert "top-1 agreement 8/8" in summary["jpeg_draft"]["check"]
