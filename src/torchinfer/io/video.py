"""Video files as inputs: every frame, or every Nth, decoded lazily with PyAV.

Each frame becomes one input named ``<path>#frame=<index>&t=<seconds>`` (a media-fragment
style name, so results say where in the video they come from); frames stream through the
predictor in order like images, one at a time in memory. PyAV is an optional extra
(``pip install 'torchinfer[video]'``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def iter_frames(path: str, stride: int = 1) -> Iterator[tuple[str, Any]]:
    """(name, PIL image) for every ``stride``-th frame of the video at ``path``; a video that
    cannot be opened or decoded yields one (name, Unreadable) saying why, and the run goes on."""
    if stride < 1:
        raise ValueError(f"video stride must be >= 1, got {stride}")
    try:
        import av
    except ImportError:
        yield path, Unreadable("reading video needs PyAV: pip install 'torchinfer[video]'")
        return
    if not Path(path).is_file():
        yield path, Unreadable("file not found")
        return
    index = -1
    try:
        with av.open(path) as container:
            if not container.streams.video:
                yield path, Unreadable("no video stream in the file")
                return
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame-parallel decoding inside FFmpeg
            for index, frame in enumerate(container.decode(stream)):
                if index % stride == 0:
                    yield frame_name(path, index, frame.time), frame.to_image()
    except av.error.FFmpegError as exc:  # a file that is not a video, or breaks part-way
        where = f" after frame {index}" if index >= 0 else ""
        yield (frame_name(path, index + 1, None) if index >= 0 else path,
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
