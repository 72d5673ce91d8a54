"""No input, option or output folder can crash a batch run: each bad input is one record with a
precise reason, the rest goes on, and runs never mix in one output folder."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

import torchinfer as ti
from torchinfer.errors import TorchinferError
from torchinfer.runner.run import run_to_dir
from torchinfer.runner.sinks import save_image_atomic, write_json_atomic
from torchinfer.runner.sources import expand_sources

TESTS = Path(__file__).parent
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


class MeanColour(nn.Module):
    """Three classes from the mean colour (red, green, blue)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) * 10


class OneBox(nn.Module):
    """A YOLOv8-layout detector that finds one box of class 0 in the middle of every image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 5, 8)
        out[:, :4, 0] = torch.tensor([32.0, 32.0, 20.0, 20.0])
        out[:, 4, 0] = 0.9
        return out


def classifier():
    return ti.load("classify", MeanColour(), device="cpu", labels=["r", "g", "b"], input_size=16,
                   mean=(0, 0, 0), std=(1, 1, 1), batch_size=2, decode_workers=0)


def png(path: str | bytes | Path, colour=COLOURS[0], size=(20, 16)) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    with open(path, "wb") as fh:  # bytes paths too: names that are not UTF-8
        fh.write(buffer.getvalue())


def folder(root: Path, n: int, name: str = "images") -> Path:
    images = root / name
    images.mkdir()
    for i in range(n):
        png(images / f"img_{i:03d}.png", COLOURS[i % 3], (20 + i, 16))
    return images


def lines_of(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "predictions.jsonl").read_text("utf-8").splitlines()]


def errors_of(out: Path) -> dict[str, str | None]:
    return {x["source"]: x.get("error") for x in lines_of(out)}


def non_utf8_folder(root: Path) -> Path:
    images = root / "images"
    images.mkdir()
    try:
        png(os.fsencode(images) + b"/bad\xff.png")
    except OSError as exc:  # macOS (APFS) and Windows keep names in Unicode
        pytest.skip(f"this file system refuses names that are not UTF-8: {exc}")
    png(images / "good.png", COLOURS[1])
    with open(os.fsencode(images) + b"/broken\xfe.png", "wb") as fh:
        fh.write(b"not an image")
    return images


def test_names_that_are_not_utf8_are_recorded_losslessly_and_resume(tmp_path):
    images = non_utf8_folder(tmp_path)
    out = tmp_path / "out"
    summary = run_to_dir(classifier(), [str(images)], out, save_vis=True)
    assert (summary.total, summary.failed) == (3, 1)
    text = (out / "predictions.jsonl").read_text("utf-8")
    assert "\\udcff" in text and "\\udcfe" in text  # the bytes, escaped, in valid UTF-8
    names = {os.fsencode(x["source"]): x for x in lines_of(out)}
    bad = os.fsencode(images) + b"/bad\xff.png"
    assert set(names) == {bad, os.fsencode(images) + b"/good.png",
                          os.fsencode(images) + b"/broken\xfe.png"}
    assert names[bad]["top1"]["label"] == "r"
    assert os.path.exists(os.fsencode(names[bad]["files"]["vis"]))
    failures = json.loads((out / "summary.json").read_text("utf-8"))["failures"]
    broken = os.fsencode(images) + b"/broken\xfe.png"
    assert [os.fsencode(f["source"]) for f in failures] == [broken]
    again = run_to_dir(classifier(), [str(images)], out, resume=True, save_vis=True)
    assert again.resumed == 2 and again.total == 3  # the odd name is recognised as done
    detect = ti.load("detect", OneBox(), device="cpu", labels=["thing"], input_size=64)
    run_to_dir(detect, [str(images)], tmp_path / "detect")
    coco = json.loads((tmp_path / "detect" / "coco_results.json").read_text("utf-8"))
    ids = {x["image_id"]: os.fsencode(x["source"]) for x in lines_of(tmp_path / "detect")}
    assert {ids[c["image_id"]] for c in coco} == {bad, os.fsencode(images) + b"/good.png"}


# Run in a child process: as root, one without the capabilities that let root read anything
# (setpriv drops them from its bounding set), so that mode 000 denies it as it denies anyone.
PERMISSION_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from test_run_outputs import classifier
from torchinfer.errors import TorchinferError
from torchinfer.runner.run import run_to_dir

root = sys.argv[2]
try:
    open(root + "/denied.png", "rb")
    print(json.dumps({"skip": "mode 000 does not deny this user reading"}))
    sys.exit()
except PermissionError:
    pass
sources = [root + "/images", root + "/denied.png", root + "/locked/inside.png",
           root + "/denied.txt"]
summary = run_to_dir(classifier(), sources, root + "/out")
refused = []
for out in (root + "/readonly", root + "/readonly/new"):
    try:
        run_to_dir(classifier(), [root + "/images"], out)
    except TorchinferError as exc:
        refused.append(str(exc))
lines = [json.loads(x) for x in open(root + "/out/predictions.jsonl")]
print(json.dumps({"lines": [[x["source"], x.get("error")] for x in lines],
                  "failed": summary.failed, "refused": refused}))
"""


