"""The table of backends, by name.

The built-in ones are imported on first use (their runtimes are optional extras); a third-party
package adds one through the ``torchinfer.backends`` entry-point group:

    [project.entry-points."torchinfer.backends"]
    mybackend = "mypkg.backend:MyBackend"     # a Backend subclass or instance

after which ``--backend mybackend``, ``ti.load(..., backend="mybackend")``, the server and Ray
run it with no change here, and ``auto`` measures it with the others. In code,
``register_backend(MyBackend())`` does the same for the running process.
"""

from __future__ import annotations

import importlib
import threading
from importlib.metadata import entry_points
from pathlib import Path

from ..errors import first_line
from .backend import Backend, BackendError

ENTRY_POINT_GROUP = "torchinfer.backends"
# name -> "module:attribute" of the built-in backends, imported when first asked for
BUILT_IN = {
    "torch": "torchinfer.runtime.torch_backends:TorchBackend",
    "torchscript": "torchinfer.runtime.torch_backends:TorchScriptBackend",
    "onnxruntime": "torchinfer.runtime.ort_backend:OnnxRuntimeBackend",
    "openvino": "torchinfer.runtime.openvino_backend:OpenVinoBackend",
}

_lock = threading.Lock()
_backends: dict[str, Backend] = {}  # the ones built so far, by name
_plugins: dict[str, str] | None = None  # entry points found: name -> "module:attribute"


def register_backend(backend: Backend | type[Backend]) -> Backend:
    """Add ``backend`` (an instance or a class) to the table; a name taken is refused."""
    instance = backend() if isinstance(backend, type) else backend
    if not isinstance(instance, Backend):
        raise BackendError(f"{backend!r} is not a torchinfer Backend")
    with _lock:
        taken = instance.name in _backends or instance.name in BUILT_IN
        if taken and _backends.get(instance.name) is not instance:
            raise BackendError(f"a backend named {instance.name!r} is registered already")
        _backends[instance.name] = instance
    return instance


def backend_names() -> list[str]:
    """Every backend that can be asked for: the built-in ones, then the plugins'."""
    return [*BUILT_IN, *sorted(n for n in {*_entry_points(), *_backends} if n not in BUILT_IN)]


def get_backend(name: str) -> Backend:
    """The backend called ``name``; BackendError naming the choices when there is none."""
    with _lock:
        if name in _backends:
            return _backends[name]
    target = BUILT_IN.get(name) or _entry_points().get(name)
    if target is None:
        raise BackendError(f"unknown backend {name!r}: use auto, {', '.join(backend_names())}")
    module_name, _, attribute = target.partition(":")
    try:  # a plugin is someone else's code: whatever it raises, it is not available
        loaded = getattr(importlib.import_module(module_name), attribute)
        instance = loaded() if isinstance(loaded, type) else loaded
    except Exception as exc:
        raise BackendError(f"backend {name!r} ({target}) cannot be imported: "
                           f"{type(exc).__name__}: {first_line(exc)}") from exc
    if not isinstance(instance, Backend) or instance.name != name:
        raise BackendError(f"backend {name!r} ({target}) is not a torchinfer Backend "
                           f"named {name!r}")
    with _lock:
        return _backends.setdefault(name, instance)


def available_backends() -> list[Backend]:
    """The backends that can run here (their packages installed)."""
    found = []
    for name in backend_names():
        try:
            backend = get_backend(name)
        except BackendError:
            continue  # a broken plugin is reported when it is asked for by name
        try:
            missing = backend.unavailable()
        except Exception:  # a plugin's own check failing: not available
            continue
        if missing is None:
            found.append(backend)
    return found


def backend_for_file(path: Path) -> Backend | None:
    """The backend whose own file format ``path`` is (by suffix), if any claims it."""
    suffix = path.suffix.lower()
    for name in backend_names():
        if name in BUILT_IN and suffix not in _BUILT_IN_SUFFIXES.get(name, ()):
            continue  # not imported just to ask
        try:
            backend = get_backend(name)
        except BackendError:
            continue
        if suffix in backend.file_suffixes:
            return backend
    return None


# the built-in backends' own formats, known without importing them
_BUILT_IN_SUFFIXES = {"openvino": (".xml",)}


def _entry_points() -> dict[str, str]:
    global _plugins
    if _plugins is None:
        _plugins = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return _plugins


def forget_plugins() -> None:
    """Look for entry points again on next use (after installing a package in this process)."""
    global _plugins
    with _lock:
        _plugins = None
        for name in [n for n in _backends if n not in BUILT_IN]:
            del _backends[name]
