"""Writing run outputs so that a reader never sees half a file.

A file is written under a temporary name in the same folder and renamed into place when it is
complete: rename is atomic on POSIX and Windows, so ``predictions.jsonl`` either does not exist
yet or is whole.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any


def write_json_atomic(path: str | Path, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_image_atomic(image: Any, path: str | Path, **save_kwargs: Any) -> Path:
    """Save a PIL image under a temporary name, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        image.save(tmp, format=_FORMATS.get(path.suffix.lower(), "PNG"), **save_kwargs)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}


class UniqueNames:
    """Output file stems named after their inputs, made unique within a run (two inputs called
    ``a/img.jpg`` and ``b/img.jpg`` become ``img`` and ``img-1``)."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def __call__(self, source: str) -> str:
        stem = Path(source).stem if not source.startswith("<") else "input"
        name, n = stem, 0
        while name in self._used:
            n += 1
            name = f"{stem}-{n}"
        self._used.add(name)
        return name


class JsonlWriter:
    """Append one JSON object per line to ``<path>.partial``; rename to ``path`` on close.

    Lines are flushed as they are written, so a long run's progress is visible in the partial
    file, and a killed run leaves every line but possibly the last one whole (``read_jsonl``
    drops a torn last line). Only a run that finished produces the final name. ``initial``
    records (a resumed run's) are written to a fresh file that replaces the partial atomically,
    so a kill while resuming loses nothing either.
    """

    def __init__(self, path: str | Path, initial: list[dict[str, Any]] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(self.path.name + ".partial")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.partial.name}.", suffix=".tmp",
                                   dir=self.path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for record in initial or ():
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.partial)
        self._fh = self.partial.open("a", encoding="utf-8")
        self.count = len(initial or ())

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        self.count += 1

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
            os.replace(self.partial, self.path)

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self._fh.close()  # leave the .partial file: it holds every line completed so far


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The whole records of a JSONL file; a last line cut short by a kill is dropped (any
    other unreadable line is an error: the file is not ours or was edited)."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    last = lines.pop()  # "" after a final newline, else a line whose write was interrupted
    records = []
    for i, line in enumerate(lines):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {i + 1} is not JSON ({exc})") from exc
    try:
        if last.strip():
            records.append(json.loads(last))
    except json.JSONDecodeError:
        pass  # torn
    return records
