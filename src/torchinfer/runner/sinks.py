"""Writing run outputs so that a reader never sees half a file.

A file is written under a temporary name in the same folder and renamed into place when it is
complete: rename is atomic on POSIX and Windows, so ``predictions.jsonl`` either does not exist
yet or is whole. Every file gets the mode a plain open() would give it under the umask.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ..errors import TorchinferError


def dumps(data: Any, indent: int | None = None) -> str:
    """JSON text that round-trips every str Python can hold, file names included.

    UTF-8 text stays as it is (readable names in any script). A name that is not valid UTF-8
    comes from ``os.fsdecode`` with its bytes as lone surrogates (U+DC80-U+DCFF), which UTF-8
    cannot encode: those alone are written as ``\\udcXX`` escapes, which Python's json reads
    back to the same str (``os.fsencode`` then gives the original bytes; ``--resume`` matches
    it). Readers that refuse lone surrogates see them only in the lines of such files.
    """
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


_SURROGATE = re.compile("[\ud800-\udfff]")


def write_json_atomic(path: str | Path, data: Any) -> Path:
    return write_bytes_atomic(path, dumps(data, indent=2).encode("utf-8") + b"\n")


def write_jsonl_atomic(path: str | Path, records: Iterable[Any]) -> Path:
    """Replace ``path`` with one JSON line per record, atomically."""
    return write_bytes_atomic(path, b"".join(dumps(r).encode("utf-8") + b"\n" for r in records))


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` under a temporary name, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh, tmp = _create_temporary(path)
    try:
        with fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_image_atomic(image: Any, path: str | Path, **save_kwargs: Any) -> Path:
    """Save a PIL image under a temporary name, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh, tmp = _create_temporary(path)
    try:
        with fh:
            image.save(fh, format=_FORMATS.get(path.suffix.lower(), "PNG"), **save_kwargs)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _create_temporary(path: Path) -> tuple[IO[bytes], Path]:
    """A new file beside ``path`` under a random hidden name, open for writing in binary.

    Created with mode 0o666 as a plain open() is, so the umask decides the final file's mode
    (tempfile.mkstemp would make it 0o600); O_EXCL makes sure the file is new, never a file or
    link someone put there, and the random name lets two writers never share one.
    """
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o666)
        except FileExistsError:
            continue
        return os.fdopen(fd, "wb"), tmp


def check_writable(folder: Path) -> None:
    """Create ``folder`` and write a file in it, as a run will (os.access would not see a
    read-only mount the same way, nor root's rights); TorchinferError saying why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        reason = "permission denied" if isinstance(exc, PermissionError) \
            else (exc.strerror or str(exc)).lower()
        raise TorchinferError(f"cannot write to output folder {folder}: {reason}") from None


def remove_outputs(folder: Path, files: Iterable[str], folders: Iterable[str],
                   pictures: Iterable[Path]) -> None:
    """Delete ``files`` in ``folder`` (with what a killed writer left of them) and the
    ``pictures`` an earlier run recorded, if they lie in one of ``folders`` (with the
    half-written pictures a killed run left there under hidden names); a folder left empty
    goes too. Nothing else: someone else's files stay, and a link is removed, never followed."""
    files, folders = tuple(files), tuple(folders)
    inside = {(folder / name).resolve() for name in folders
              if (folder / name).is_dir() and not (folder / name).is_symlink()}
    try:
        for name in files:
            if os.path.lexists(folder / name) and not (folder / name).is_dir():
                (folder / name).unlink()
        for picture in pictures:
            if picture.parent.resolve() in inside and os.path.lexists(picture):
                picture.unlink()
        for leftover in folder.glob(".*.tmp"):
            if leftover.name.startswith(tuple(f".{name}." for name in files)):
                leftover.unlink()
        for path in inside:
            _remove_leftovers(path)
    except OSError as exc:
        raise TorchinferError(f"cannot delete the earlier results in {folder}: {exc}") from None


def _remove_leftovers(folder: Path) -> None:
    with os.scandir(folder) as entries:
        for entry in entries:
            # what a killed run left half-written under a hidden name
            if entry.name.startswith(".") and entry.name.endswith(".tmp") \
                    and not entry.is_dir(follow_symlinks=False):
                os.unlink(entry.path)
    with contextlib.suppress(OSError):  # not empty: someone else's files stay
        folder.rmdir()


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
        fh, tmp = _create_temporary(self.partial)
        try:
            with fh:
                for record in initial or ():
                    fh.write(dumps(record).encode("utf-8") + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.partial)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._fh = self.partial.open("a", encoding="utf-8")
        self.count = len(initial or ())

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(dumps(record) + "\n")
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
    """The whole records of a JSONL file; a last line cut short by a kill is dropped. Any
    other line that is not a JSON object (UTF-8) raises TorchinferError naming the file and
    line: the file is not ours, or was edited."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    last = lines.pop()  # b"" after a final newline, else a line whose write was interrupted
    records = []
    for i, line in enumerate(lines):
        if line.strip():
            records.append(_record(line, path, i + 1))
    try:
        if last.strip():
            records.append(_record(last, path, len(lines) + 1))
    except TorchinferError:
        pass  # torn
    return records


def _record(line: bytes, path: Path, number: int) -> dict[str, Any]:
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise TorchinferError(f"{path}: line {number} is not a JSON record (not UTF-8 at "
                              f"column {exc.start + 1})") from None
    except json.JSONDecodeError as exc:
        raise TorchinferError(f"{path}: line {number} is not a JSON record ({exc.msg} at "
                              f"column {exc.colno})") from None
    if not isinstance(record, dict):
        raise TorchinferError(f"{path}: line {number} is not a JSON record (a "
                              f"{type(record).__name__}, not an object)")
    return record


def write_dota(records: Iterable[dict[str, Any]], folder: str | Path) -> list[Path]:
    """Rotated boxes as DOTA's Task 1 result files: ``Task1_<class>.txt`` per class, one line
    per box, ``<image> <score> x1 y1 x2 y2 x3 y3 x4 y4`` (the four corners in original
    pixels; the image named by its file stem, as DOTA's evaluation expects). ``records`` are
    predictions.jsonl records; those without rotated boxes ("corners") add nothing."""
    lines: dict[str, list[str]] = {}
    for record in records:
        image = Path(str(record.get("source", ""))).stem
        for obj in record.get("detections") or ():
            if "corners" in obj:
                points = " ".join(f"{float(v):.2f}" for corner in obj["corners"] for v in corner)
                lines.setdefault(str(obj["label"]), []).append(
                    f"{image} {float(obj['score']):.5f} {points}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for label, rows in sorted(lines.items()):
        safe = re.sub(r"[^\w.-]+", "_", label) or "_"  # a label is no path
        path = folder / f"Task1_{safe}.txt"
        fh, tmp = _create_temporary(path)
        try:
            with fh:
                fh.write(("\n".join(rows) + "\n").encode("utf-8"))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        written.append(path)
    return written