def _unprivileged() -> list[str]:
    if os.name != "posix":
        pytest.skip("file modes are POSIX")
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    drop = [setpriv or "setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    if setpriv is None or subprocess.run([*drop, "true"], capture_output=True).returncode:
        pytest.skip("running as root, and setpriv cannot drop root's right to read any file")
    return drop


def test_unreadable_inputs_and_output_folders_are_reported_in_order(tmp_path):
    drop = _unprivileged()
    images = folder(tmp_path, 3)
    os.chmod(images / "img_001.png", 0)
    (images / "sub").mkdir()
    png(images / "sub" / "hidden.png")
    os.chmod(images / "sub", 0)  # cannot be listed
    png(tmp_path / "denied.png")
    os.chmod(tmp_path / "denied.png", 0)
    (tmp_path / "locked").mkdir()
    png(tmp_path / "locked" / "inside.png")
    os.chmod(tmp_path / "locked", stat.S_IRUSR | stat.S_IWUSR)  # cannot be entered
    (tmp_path / "denied.txt").write_text("images/img_000.png\n")
    os.chmod(tmp_path / "denied.txt", 0)
    (tmp_path / "readonly").mkdir(mode=0o555)
    try:
        child = subprocess.run([*drop, sys.executable, "-c", PERMISSION_CHILD, str(TESTS),
                                str(tmp_path)], capture_output=True, text=True, timeout=120)
    finally:
        for path in (images / "img_001.png", images / "sub", tmp_path / "denied.png",
                     tmp_path / "locked", tmp_path / "denied.txt", tmp_path / "readonly"):
            os.chmod(path, 0o755)
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout.splitlines()[-1])
    if "skip" in report:
        pytest.skip(report["skip"])
    denied = "permission denied"
    assert report["lines"] == [
        [str(images / "img_000.png"), None], [str(images / "img_001.png"), denied],
        [str(images / "img_002.png"), None], [str(images / "sub"), denied],
        [str(tmp_path / "denied.png"), denied], [str(tmp_path / "locked" / "inside.png"), denied],
        [str(tmp_path / "denied.txt"), denied]]
    assert report["failed"] == 5
    assert report["refused"] == [
        f"cannot write to output folder {tmp_path / 'readonly'}: permission denied",
        f"cannot write to output folder {tmp_path / 'readonly' / 'new'}: permission denied"]


def test_symlink_loops_are_reported_and_never_walked(tmp_path):
    images = folder(tmp_path, 1)
    os.symlink("loop.png", images / "loop.png")
    os.symlink("b.png", images / "a.png")
    os.symlink("a.png", images / "b.png")
    os.symlink("nowhere.png", images / "gone.png")
    os.symlink(".", images / "again")  # a folder loop: os.walk does not follow links
    os.symlink("..", images / "up")
    os.symlink("y", tmp_path / "x")
    os.symlink("x", tmp_path / "y")
    out = tmp_path / "out"
    summary = run_to_dir(classifier(), [str(images), str(tmp_path / "x")], out)
    assert errors_of(out) == {
        str(images / "a.png"): "symlink loop", str(images / "b.png"): "symlink loop",
        str(images / "gone.png"): "file not found (a broken symbolic link)",
        str(images / "img_000.png"): None, str(images / "loop.png"): "symlink loop",
        str(tmp_path / "x"): "symlink loop"}
    assert summary.total == 6


def test_list_files_are_utf8_with_or_without_a_bom(tmp_path):
    images = folder(tmp_path, 2)
    listed = tmp_path / "list.txt"
    listed.write_bytes(b"\xef\xbb\xbfimages/img_000.png\r\n# a comment\n\nimages\n")
    assert list(expand_sources([listed])) == [str(images / "img_000.png"),
                                              str(images / "img_000.png"),
                                              str(images / "img_001.png")]
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"images/img_000.png\nimages/caf\xe9.png\n")
    with pytest.raises(TorchinferError, match=r"bad\.txt: line 2 is not UTF-8 text"):
        list(expand_sources([bad]))
    out = tmp_path / "out"
    with pytest.raises(TorchinferError, match=r"bad\.txt: line 2 is not UTF-8 text"):
        run_to_dir(classifier(), [str(images), str(bad)], out)  # before any work
    assert not out.exists()
    (tmp_path / "nul.txt").write_text("images/img_001.png\nimages/a\0b.png\n")
    run_to_dir(classifier(), [str(tmp_path / "nul.txt")], out)
    assert list(errors_of(out).values()) == [None, "invalid path (embedded null byte)"]
    (tmp_path / "self.txt").write_text("images/img_001.png\nself.txt\n")
    with pytest.raises(TorchinferError, match=r"self\.txt: line 2: self\.txt is a list file"):
        list(expand_sources([tmp_path / "self.txt"]))


