"""The command line: every command is a thin call into the library; exit codes tell the story."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from torchinfer.cli.app import app
from torchinfer.results import STAGES

runner = CliRunner()


@pytest.fixture
def folder(tmp_path, photo_paths):
    images = tmp_path / "images"
    images.mkdir()
    for p in photo_paths[:3]:
        shutil.copy(p, images / p.name)
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not finished")
    return images


def test_env_json():
    result = runner.invoke(app, ["env", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["torch"] and info["torchvision"] and "cuda_available" in info
    assert info["torch_threads"] >= 1
    # what the default's candidates depend on: the CPU's flags and the backends here
    assert isinstance(info["native_bf16"], bool) and info["cpu"]
    assert info["backends"]["torch"] == "available"


def test_models_by_task():
    result = runner.invoke(app, ["models", "--task", "classify", "--json"])
    assert result.exit_code == 0
    names = {m["name"] for m in json.loads(result.output)}
    assert {"mobilenet_v2", "resnet50", "vit_b_16"} <= names
    assert not names & {"deeplabv3_resnet50", "fasterrcnn_resnet50_fpn"}
    seg = json.loads(runner.invoke(app, ["models", "--task", "segment", "--json"]).output)
    assert {m["task"] for m in seg} == {"segment"} and len(seg) >= 6


def test_predict_classify_records_failures_and_exits_1(folder, tmp_path, tiny_classifier_weights):
    _, weights = tiny_classifier_weights
    out = tmp_path / "out"
    args = ["predict", "classify", str(folder), str(tmp_path / "missing.png"),
            "-m", "mobilenet_v3_small", "-w", str(weights), "--device", "cpu",
            "--batch-size", "2", "--top-k", "2", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 5  # 3 photographs + corrupt + missing: one line per input
    errors = {line["source"].rsplit("/", 1)[-1]: line.get("error") for line in lines}
    assert errors["corrupt.jpg"].startswith("corrupt or truncated image")
    assert errors["missing.png"] == "file not found"
    assert all(len(line["topk"]) == 2 for line in lines if "error" not in line)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["total"], summary["succeeded"], summary["failed"]) == (5, 3, 2)
    assert set(summary["stage_ms_per_image"]) == set(STAGES)
    assert not list(out.glob("*.partial"))

    relaxed = runner.invoke(app, args + ["--allow-failures", "--quiet", "--exist-ok"])
    assert relaxed.exit_code == 0, relaxed.output


def test_predict_overrides_reach_the_predictor(folder, tmp_path, tiny_classifier_weights):
    _, weights = tiny_classifier_weights
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({str(i): f"class-{i}" for i in range(10)}))
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", "classify", str(folder / "chelsea.png"),
                                 "-m", "mobilenet_v3_small", "-w", str(weights),
                                 "--labels", str(labels), "--input-size", "192",
                                 "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25",
                                 "--device", "cpu", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    line = json.loads((out / "predictions.jsonl").read_text())
    assert line["top1"]["label"] == f"class-{line['top1']['index']}"
    bad = runner.invoke(app, ["predict", "classify", "x.jpg", "-m", "resnet18", "--mean", "a,b"])
    assert bad.exit_code == 2 and "comma-separated numbers" in bad.output


def test_configuration_errors_exit_2_with_one_clear_line(tmp_path):
    """Through the real console script: no traceback, the reason, exit code 2."""
    cmd = [sys.executable, "-m", "torchinfer", "predict", "classify", "x.jpg", "-m", "mobilenetv2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown model 'mobilenetv2'" in proc.stderr and "Traceback" not in proc.stderr
    torch_file = tmp_path / "full.pt"
    import torch
    import torchvision

    torch.save(torchvision.models.mobilenet_v3_small(num_classes=2), torch_file)
    proc = subprocess.run([sys.executable, "-m", "torchinfer", "predict", "classify", "x.jpg",
                           "-m", "mobilenet_v3_small", "-w", str(torch_file)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--trust-pickle" in proc.stderr


def test_inspect_reproduces_the_notes_worked_example():
    """mobilenet_v2's first conv: 3->32, 3x3, stride 2 on 224x224: 864 params, 10,838,016 MACs."""
    result = runner.invoke(app, ["inspect", "mobilenet_v2", "--json", "--depth", "3"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    first_conv = next(row for row in report["layers"] if row["path"] == "features.0.0")
    assert (first_conv["params"], first_conv["macs"]) == (864, 10_838_016)
    assert report["input_shape"] == [1, 3, 224, 224]
    assert report["flops"] == 2 * report["macs"] == 2 * 300_774_272
    table = runner.invoke(app, ["inspect", "mobilenet_v2", "--per-layer", "--depth", "3"])
    assert "Conv2d" in table.output and "10.84M" in table.output
    summary = runner.invoke(app, ["inspect", "mobilenet_v2"])
    assert "MACs: 300,774,272" in summary.output and "FLOPs = 2 x MACs" in summary.output


def test_inspect_uses_the_weights_input_size(tmp_path, tiny_classifier_weights):
    import torchinfer as ti

    assert ti.inspect("deeplabv3_mobilenet_v3_large").input_shape == (1, 3, 520, 520)
    assert ti.inspect("vit_b_16", input_size=(224, 224)).input_shape == (1, 3, 224, 224)
    _, weights = tiny_classifier_weights
    report = ti.inspect("mobilenet_v3_small", weights)
    assert report.file_size_bytes == weights.stat().st_size
    assert report.layers[0].output_shape == (1, 10)


def test_export_then_predict_the_onnx_file_by_path(tmp_path, photo_paths, tiny_classifier_weights):
    """`torchinfer export` verifies the file; `predict --model file.onnx` then needs nothing else
    and gives the .pth's answers."""
    _, weights = tiny_classifier_weights
    onnx_file = tmp_path / "model.onnx"
    result = runner.invoke(app, ["export", "mobilenet_v3_small", "-w", str(weights), "-o", str(onnx_file),
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["passed"] is True and onnx_file.is_file()
    answers = {}
    for model_args, out in ((["-m", "mobilenet_v3_small", "-w", str(weights)], "pth"),
                            (["-m", str(onnx_file)], "onnx")):
        run = runner.invoke(app, ["predict", "classify", *map(str, photo_paths), *model_args,
                                  "--device", "cpu", "--out", str(tmp_path / out), "-q"])
        assert run.exit_code == 0, run.output
        answers[out] = [json.loads(x)["top1"] for x in (tmp_path / out / "predictions.jsonl").read_text().splitlines()]
    for a, b in zip(answers["pth"], answers["onnx"]):
        assert a["index"] == b["index"] and abs(a["score"] - b["score"]) < 1e-4
