"""The README's Python examples run as written (against stand-in files with the same names)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
READMES = (ROOT / "README.md", ROOT / "README.zh-CN.md")


def python_blocks() -> list[str]:
    return [block for readme in READMES
            for block in re.findall(r"```python\n(.*?)```", readme.read_text(encoding="utf-8"), re.S)]


def test_readme_has_examples():
    assert len(python_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_example_runs(index, tmp_path, monkeypatch, calibrated, photo_paths):
    # the notes' weights file name, holding calibrated stand-in weights (no download)
    _, weights = calibrated("mobilenet_v2")
    (tmp_path / "weights").mkdir()
    shutil.copy(weights, tmp_path / "weights" / "mobilenet_v2-b0353104.pth")
    _, deeplab = calibrated("deeplabv3_mobilenet_v3_large", weights_backbone=None)
    shutil.copy(deeplab, tmp_path / "weights" / "deeplab.pth")
    torch.manual_seed(0)
    frcnn = torchvision.models.get_model("fasterrcnn_mobilenet_v3_large_320_fpn", weights_backbone=None)
    torch.save(frcnn.state_dict(), tmp_path / "weights" / "frcnn.pth")
    shutil.copy(photo_paths[0], tmp_path / "cat.jpg")
    (tmp_path / "photos").mkdir()
    for p in photo_paths:
        shutil.copy(p, tmp_path / "photos" / p.name)
    monkeypatch.chdir(tmp_path)
    exec(compile(python_blocks()[index], f"README example {index}", "exec"), {})
