"""Runs that are interrupted or killed leave whole files, and --resume completes them with
exactly one line per input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

import torchinfer as ti
from torchinfer.runner.run import run_to_dir
from torchinfer.runner.sinks import read_jsonl

TESTS = Path(__file__).parent
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def folder(tmp_path: Path, n: int) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(n):
        Image.new("RGB", (40 + i, 30), COLOURS[i % 3]).save(images / f"img_{i:03d}.png")
    return images


def colour_classifier():
    sys.path.insert(0, str(TESTS))
    from slow_models import SlowColourClassifier

    return ti.load("classify", SlowColourClassifier(), device="cpu", labels=["r", "g", "b"],
                   input_size=16, mean=(0, 0, 0), std=(1, 1, 1), batch_size=2)


def lines_of(out: Path) -> list[dict]:
    assert not (out / "predictions.jsonl.partial").exists()
    text = (out / "predictions.jsonl").read_text()
    assert text.endswith("\n")
    return [json.loads(x) for x in text.splitlines()]


def test_interrupted_run_resumes_to_one_line_per_input(tmp_path):
    images = folder(tmp_path, 9)
    out = tmp_path / "out"
    predictor = colour_classifier()
    seen = []

    def stop_after_four(result):
        seen.append(result)
        if len(seen) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_to_dir(predictor, [str(images)], out, on_result=stop_after_four)
    partial = out / "predictions.jsonl.partial"
    assert len(read_jsonl(partial)) == 4
    assert json.loads((out / "summary.json").read_text())["interrupted"] is True
    with partial.open("a") as fh:  # a kill in the middle of writing a line
        fh.write('{"source": "' + str(images / "img_004.png"))
    assert len(read_jsonl(partial)) == 4  # the torn line is dropped
    summary = run_to_dir(predictor, [str(images)], out, resume=True)
    assert summary.resumed == 4 and summary.total == 9 and summary.failed == 0
    lines = lines_of(out)
    assert sorted(x["source"] for x in lines) == sorted(str(p) for p in images.iterdir())
    assert [x["top1"]["label"] for x in sorted(lines, key=lambda x: x["source"])] == \
        ["r", "g", "b"] * 3
    # nothing left to do: a second resume keeps everything and runs nothing
    again = run_to_dir(predictor, [str(images)], out, resume=True)
    assert again.resumed == 9 and len(lines_of(out)) == 9
    # a changed file runs again, still one line for it
    changed = images / "img_002.png"
    Image.new("RGB", (50, 30), COLOURS[0]).save(changed)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    third = run_to_dir(predictor, [str(images)], out, resume=True)
    assert third.resumed == 8
    lines = lines_of(out)
    assert len(lines) == 9
    assert [x for x in lines if x["source"] == str(changed)][0]["top1"]["label"] == "r"


def test_killed_cli_run_leaves_whole_files_and_resumes(tmp_path):
    images = folder(tmp_path, 24)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torchinfer", "predict", "classify", str(images), "-m",
               "slow_models:slow_classifier", "--labels", str(tmp_path / "labels.txt"),
               "--input-size", "16", "--mean", "0,0,0", "--std", "1,1,1", "--device", "cpu",
               "--batch-size", "1", "--out", str(out)]
    (tmp_path / "labels.txt").write_text("r\ng\nb\n")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    partial = out / "predictions.jsonl.partial"
    deadline = time.time() + 60
    while time.time() < deadline and len(read_jsonl(partial)) < 5:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(read_jsonl(partial))
    assert 5 <= done_before < 24, proc.stderr.read().decode()
    assert not (out / "predictions.jsonl").exists()
    result = subprocess.run(command + ["--resume", "--quiet"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = lines_of(out)
    assert len(lines) == 24 and len({x["source"] for x in lines}) == 24
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed"] == done_before and summary["total"] == 24


def test_progress_lines_when_not_a_terminal(tmp_path):
    images = folder(tmp_path, 12)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    (tmp_path / "labels.txt").write_text("r\ng\nb\n")
    result = subprocess.run(
        [sys.executable, "-m", "torchinfer", "predict", "classify", str(images), "-m",
         "slow_models:slow_classifier", "--labels", str(tmp_path / "labels.txt"), "--input-size",
         "16", "--mean", "0,0,0", "--std", "1,1,1", "--device", "cpu", "--batch-size", "2",
         "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    progress = [json.loads(x) for x in result.stderr.splitlines() if x.startswith('{"progress"')]
    assert progress and progress[-1]["progress"] == 12 and progress[-1]["total"] == 12


def test_an_image_on_standard_input(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    (tmp_path / "labels.txt").write_text("r\ng\nb\n")
    image = tmp_path / "blue.png"
    Image.new("RGB", (30, 20), COLOURS[2]).save(image)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "torchinfer", "predict", "classify", "-", "-m",
         "slow_models:slow_classifier", "--labels", str(tmp_path / "labels.txt"), "--input-size",
         "16", "--mean", "0,0,0", "--std", "1,1,1", "--device", "cpu", "--out", str(out)],
        env=env, input=image.read_bytes(), capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    line = json.loads((out / "predictions.jsonl").read_text())
    assert line["source"] == "<stdin>" and line["top1"]["label"] == "b"
