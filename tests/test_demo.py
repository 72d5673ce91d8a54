"""The main job: `torchinfer demo` on the bundled models gives right answers and the pictures."""

from __future__ import annotations

import json

from PIL import Image
from typer.testing import CliRunner

from torchinfer.cli.app import app


def test_demo_gives_right_answers_and_pictures(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = {row["task"]: row for row in json.loads((out / "demo.json").read_text())}
    assert rows["classify"]["score"] >= 0.9  # 24 new pictures
    assert rows["segment"]["score"] >= 0.85
    assert rows["detect"]["score"] >= 0.9
    assert rows["depth"]["score"] >= 0.85  # δ<1.25 of shapes_depth on 8 new scenes
    assert rows["embed"]["score"] >= 0.95  # recall@1: a copy of the same scene is nearest
    assert rows["classify (ONNX file)"]["score"] == rows["classify"]["score"]
    for task in ("classify", "segment", "detect", "depth", "embed"):
        assert Image.open(out / f"{task}.jpg").size[0] > 600
        assert (out / task / "predictions.jsonl").is_file()
        assert list((out / task / "vis").glob("*.jpg"))
    assert list((out / "segment" / "masks").glob("*.png"))
    assert (out / "detect" / "coco_results.json").is_file()
    assert (out / "export" / "shapes_classifier.onnx").is_file()
    # shapes_multitask beside them: each head as good as the bars of its single-task model
    assert rows["classify (multitask head)"]["score"] >= 0.9
    assert rows["segment (multitask head)"]["score"] >= 0.85
    assert rows["detect (multitask head)"]["score"] >= 0.9
    records = (out / "multi" / "predictions.jsonl").read_text().splitlines()
    assert all(set(json.loads(r)["heads"]) == {"shape", "mask", "objects"} for r in records)
    assert list((out / "multi" / "vis").glob("*.jpg"))
    assert "three models over one decode" in result.output
