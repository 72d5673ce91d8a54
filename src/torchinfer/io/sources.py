"""Expand what a user names on the command line (files, folders, globs, list files) into inputs.

Expansion is lazy (a generator) so a folder of a million images never becomes a list in
memory. Nothing here opens an image: a path that does not exist is passed on as it is, so the
predictor records it as a failed input instead of the whole run stopping before it starts.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from .video import VIDEO_EXTENSIONS

# Extensions Pillow decodes that people keep photographs in. Folders are filtered by these;
# a file named explicitly is always passed on, whatever its extension.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
    ".jp2", ".j2k", ".jfif", ".avif", ".heic", ".heif", ".tga", ".ico",
})
LIST_FILE_EXTENSIONS = frozenset({".txt", ".lst"})
_GLOB_CHARS = set("*?[")


def expand_sources(sources: Iterable[str | os.PathLike],
                   exclude: str | os.PathLike | None = None) -> Iterator[str]:
    """Yield image (and video) paths from files, folders (recursive, sorted), glob patterns and
    list files.

    A ``.txt``/``.lst`` file is read as one path per line (blank lines and ``#`` comments
    skipped; relative paths are taken relative to the list file). Folders are walked without
    entering ``exclude`` (a run's output folder inside its input folder must not feed the run
    its own pictures).
    """
    skip = Path(exclude).resolve() if exclude is not None else None
    for source in sources:
        text = os.fspath(source)
        path = Path(text)
        if path.is_dir():
            yield from _walk_images(path, skip)
        elif path.is_file() and path.suffix.lower() in LIST_FILE_EXTENSIONS:
            yield from _read_list_file(path)
        elif not path.exists() and _GLOB_CHARS & set(text):
            yield from sorted(glob.iglob(text, recursive=True))
        else:
            yield text  # a file, or a missing path that becomes an error record downstream


def _walk_images(root: Path, skip: Path | None) -> Iterator[str]:
    # os.walk with sorted names: deterministic order, and no full listing held in memory
    # beyond one directory at a time.
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if skip is None or Path(dirpath, d).resolve() != skip)
        for name in sorted(filenames):
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS:
                yield os.path.join(dirpath, name)


def _read_list_file(list_file: Path) -> Iterator[str]:
    base = list_file.parent
    with list_file.open(encoding="utf-8") as fh:
        for line in fh:
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            p = Path(entry)
            yield str(p if p.is_absolute() else base / p)
