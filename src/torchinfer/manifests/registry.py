"""The table of tasks: the built-in manifests, those of installed packages, and those
registered in code.

A third-party package adds a task through the ``torchinfer.tasks`` entry-point group:

    [project.entry-points."torchinfer.tasks"]
    depth2 = "mypkg.depth2:MANIFEST"       # a TaskManifest named depth2

after which ``predict depth2``, ``eval depth2``, the server (HTTP and OIP) and ``--engine ray``
run it with no change here. In code, ``register_task(MANIFEST)`` does the same for the running
process. A plugin that cannot be imported is left out and named by ``broken_tasks()``; the
others work.
"""

from __future__ import annotations

import importlib
import threading
from importlib.metadata import entry_points

from ..errors import TorchinferError
from .base import TaskManifest, TaskOption

ENTRY_POINT_GROUP = "torchinfer.tasks"
# the built-in manifests, in the order commands and menus list them
BUILT_IN = ("torchinfer.manifests.classify:MANIFEST", "torchinfer.manifests.segment:MANIFEST",
            "torchinfer.manifests.detect:MANIFEST", "torchinfer.manifests.multi:MANIFEST",
            "torchinfer.manifests.depth:MANIFEST", "torchinfer.manifests.embed:MANIFEST")

# re-entrant: importing a plugin's manifest may import modules that ask for the tasks
_lock = threading.RLock()
_built_in: dict[str, TaskManifest] | None = None
_registered: dict[str, TaskManifest] = {}
_plugins: dict[str, TaskManifest] | None = None
_broken: dict[str, str] = {}


def register_task(manifest: TaskManifest) -> TaskManifest:
    """Add ``manifest``'s task for this process; a name taken by another task is refused."""
    if not isinstance(manifest, TaskManifest):
        raise TorchinferError(f"{manifest!r} is not a torchinfer TaskManifest")
    with _lock:
        known = {**_load_built_in(), **_load_plugins(), **_registered}
        if manifest.name in known and known[manifest.name] != manifest:
            raise TorchinferError(f"a task named {manifest.name!r} is registered already")
        _registered[manifest.name] = manifest
    return manifest


def task_names() -> tuple[str, ...]:
    """Every task: the built-in ones in their order, then the others by name."""
    with _lock:
        built_in = _load_built_in()
        others = sorted({*_load_plugins(), *_registered} - set(built_in))
    return (*built_in, *others)


def is_task(name: str) -> bool:
    """Whether ``name`` is a task. Plugins are looked for only when it is not built in or
    registered: a model registered for a built-in task while a module is imported never
    imports a plugin (whose own imports could need that module)."""
    with _lock:
        if name in _load_built_in() or name in _registered:
            return True
        return name in _load_plugins()


def task_manifest(name: str) -> TaskManifest:
    """The manifest of task ``name``; a TorchinferError naming the known tasks otherwise."""
    with _lock:
        found = _registered.get(name) or _load_built_in().get(name) or _load_plugins().get(name)
        broken = _broken.get(name)
    if found is not None:
        return found
    if broken is not None:
        raise TorchinferError(broken)
    raise TorchinferError(f"unknown task {name!r}: use one of {', '.join(task_names())}")


def manifests() -> tuple[TaskManifest, ...]:
    return tuple(task_manifest(name) for name in task_names())


def accepted_options(name: str) -> dict[str, TaskOption]:
    """The options task ``name`` takes: its own, and, for a task that gives its heads' options
    once for every head (multi-head models), those of every task a head may have."""
    manifest = task_manifest(name)
    found = {o.name: o for o in manifest.options}
    if manifest.takes_head_options:
        for other in manifests():
            if other.head:
                for option in other.options:
                    found.setdefault(option.name, option)
    return found


def broken_tasks() -> tuple[str, ...]:
    """Why each task plugin that could not be imported is missing, one line each."""
    with _lock:
        _load_plugins()
        return tuple(_broken.values())


def forget_plugins() -> None:
    """Look for entry points again, and drop tasks registered in code (tests; after installing
    a package in this process)."""
    global _plugins
    with _lock:
        _plugins = None
        _broken.clear()
        _registered.clear()


def _load(target: str) -> TaskManifest:
    module, _, attribute = target.partition(":")
    found = getattr(importlib.import_module(module), attribute)
    if not isinstance(found, TaskManifest):
        raise TypeError(f"{target} is a {type(found).__name__}, not a TaskManifest")
    return found


def _load_built_in() -> dict[str, TaskManifest]:
    global _built_in
    if _built_in is None:
        _built_in = {m.name: m for m in map(_load, BUILT_IN)}
    return _built_in


def _load_plugins() -> dict[str, TaskManifest]:
    global _plugins
    if _plugins is None:
        # filled in place: a plugin's import that asks for the tasks sees those found so far
        _plugins = found = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:  # someone else's code: whatever it raises, the task is not usable
                manifest = _load(ep.value)
                if manifest.name != ep.name:
                    raise TypeError(f"its manifest is named {manifest.name!r}")
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [""])[0]
                _broken[ep.name] = (f"task {ep.name!r} ({ep.value}) cannot be imported: "
                                    f"{type(exc).__name__}: {first}")
                continue
            if ep.name in _load_built_in():
                _broken[ep.name] = f"task {ep.name!r} ({ep.value}) would replace a built-in task"
                continue
            found[ep.name] = manifest
    return _plugins
