"""Video files as inputs: N frames give N results (N / stride with a stride), in order, named
with frame index and time; a broken video is one error record."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

av = pytest.importorskip("av")

import torchinfer as ti  # noqa: E402
from torchinfer.cli.app import app  # noqa: E402
from torchinfer.runner.run import count_inputs  # noqa: E402

COLOURS = [(220, 20, 20), (20, 220, 20), (20, 20, 220)]


def write_video(path, frames: int = 10, fps: int = 5):
    """Frame i is filled with COLOURS[i % 3] (lossless enough for a colour classifier)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            array = np.zeros((48, 64, 3), np.uint8) + np.array(COLOURS[i % 3], np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def colour_classifier():
    from slow_models import SlowColourClassifier

    model = SlowColourClassifier()
    model.forward = lambda x: x.mean(dim=(2, 3)) * 10  # no sleeping here
    return ti.load("classify", model, device="cpu", labels=["r", "g", "b"], input_size=16,
                   mean=(0, 0, 0), std=(1, 1, 1), batch_size=4)


@pytest.mark.parametrize("stride,expected", [(1, list(range(10))), (3, [0, 3, 6, 9])])
def test_video_frames_in_order_with_stride(tmp_path, stride, expected):
    video = write_video(tmp_path / "clip.mp4")
    results = list(colour_classifier().stream(str(video), video_stride=stride))
    assert [r.source.split("#frame=")[1].split("&")[0] for r in results] == [str(i) for i in expected]
    assert [r.top1.label for r in results] == ["rgb"[i % 3] for i in expected]
    times = [float(r.source.split("&t=")[1]) for r in results]
    assert times == pytest.approx([i / 5 for i in expected])
    assert count_inputs([str(video)], video_stride=stride) == len(expected)


def test_video_in_a_folder_and_a_broken_one(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_video(folder / "a.mp4", frames=4)
    (folder / "b.mp4").write_bytes(b"not a video at all")
    out = tmp_path / "out"
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    (tmp_path / "labels.txt").write_text("r\ng\nb\n")
    result = CliRunner().invoke(app, ["predict", "classify", str(folder), "-m",
                                      "slow_models:slow_classifier", "--labels",
                                      str(tmp_path / "labels.txt"), "--input-size", "16",
                                      "--mean", "0,0,0", "--std", "1,1,1", "--device", "cpu",
                                      "--out", str(out), "--quiet"])
    assert result.exit_code == 1, result.output  # b.mp4 failed, the rest went on
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [x.get("top1", {}).get("label") for x in lines[:4]] == ["r", "g", "b", "r"]
    assert lines[4]["source"].endswith("b.mp4") and "unreadable video" in lines[4]["error"]


@pytest.mark.parametrize("stride,frames", [(1, 10), (3, 4)])
def test_annotated_video_has_every_result_frame_at_the_input_rate(tmp_path, stride, frames):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    video = write_video(tmp_path / "clip.mp4", frames=10, fps=5)
    (tmp_path / "labels.txt").write_text("r\ng\nb\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["predict", "classify", str(video), "-m",
                                      "slow_models:slow_classifier", "--labels",
                                      str(tmp_path / "labels.txt"), "--input-size", "16",
                                      "--mean", "0,0,0", "--std", "1,1,1", "--device", "cpu",
                                      "--save-vis", "--video-stride", str(stride),
                                      "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == frames and lines[0]["files"]["vis"].endswith("clip.mp4")
    with av.open(str(out / "vis" / "clip.mp4")) as container:
        stream = container.streams.video[0]
        decoded = list(container.decode(stream))
        assert len(decoded) == frames
        assert float(stream.average_rate) == pytest.approx(5 / stride)
    assert not list((out / "vis").glob(".*"))  # no temporary file left


def test_a_missing_webcam_is_one_error_record():
    results = list(colour_classifier().stream("webcam:97"))
    assert len(results) == 1 and results[0].error == "no such camera"
