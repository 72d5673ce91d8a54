"""One folder holding every kind of bad input beside good images: every good image gets its
answer, every bad one its own record, and names, labels and errors print as written."""

from __future__ import annotations

import json
import os
import struct
import zlib

import pytest
from PIL import Image

import torchinfer as ti
from torchinfer.cli.app import run


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


@pytest.fixture
def mixed(tmp_path, photo_paths):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = {"photo [draft].jpg": photo_paths[0], "b.png": photo_paths[1],
            "[red]c.png": photo_paths[2]}
    for name, src in good.items():
        Image.open(src).convert("RGB").save(folder / name)
    os.link(folder / "b.png", os.path.join(os.fsencode(folder), b"name-\xff.png"))
    good_names = set(good) | {"name-\udcff.png"}
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text [draft].jpg").write_text("not an image")
    (folder / "truncated.jpg").write_bytes((folder / "photo [draft].jpg").read_bytes()[:300])
    (folder / "bomb.png").write_bytes(_png_header(100_000, 100_000))
    Image.new("RGB", (5000, 2)).save(folder / "thin.png")
    os.symlink(folder / "loop_a.png", folder / "loop_b.png")
    os.symlink(folder / "loop_b.png", folder / "loop_a.png")
    os.symlink(folder / "gone.png", folder / "broken.png")
    os.mkfifo(folder / "pipe.png")
    expected_errors = {
        "empty.jpg": "empty file", "text [draft].jpg": "not a recognised image format",
        "truncated.jpg": "corrupt or truncated", "bomb.png": "image too large",
        "thin.png": "aspect ratio 2,500:1", "loop_a.png": "symlink loop",
        "loop_b.png": "symlink loop", "broken.png": "broken symbolic link",
        "pipe.png": "not a regular file",
    }
    return folder, good_names, expected_errors


def test_every_good_image_gets_its_answer_and_every_bad_one_its_reason(mixed, tmp_path, capsys):
    folder, good, bad = mixed
    labels = tmp_path / "labels.txt"
    labels.write_bytes("\ufeff[/]\n[red]square\nstar]\n[triangle\n".encode())  # BOM + markup
    out = tmp_path / "out"
    code = run(["predict", "classify", str(folder), "-m", "shapes_classifier", "--labels",
                str(labels), "--out", str(out), "--top-k", "1"])
    captured = capsys.readouterr()
    assert code == 1  # some inputs failed; the run finished
    assert "Traceback" not in captured.err
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    by_name = {os.path.basename(r["source"]): r for r in lines}
    assert set(by_name) == good | set(bad)
    for name in good:
        assert "error" not in by_name[name], by_name[name]
        assert by_name[name]["topk"][0]["label"] in {"[/]", "[red]square", "star]", "[triangle"}
    for name, reason in bad.items():
        assert reason in by_name[name]["error"], (name, by_name[name])
    # printed as written: brackets are text, not markup
    assert "text [draft].jpg: not a recognised image format" in captured.err
    assert any(label in captured.out for label in ("[/]", "[red]square", "star]", "[triangle"))


def test_install_hint_keeps_its_brackets(capsys, monkeypatch, tmp_path):
    def missing(*args, **kwargs):
        raise ti.errors.MissingExtraError("onnxruntime", "onnx")

    monkeypatch.setattr("torchinfer.api.load", missing)
    assert run(["predict", "classify", "x.png", "-m", "shapes_classifier", "--out", str(tmp_path / "x")]) == 2
    assert "pip install 'torchinfer[onnx]'" in capsys.readouterr().err


def test_inspect_counts_what_eval_runs_beside_what_it_holds():
    report = ti.inspect("googlenet")  # random init keeps the auxiliary heads
    assert report.params_in_eval == 6_624_904  # torchvision's published figure
    assert report.unused_modules == ("aux1", "aux2")
    assert report.params_total > report.params_in_eval
    assert any("never run" in line for line in report.summary_lines())
    plain = ti.inspect("resnet18")
    assert plain.params_in_eval == plain.params_total and plain.unused_modules == ()

