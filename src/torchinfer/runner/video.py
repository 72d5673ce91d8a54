"""Video files as inputs: every frame, or every Nth, decoded lazily with PyAV.

Each frame becomes one input named ``<path>#frame=<index>&t=<seconds>`` (a media-fragment
style name, so results say where in the video they come from); frames stream through the
predictor in order like images, one at a time in memory. PyAV is an optional extra
(``pip install 'torchinfer[video]'``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import OptionError

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg",
                              ".mpeg", ".wmv", ".flv", ".ts"})


@dataclass(frozen=True)
class Unreadable:
    """An input that failed before decoding (e.g. a video that does not open): the image
    loader turns it into that input's error record."""

    reason: str


def is_video(path: str) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def frame_name(path: str, index: int, seconds: float | None) -> str:
    t = f"&t={seconds:.3f}" if seconds is not None else ""
    return f"{path}#frame={index}{t}"


WEBCAM_PREFIX = "webcam:"  # "webcam:0" is /dev/video0 (Linux, V4L2)


def is_webcam(source: str) -> bool:
    return source.startswith(WEBCAM_PREFIX) and source[len(WEBCAM_PREFIX):].isdigit()


def iter_frames(path: str, stride: int = 1) -> Iterator[tuple[int | None, str, Any]]:
    """(index, name, PIL image) for every ``stride``-th frame of the video at ``path``, or of a
    webcam (``webcam:N``, until interrupted); a video that cannot be opened or decoded yields
    one (index or None, name, Unreadable) saying why, and the run goes on."""
    if stride < 1:
        raise OptionError(f"video stride must be >= 1, got {stride}")
    try:
        import av
    except ImportError:
        yield None, path, Unreadable("reading video needs PyAV: pip install 'torchinfer[video]'")
        return
    webcam = is_webcam(path)
    target, options = (f"/dev/video{path[len(WEBCAM_PREFIX):]}", {"format": "v4l2"}) \
        if webcam else (path, {})
    if not Path(target).exists():
        yield None, path, Unreadable("no such camera" if webcam else "file not found")
        return
    index = -1
    try:
        with av.open(target, **options) as container:
            if not container.streams.video:
                yield None, path, Unreadable("no video stream in the file")
                return
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame-parallel decoding inside FFmpeg
            for index, frame in enumerate(container.decode(stream)):
                if index % stride == 0:
                    yield index, frame_name(path, index, frame.time), frame.to_image()
    except av.error.FFmpegError as exc:  # a file that is not a video, or breaks part-way
        where = f" after frame {index}" if index >= 0 else ""
        broken = index + 1 if index >= 0 else None
        yield (broken, frame_name(path, broken, None) if broken is not None else path,
               Unreadable(f"unreadable video{where}: {exc}"))


def count_frames(path: str, stride: int = 1) -> int:
    """Frames ``iter_frames`` will yield, from the container's header (0 if it does not say;
    progress bars only)."""
    try:
        import av

        with av.open(path) as container:
            n = container.streams.video[0].frames if container.streams.video else 0
    except Exception:  # noqa: BLE001 - any unreadable file counts as one (failed) input
        return 1
    return max(1, -(-n // stride)) if n else 0


class AnnotatedVideo:
    """Writes the annotated frames of one input video as ``<out>.mp4`` at the input's frame
    rate (divided by the stride), under a temporary name renamed into place by ``close``.

    The predictor's results carry no pixels, so the frames are decoded a second time here, in
    step with the results (which come in order): frame i is read, drawn with its result by
    ``draw(result, image)``, and encoded.
    """

    def __init__(self, source: str, out: Path, stride: int = 1):
        import av

        self.source, self.out, self.stride = source, out, stride
        self._reader = av.open(source)
        stream = self._reader.streams.video[0]
        self._frames = self._reader.decode(stream)
        self._next = 0
        rate = stream.average_rate or stream.guessed_rate or 25
        out.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = out.with_name(f".{out.name}.tmp.mp4")
        self._writer = av.open(str(self._tmp), "w")
        self._stream = self._writer.add_stream("mpeg4", rate=rate / stride)
        self._stream.width = stream.codec_context.width // 2 * 2  # yuv420p needs even sizes
        self._stream.height = stream.codec_context.height // 2 * 2
        self._stream.pix_fmt = "yuv420p"
        self._stream.bit_rate = 4_000_000

    def add(self, index: int, result: Any, draw: Any) -> None:
        import av

        frame = None
        while self._next <= index:  # skip to the result's frame (strided, or failed frames)
            frame = next(self._frames, None)
            self._next += 1
            if frame is None:
                return
        if frame is None:  # this frame was written already
            return
        image = draw(result, frame.to_image()).convert("RGB")
        image = image.crop((0, 0, self._stream.width, self._stream.height))
        for packet in self._stream.encode(av.VideoFrame.from_image(image)):
            self._writer.mux(packet)

    def close(self) -> Path:
        for packet in self._stream.encode():
            self._writer.mux(packet)
        self._writer.close()
        self._reader.close()
        os.replace(self._tmp, self.out)
        return self.out

    def abandon(self) -> None:
        """An interrupted run: drop the half-written file (--resume runs videos again)."""
        with contextlib.suppress(Exception):
            self._writer.close()
        self._reader.close()
        self._tmp.unlink(missing_ok=True)