def test_no_inputs_is_an_error_and_a_missing_path_a_record(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.md").write_text("not an image")
    out = tmp_path / "out"
    for sources in ([str(empty)], [str(tmp_path / "nothing*.png")], []):
        with pytest.raises(TorchinferError, match=r"^no inputs: .*matched no image or video"):
            run_to_dir(classifier(), sources, out)
    assert not out.exists()
    summary = run_to_dir(classifier(), [str(empty), str(tmp_path / "missing.png")], out)
    assert errors_of(out) == {str(tmp_path / "missing.png"): "file not found"}
    assert summary.failed == 1
    # the command line: one line, exit 2
    monkeypatch.syspath_prepend(str(TESTS))
    (tmp_path / "labels.txt").write_text("r\ng\nb\n")
    monkeypatch.setattr(sys, "argv", [
        "torchinfer", "predict", "classify", str(empty), "-m", "slow_models:slow_classifier",
        "--labels", str(tmp_path / "labels.txt"), "--input-size", "16", "--device", "cpu",
        "--out", str(tmp_path / "cli")])
    from torchinfer.cli.app import main

    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    assert "no inputs:" in capsys.readouterr().err


def test_an_output_folder_is_reused_only_with_exist_ok_or_resume(tmp_path):
    out = tmp_path / "out"
    out.mkdir()  # an empty folder is fine
    run_to_dir(classifier(), [str(folder(tmp_path, 3))], out, save_vis=True)
    (out / "notes.md").write_text("mine")
    (out / "vis" / "mine.txt").write_text("mine too")
    Image.new("RGB", (4, 4)).save(out / "vis" / "my_own.jpg")  # a picture no run recorded
    before = (out / "predictions.jsonl").read_bytes()
    with pytest.raises(TorchinferError, match="holds a run's results .*--exist-ok.*--resume"):
        run_to_dir(classifier(), [str(folder(tmp_path, 1, "other"))], out)
    assert (out / "predictions.jsonl").read_bytes() == before
    run_to_dir(classifier(), [str(tmp_path / "other")], out, exist_ok=True)
    assert [x["source"] for x in lines_of(out)] == [str(tmp_path / "other" / "img_000.png")]
    assert sorted(p.name for p in out.rglob("*")) == [
        "mine.txt", "my_own.jpg", "notes.md", "predictions.jsonl", "run.json", "summary.json",
        "vis"]
    with pytest.raises(TorchinferError, match="contradict"):
        run_to_dir(classifier(), [str(tmp_path / "other")], out, exist_ok=True, resume=True)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(TorchinferError, match=r"output folder .*file is a file$"):
        run_to_dir(classifier(), [str(tmp_path / "other")], tmp_path / "file")


def _interrupted(images: Path, out: Path, after: int, **kwargs) -> None:
    seen = []

    def stop(result):
        seen.append(result)
        if len(seen) == after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_to_dir(classifier(), [str(images)], out, on_result=stop, **kwargs)


def test_resume_refuses_a_different_run(tmp_path):
    images = folder(tmp_path, 5)
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    out = tmp_path / "out"
    _interrupted(images, out, 2, fingerprint={"top_k": 5, "weights": str(weights)})
    started = json.loads((out / "run.json").read_text())["fingerprint"]
    assert started["top_k"] == 5 and started["weights"]["size"] == 7
    assert json.loads((out / "summary.json").read_text())["fingerprint"] == started
    with pytest.raises(TorchinferError, match=r"differs .* in top_k \(5 then, 3 now\); "):
        run_to_dir(classifier(), [str(images)], out, resume=True,
                   fingerprint={"top_k": 3, "weights": str(weights)})
    with pytest.raises(TorchinferError, match=r"in save_vis \(false then, true now\)"):
        run_to_dir(classifier(), [str(images)], out, resume=True, save_vis=True,
                   fingerprint={"top_k": 5, "weights": str(weights)})
    summary = run_to_dir(classifier(), [str(images)], out, resume=True,
                         fingerprint={"top_k": 5, "weights": str(weights)})
    assert summary.resumed == 2 and summary.total == 5
    weights.write_bytes(b"retrained weights")
    with pytest.raises(TorchinferError, match=r"in weights \(.*w\.pth, 7 bytes"):
        run_to_dir(classifier(), [str(images)], out, resume=True,
                   fingerprint={"top_k": 5, "weights": str(weights)})
    (out / "run.json").unlink()
    (out / "summary.json").unlink()
    with pytest.raises(TorchinferError, match="no record of the run that wrote it"):
        run_to_dir(classifier(), [str(images)], out, resume=True)


@pytest.mark.parametrize("bad", ["garbage", "[1, 2]", '{"source": "\xff'])
def test_resume_refuses_a_corrupt_line_before_the_last(tmp_path, bad):
    images = folder(tmp_path, 5)
    out = tmp_path / "out"
    _interrupted(images, out, 3)
    partial = out / "predictions.jsonl.partial"
    lines = partial.read_bytes().split(b"\n")
    lines[1] = bad.encode("latin-1")
    partial.write_bytes(b"\n".join(lines))
    with pytest.raises(TorchinferError,
                       match=r"predictions\.jsonl\.partial: line 2 is not a JSON record"):
        run_to_dir(classifier(), [str(images)], out, resume=True)


def test_outputs_follow_the_umask(tmp_path):
    if os.name != "posix":
        pytest.skip("file modes are POSIX")
    previous = os.umask(0o027)
    try:
        out = tmp_path / "out"
        run_to_dir(classifier(), [str(folder(tmp_path, 2))], out, save_vis=True)
        write_json_atomic(out / "extra.json", {"a": 1})
        save_image_atomic(Image.new("RGB", (4, 4)), out / "masks" / "m.png")
    finally:
        os.umask(previous)
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in out.rglob("*") if p.is_file()}
    assert set(modes) == {"predictions.jsonl", "summary.json", "run.json", "extra.json",
                          "vis/img_000.jpg", "vis/img_001.jpg", "masks/m.png"}
    assert set(modes.values()) == {0o640}


