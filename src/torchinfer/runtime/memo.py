"""Remembering what was measured about a model on this machine, keyed by a cheap stamp.

Measuring the runtimes, verifying them on photographs and checking the reduced JPEG decode
take seconds to minutes; their verdicts do not change while the model file, the machine and
the software stay the same. They are kept as small JSON files in the platform's cache folder
(``cache_dir``), keyed by ``model_stamp``: the weights file's size, modification time and a
hash of its first and last MiB (never a hash of every weight: that costs seconds for a
multi-GB model), the architecture's parameter names and shapes, the task, the preprocessing
and the versions of torch and torchinfer.

A model with no file behind it (random weights, or an ``nn.Module`` handed in) has no stamp
and is measured afresh in each process. The file is stamped by ``ti.load`` before it is
read (``source_stamp``), so a file replaced while loading never lends its stamp to the old
weights. ``TORCHINFER_NO_MEMO=1`` (or ``memo=False`` to
``ti.load``) turns remembering off.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torchvision

from .._version import __version__ as torchinfer_version
from ..models import LoadedModel
from ..models.bundled import bundled_path
from ..models.hub import is_named_weights

EDGE_BYTES = 1 << 20  # how much of each end of a file goes into its stamp


def cache_dir() -> Path:
    """``$TORCHINFER_CACHE``, else the platform's cache folder: ``$XDG_CACHE_HOME`` or
    ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows."""
    if os.environ.get("TORCHINFER_CACHE"):
        return Path(os.environ["TORCHINFER_CACHE"])
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "torchinfer" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "torchinfer"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "torchinfer"


def memo_enabled(memo: bool = True) -> bool:
    """Whether verdicts are read and written: ``memo`` unless ``TORCHINFER_NO_MEMO`` is set."""
    return memo and os.environ.get("TORCHINFER_NO_MEMO", "") in ("", "0")


def file_stamp(path: str | Path) -> str:
    """Size, modification time and a hash of the first and last ``EDGE_BYTES`` of ``path``
    (a folder: of each file in it), read in well under 0.1 s whatever the size."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(path) if path.is_dir() else f.name}:{st.st_size}:"
                 f"{st.st_mtime_ns}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(EDGE_BYTES))
            if st.st_size > 2 * EDGE_BYTES:
                fh.seek(-EDGE_BYTES, os.SEEK_END)
                h.update(fh.read(EDGE_BYTES))
    return h.hexdigest()


# files that belong to a model file: an OpenVINO IR's weights, an ONNX file's external data
COMPANIONS = {".xml": (".bin",), ".onnx": (".onnx.data",)}


def source_stamp(model: object, weights: object) -> str | None:
    """The stamp of what a model is read from, taken before it is read (a file replaced while
    loading then never lends its stamp to the old weights): the weights file, else the model
    file (with its companions), else a torchvision weights name (immutable downloads) or a
    bundled model's file. None for anything else: a module handed in, random weights."""
    if weights is None and isinstance(model, (str, Path)) and bundled_path(str(model)):
        return file_stamp(bundled_path(str(model)))  # type: ignore[arg-type]
    source = weights if weights is not None else model
    if not isinstance(source, (str, Path)):
        return None
    path = Path(source)
    if path.is_file():
        parts = [file_stamp(path)] + [
            file_stamp(extra) for suffix in COMPANIONS.get(path.suffix.lower(), ())
            if (extra := path.with_name(path.stem + suffix)).is_file()]
        return hashlib.sha256("".join(parts).encode()).hexdigest()
    if weights is not None and is_named_weights(str(weights)):
        return f"torchvision:{model}:{weights}"
    return None


def model_stamp(loaded: LoadedModel, task: str, source: str | None) -> str | None:
    """The key of what is remembered about ``loaded`` for ``task``: its ``source_stamp``, the
    architecture (parameter names and shapes, the class and its source file), the
    preprocessing and the versions of torch, torchvision and torchinfer. None without a
    source: nothing is remembered then."""
    if source is None:
        return None
    cls = type(loaded.module)
    try:
        code = inspect.getsourcefile(cls)
        code_stamp = f"{code}:{Path(code).stat().st_mtime_ns}" if code else ""
    except (TypeError, OSError):
        code_stamp = ""
    h = hashlib.sha256()
    h.update(json.dumps([source, loaded.name, task, cls.__module__, cls.__qualname__, code_stamp,
                         loaded.preprocess.to_dict(), torch.__version__,
                         torchvision.__version__, torchinfer_version]).encode())
    for key, tensor in loaded.module.state_dict().items():  # the architecture: names, shapes
        h.update(f"{key}{tuple(tensor.shape)}{tensor.dtype}".encode())
    return h.hexdigest()[:20]


def read_memo(path: Path) -> dict[str, dict[str, Any]]:
    """The JSON object kept at ``path``, its sections objects (empty when absent or
    unreadable; a section of another shape is dropped: measured again)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def update_memo(path: Path, section: str, entries: dict[str, Any]) -> None:
    """Set ``entries`` in ``[section]`` of the JSON object at ``path``, replaced atomically.
    Two processes measuring at once may lose one's entries: measured again next time."""
    if not entries:
        return
    data = read_memo(path)
    data.setdefault(section, {}).update(entries)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache: measured again next time


def content_fingerprint(loaded: LoadedModel, task: str) -> str:
    """A hash of every weight's bytes, for a model with no file behind it (no stamp): what an
    export of it is kept under. Reads every weight, so it is used only there."""
    h = hashlib.sha256()
    h.update(json.dumps([loaded.name, task, type(loaded.module).__qualname__,
                         loaded.preprocess.to_dict(), torch.__version__,
                         torchinfer_version]).encode())
    for key, tensor in loaded.module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
