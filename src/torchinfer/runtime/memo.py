"""Remembering what was measured about a model on this machine, keyed by a cheap stamp.

Measuring the runtimes, verifying them on photographs and checking the reduced JPEG decode
take seconds to minutes; their verdicts do not change while the model file, the machine and
the software stay the same. They are kept as small JSON files in the platform's cache folder
(``cache_dir``), keyed by ``model_stamp``: the weights file's size, modification time and a
hash of its first and last MiB (never a hash of every weight: that costs seconds for a
multi-GB model), the architecture's parameter names and shapes, the task, the preprocessing
and the versions of torch and torchinfer.

A model with no file behind it (random weights, or an ``nn.Module`` handed in) has no stamp
and is measured afresh in each process. ``TORCHINFER_NO_MEMO=1`` (or ``memo=False`` to
``ti.load``) turns remembering off.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from ..models import LoadedModel

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


def model_stamp(loaded: LoadedModel, task: str) -> str | None:
    """The key of what is remembered about ``loaded`` for ``task``, or None when it has no
    file behind it (random weights, a module handed in): nothing is remembered then."""
    source = loaded.weights
    if source is None:
        return None
    if Path(source).exists():
        weights = file_stamp(source)
    elif "." in source or source == "DEFAULT":  # a torchvision weights name (immutable URLs)
        weights = f"torchvision:{source}"
    else:
        return None
    h = hashlib.sha256()
    h.update(json.dumps([weights, loaded.name, task, type(loaded.module).__qualname__,
                         loaded.preprocess.to_dict(), torch.__version__, package_version()]).encode())
    for key, tensor in loaded.module.state_dict().items():  # the architecture: names, shapes
        h.update(f"{key}{tuple(tensor.shape)}{tensor.dtype}".encode())
    return h.hexdigest()[:20]


def package_version() -> str:
    """torchinfer's installed version (the exporters' output changes with it)."""
    try:
        return importlib.metadata.version("torchinfer")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def read_memo(path: Path) -> dict[str, Any]:
    """The JSON object kept at ``path`` (empty when absent or unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update_memo(path: Path, section: str, key: str, value: Any) -> None:
    """Set ``[section][key]`` in the JSON object at ``path``, replaced atomically. Two
    processes measuring at once may lose one's entry: it is measured again next time."""
    data = read_memo(path)
    data.setdefault(section, {})[key] = value
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
                         package_version()]).encode())
    for key, tensor in loaded.module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
