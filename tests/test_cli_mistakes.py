"""Every user mistake on the command line ends in one line on stderr and exit code 2: no
traceback, whatever the command and whichever option is wrong."""

from __future__ import annotations

import shutil

import pytest

from torchinfer.cli.app import run

PHOTO = "src/torchinfer/assets/photos/chelsea.jpg"


@pytest.fixture(scope="module")
def files(tmp_path_factory, photo_paths):
    root = tmp_path_factory.mktemp("mistakes")
    shutil.copy(photo_paths[0], root / "a.png")
    (root / "a_file").write_text("not a folder")
    (root / "labels_bad.txt").write_bytes(b"cat\nd\xffog\n")
    (root / "empty").mkdir()
    return root


def _cases(root):
    img, out = str(root / "a.png"), str(root / "out")
    classify = ["predict", "classify", img, "-m", "shapes_classifier", "--out", out]
    detect = ["predict", "detect", img, "-m", "shapes_detector", "--out", out]
    segment = ["predict", "segment", img, "-m", "shapes_segmenter", "--out", out]
    return {
        "top-k 0": classify + ["--top-k", "0"],
        "max-pixels 0": classify + ["--max-pixels", "0"],
        "batch-size 0": classify + ["--batch-size", "0"],
        "num-classes 0": classify + ["--num-classes", "0"],
        "video-stride 0": classify + ["--video-stride", "0"],
        "decode-workers -1": classify + ["--decode-workers", "-1"],
        "input-size 0": classify + ["--input-size", "0"],
        "input-size text": classify + ["--input-size", "big"],
        "mean of two": classify + ["--mean", "0.5,0.5"],
        "std zero": classify + ["--std", "0,0,0"],
        "labels missing": classify + ["--labels", str(root / "nope.txt")],
        "labels not utf-8": classify + ["--labels", str(root / "labels_bad.txt")],
        "labels count": classify + ["--labels", str(root / "a_file")],
        "unknown model": classify[:3] + ["-m", "no_such_model", "--out", out],
        "weights missing": classify + ["-m", "mobilenet_v3_small", "-w", str(root / "w.pth")],
        "backend": classify + ["--backend", "warp"],
        "precision": classify + ["--precision", "fp7"],
        "device": classify + ["--device", "tpu:9"],
        "model-kwargs syntax": classify + ["--model-kwargs", "no equals sign"],
        "model-kwargs unknown": classify + ["--model-kwargs", "depth=3"],
        "out is a file": classify[:-1] + [str(root / "a_file")],
        "out under a file": classify[:-1] + [str(root / "a_file" / "sub")],
        "conf 2": detect + ["--conf", "2"],
        "iou -1": detect + ["--iou", "-1"],
        "max-det 0": detect + ["--max-det", "0"],
        "classes outside": detect + ["--classes", "7"],
        "classes text": detect + ["--classes", "cat"],
        "decoder": detect + ["--decoder", "yolov99"],
        "segment input-size": segment + ["--input-size", "-4"],
        "empty folder": ["predict", "classify", str(root / "empty"), "-m", "shapes_classifier",
                         "--out", out],
        "glob matching nothing": ["predict", "classify", str(root / "*.nothing"), "-m",
                                  "shapes_classifier", "--out", out],
        "eval data missing": ["eval", "classify", "shapes_classifier", "--data",
                              str(root / "nope")],
        "eval limit 0": ["eval", "classify", "shapes_classifier", "--data", str(root),
                         "--limit", "0"],
        "inspect input-size": ["inspect", "shapes_classifier", "--input-size", "0"],
        "inspect input-shape": ["inspect", "shapes_classifier", "--input-shape", "1,3,0,64"],
        "inspect depth": ["inspect", "shapes_classifier", "--per-layer", "--depth", "-1"],
        "inspect built size": ["inspect", "vit_b_16", "--input-size", "518"],
        "export format": ["export", "shapes_classifier", "-o", str(root / "m.x"), "--format",
                          "tflite"],
        "export output under a file": ["export", "shapes_classifier", "-o",
                                       str(root / "a_file" / "m.onnx")],
        "bench batch": ["bench", "shapes_classifier", "--batch", "0"],
        "bench images": ["bench", "shapes_classifier", "--images", "0"],
        "models task": ["models", "--task", "poetry"],
        "serve engine": ["serve", "-m", "shapes_classifier", "--engine", "spark"],
        "serve replicas without ray": ["serve", "-m", "shapes_classifier", "--replicas", "2"],
        "multi head syntax": ["predict", "multi", img, "-m", "shapes_multitask", "--head",
                              "nothing", "--out", out],
        "multi unknown head option": ["predict", "multi", img, "-m", "shapes_multitask",
                                      "--head-option", "shape.conf=0.5", "--out", out],
        "eval multi data syntax": ["eval", "multi", "shapes_multitask", "--data", "nopath"],
        "unknown option": classify + ["--bogus"],
        "unknown command": ["predict", "poetry", img],
    }


CASES = sorted(_cases(__import__("pathlib").Path("/")))  # names only; paths made per run


@pytest.mark.parametrize("case", CASES)
def test_mistake_is_one_line_and_exit_2(case, files, capsys):
    args = _cases(files)[case]
    code = run(args)
    captured = capsys.readouterr()
    assert code == 2, (case, captured.err)
    assert "Traceback" not in captured.err + captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (case, captured.err)


def test_output_folder_mistakes_are_one_line_and_exit_2(files, tmp_path, capsys):
    img = str(files / "a.png")
    out = tmp_path / "run"
    base = ["predict", "classify", img, "-m", "shapes_classifier", "--out", str(out), "-q"]
    assert run(base) == 0
    capsys.readouterr()
    mistakes = {
        "same folder again": base,
        "resume with other options": base + ["--resume", "--top-k", "2"],
    }
    for case, args in mistakes.items():
        assert run(args) == 2, case
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (case, err)
    assert run(base + ["--exist-ok"]) == 0  # the way out the message names
    # a corrupt line in the middle of an interrupted run's file
    (out / "predictions.jsonl").rename(out / "predictions.jsonl.partial")
    partial = out / "predictions.jsonl.partial"
    partial.write_text('{"source": "x"}\n{not json\n' + partial.read_text())
    capsys.readouterr()
    assert run(base + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and len(err.strip().splitlines()) == 1, err