def test_held_back_inputs_keep_their_place_between_video_frames(tmp_path):
    av = pytest.importorskip("av")
    images = tmp_path / "images"
    images.mkdir()
    for name, frames in (("b.mp4", 4), ("e.mp4", 2)):
        with av.open(str(images / name), "w") as container:
            stream = container.add_stream("mpeg4", rate=5)
            stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
            for _ in range(frames):
                frame = av.VideoFrame.from_image(Image.new("RGB", (32, 32), COLOURS[2]))
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
    for loop in ("a.png", "c.png", "f.png"):
        os.symlink(loop, images / loop)
    png(images / "d.png")
    out = tmp_path / "out"
    run_to_dir(classifier(), [str(images)], out)
    order = [(x["source"].rsplit("/", 1)[1].split("&")[0], x.get("error")) for x in lines_of(out)]
    assert order == [("a.png", "symlink loop"), *[(f"b.mp4#frame={i}", None) for i in range(4)],
                     ("c.png", "symlink loop"), ("d.png", None),
                     *[(f"e.mp4#frame={i}", None) for i in range(2)], ("f.png", "symlink loop")]


def test_a_picture_that_cannot_be_redrawn_keeps_its_answer(tmp_path):
    """--save-vis redraws each input after its answer: an input that changed (or vanished)
    meanwhile gets its answer and a reason for the missing picture, and the run goes on."""
    from torchinfer.runner.run import run_to_dir
    from torchinfer.testing import photograph_paths

    images = tmp_path / "in"
    images.mkdir()
    for p in photograph_paths(("chelsea.png", "coffee.png")):
        shutil.copy(p, images / p.name)
    clf = ti.load("classify", "shapes_classifier", device="cpu", batch_size=1)
    first = images / "chelsea.png"
    original = clf.loader.load

    def load_then_break(item, source=None, **kw):
        image = original(item, source, **kw)
        if str(item).endswith("chelsea.png"):
            first.write_bytes(b"gone")  # changed between the answer and its picture
        return image

    clf.loader = type("L", (), {"load": staticmethod(load_then_break)})()
    summary = run_to_dir(clf, [str(images)], tmp_path / "out", save_vis=True)
    lines = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert summary.total == 2 and summary.failed == 0
    broken = next(r for r in lines if r["source"].endswith("chelsea.png"))
    assert "topk" in broken and broken["files_error"].startswith("pictures not written")
    assert "vis" in next(r for r in lines if r["source"].endswith("coffee.png"))["files"]


def test_uris_in_list_files_are_kept_as_written(tmp_path):
    """A list may name remote files (a Ray job reads them through pyarrow's filesystems):
    ``s3://bucket/a.jpg`` must not become the local path ``s3:/bucket/a.jpg``."""
    from torchinfer.runner.sources import expand_sources

    listing = tmp_path / "list.txt"
    listing.write_text("s3://bucket/a.jpg\nlocal.jpg\n", encoding="utf-8")
    assert list(expand_sources([str(listing)])) == ["s3://bucket/a.jpg", str(tmp_path / "local.jpg")]
