"""A run folder on object storage (``--out s3://bucket/run/``), worked on through a local copy.

A run appends to its JSONL, renames files into place and reads its earlier records to resume:
none of that is possible on an object store, where an object is written whole or not at all.
So the run works in a local staging folder, and ``staged`` keeps the URI in step with it:

- at the start, the run's own objects under the URI (those ``wanted`` names: its records,
  summary, pictures...) are copied down, so ``--resume`` reads the earlier records and
  ``--exist-ok`` finds what to replace; anything else there is neither read nor touched;
- while the run goes, every ``interval_s`` seconds (or four times as long as the last upload
  took, when that is longer), each file that changed is uploaded whole (one object each: a
  reader sees the old object or the new one, never half of one); a growing ``.jsonl`` is
  uploaded up to its last complete line;
- files the run removed are deleted from the URI;
- at the end, and after an error or Ctrl-C, a last upload, so that what finished is there to
  resume from (when the run itself failed and that upload fails too, the run's error goes
  on, with a note naming the staging folder).

A run killed outright loses what it wrote since the last upload; ``--resume`` runs those
inputs again. The staging folder lives in the system's temporary folder, and is removed once
everything is uploaded; if the last upload fails, it is kept and the error names it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import TorchinferError, first_line
from .uris import files_under, filesystem, is_uri, joined

UPLOAD_INTERVAL_S = 10.0


class RemoteFolder:
    """The objects under ``uri``, copied down and kept in step with a local folder."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self.fs, root = filesystem(self.uri)
        self.root = root.rstrip("/")
        self.known: set[str] = set()  # relative names the URI holds, as far as we know
        self.sent: dict[str, tuple[int, int]] = {}  # name -> (size, mtime_ns) last uploaded
        self.lock = threading.Lock()  # one upload at a time: the timer's or the last one

    def pull(self, local: Path, wanted: Callable[[str], bool] = lambda name: True) -> int:
        """Copy the objects under the URI whose relative names are ``wanted`` into ``local``;
        how many."""
        count = 0
        for uri in files_under(self.uri):
            name = uri[len(self.uri):].lstrip("/")
            if not name or "/../" in f"/{name}/" or not wanted(name):
                continue
            target = local / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open_input_stream(f"{self.root}/{name}") as src, \
                    open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            st = target.stat()
            self.known.add(name)
            self.sent[name] = (st.st_size, st.st_mtime_ns)
            count += 1
        return count

    def push(self, local: Path) -> int:
        """Upload each file of ``local`` that changed since it was last sent and delete the
        objects whose files are gone; how many objects were written or deleted."""
        with self.lock:
            present: dict[str, tuple[int, int]] = {}
            for path in sorted(local.rglob("*")):
                name = path.relative_to(local).as_posix()
                if not path.is_file() or _temporary(path.name):
                    continue
                st = path.stat()
                present[name] = (st.st_size, st.st_mtime_ns)
            changes = 0
            for name, stamp in present.items():
                if self.sent.get(name) == stamp:
                    continue
                data = (local / name).read_bytes()
                if name.endswith((".jsonl", ".jsonl.partial")):
                    data = data[:data.rfind(b"\n") + 1]  # complete lines only
                with self.fs.open_output_stream(f"{self.root}/{name}") as dst:
                    dst.write(data)
                self.sent[name] = stamp
                self.known.add(name)
                changes += 1
            for name in sorted(self.known - set(present)):
                with contextlib.suppress(FileNotFoundError):
                    self.fs.delete_file(f"{self.root}/{name}")
                self.known.discard(name)
                self.sent.pop(name, None)
                changes += 1
            return changes


def _temporary(name: str) -> bool:
    """A file being written under a temporary name (sinks' ``.NAME.XXXX.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp")


class _Uploader(threading.Thread):
    def __init__(self, remote: RemoteFolder, local: Path, interval_s: float):
        super().__init__(name="torchinfer-upload", daemon=True)
        self.remote, self.local, self.interval_s = remote, local, interval_s
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        wait = self.interval_s
        while not self.stopping.wait(wait):
            began = time.monotonic()
            try:
                self.remote.push(self.local)
            except Exception:  # noqa: BLE001  (pyarrow's OSError, ArrowInvalid...)
                pass  # a passing failure: the next round, or the last upload, tries again
            # a growing file goes up whole each time: as the run's files grow, upload less
            # often, so that uploading never takes more than a fifth of the run's time
            wait = max(self.interval_s, 4 * (time.monotonic() - began))


@contextlib.contextmanager
def staged(out: str | os.PathLike, wanted: Callable[[str], bool] = lambda name: True,
           interval_s: float = UPLOAD_INTERVAL_S) -> Iterator[Path]:
    """The local folder a run writes into for ``out``: ``out`` itself when it is a local path,
    else a staging copy of the URI kept in step with it (this module's docstring); ``wanted``:
    the relative names of the run's own files."""
    text = os.fspath(out)
    if not is_uri(text):
        yield Path(text)
        return
    remote = RemoteFolder(text)
    local = Path(tempfile.mkdtemp(prefix="torchinfer-run-")) / "run"
    try:
        local.mkdir()
        remote.pull(local, wanted)
    except OSError as exc:
        shutil.rmtree(local.parent, ignore_errors=True)
        raise TorchinferError(f"{text}: cannot read the run folder: {first_line(exc)}") from None
    uploader = _Uploader(remote, local, interval_s)
    uploader.start()
    try:
        yield local
    except BaseException as exc:  # the run failed or was stopped: keep what it finished
        _stop(uploader)
        try:
            remote.push(local)
        except Exception as failed:  # noqa: BLE001  (the run's own error goes on)
            exc.add_note(f"{text}: the last upload failed too ({first_line(failed)}); the "
                         f"run's files are in {local}")
            raise
        shutil.rmtree(local.parent, ignore_errors=True)
        raise
    _stop(uploader)
    try:
        remote.push(local)
    except OSError as exc:
        raise TorchinferError(f"{text}: the last upload failed ({first_line(exc)}); the run's "
                              f"files are in {local}") from None
    shutil.rmtree(local.parent, ignore_errors=True)


def _stop(uploader: _Uploader) -> None:
    uploader.stopping.set()
    uploader.join()


def shown(out: str | os.PathLike, local: Path, path: Path) -> str:
    """``path`` (inside the staging folder ``local``) as the user names it: under ``out``."""
    text = os.fspath(out)
    if not is_uri(text):
        return str(path)
    return joined(text, path.relative_to(local).as_posix())
