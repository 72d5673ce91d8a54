"""Typed inputs: what a user names (paths, folders, globs, lists, videos, ``-``, arrays) becomes
a stream of ``Source`` items, expanded once, each saying what it is and how to read it.

Everything downstream (decoding, resuming, drawing, video writers) asks the item, never its
name: in-memory inputs and video frames are told apart by ``kind``, not by the look of a string.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from .images import describe_source
from .sources import expand_sources
from .video import Unreadable, is_video, is_webcam, iter_frames

SourceKind = Literal["file", "frame", "stdin", "memory", "unreadable"]


@dataclass(frozen=True)
class Source:
    """One input.

    name: what its result is called (``source`` in the JSONL): the path, ``<stdin>``, a
        description of an in-memory object, or ``<video>#frame=<i>&t=<seconds>``.
    kind: "file" (read from ``path`` when decoded), "frame" (of the video at ``path``),
        "stdin" / "memory" (``data`` holds it), "unreadable" (``reason`` says why).
    """

    name: str
    kind: SourceKind
    path: str | None = None
    frame: int | None = None  # the frame's index in its video
    data: Any = None  # pixels or bytes of an input not read from a file
    reason: str | None = None

    @property
    def item(self) -> Any:
        """What the image loader reads."""
        if self.kind == "unreadable":
            return Unreadable(self.reason or "unreadable")
        return self.path if self.kind == "file" else self.data

    @property
    def is_file(self) -> bool:
        """An image file on disk: it can be opened again (to draw on it) and stamped for
        ``--resume``."""
        return self.kind == "file"


def iter_sources(source: Any, *, video_stride: int = 1,
                 exclude: str | os.PathLike | None = None) -> Iterator[Source]:
    """``Source`` items for ``source``: a path (file, folder, glob, ``.txt`` list, video,
    ``webcam:N``), ``"-"`` (one image's bytes on standard input), an in-memory image (bytes,
    PIL image, array, tensor), or an iterable of any of these (``Source`` items pass through).
    Folders are walked lazily without entering ``exclude``; a video gives every
    ``video_stride``-th frame."""
    for item in _items(source):
        if isinstance(item, Source):
            yield item
        elif isinstance(item, str) and item == "-":
            yield Source("<stdin>", "stdin", data=sys.stdin.buffer.read())
        elif isinstance(item, (str, os.PathLike)):
            for path in expand_sources([item], exclude=exclude):
                yield from _path_sources(path, video_stride)
        else:
            yield Source(describe_source(item), "memory", data=item)


def _items(source: Any) -> Iterable[Any]:
    if isinstance(source, (str, Path, os.PathLike, bytes, bytearray, Image.Image, torch.Tensor,
                           np.ndarray, Source)):
        return [source]
    return source


def _path_sources(path: str, video_stride: int) -> Iterator[Source]:
    if is_webcam(path) or is_video(path):
        yield from _frames(path, video_stride)
    else:
        # read when decoded: the loader says why one cannot be (not found, permission denied,
        # a symlink loop, a named pipe...), in the input's own record
        yield Source(path, "file", path=path)


def _frames(path: str, stride: int) -> Iterator[Source]:
    for index, name, frame in iter_frames(path, stride):
        if isinstance(frame, Unreadable):
            yield Source(name, "unreadable", path=path, frame=index, reason=frame.reason)
        else:
            yield Source(name, "frame", path=path, frame=index, data=frame)


def one_source(item: Any) -> Source:
    """The ``Source`` of one input, taken as it is: a path names one image (not a folder to
    walk); ``-`` is standard input."""
    if isinstance(item, Source):
        return item
    if isinstance(item, str) and item == "-":
        return Source("<stdin>", "stdin", data=sys.stdin.buffer.read())
    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        return Source(path, "file", path=path)
    return Source(describe_source(item), "memory", data=item)
