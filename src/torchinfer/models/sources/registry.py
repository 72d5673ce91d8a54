"""The table of model sources, asked in order: the first that recognises a spec builds it.

The built-in sources are imported on first use, one module each. The order puts the exact
forms first and the catch-all last: a bundled name, a torchvision name, a timm or Hugging Face
folder or hub id, a whole-model file, a registered name, then plugins, and last an import path
``pkg.module:factory`` (anything with a colon the others left). A third-party package adds a
source through the ``torchinfer.sources`` entry-point group:

    [project.entry-points."torchinfer.sources"]
    mysource = "mypkg.source:MySource"     # a ModelSource subclass or instance

after which ``-m`` values it recognises work in ``predict``, ``eval``, ``export``, the server
and Ray with no change here. In code, ``register_source(MySource())`` does the same for the
running process.
"""

from __future__ import annotations

import importlib
import threading
from importlib.metadata import entry_points

from ...errors import ModelNotFoundError, TorchinferError
from ..registry import unknown_model_message
from .base import ModelSource

ENTRY_POINT_GROUP = "torchinfer.sources"
# name -> "module:attribute" of the built-in sources, in the order they are asked
BUILT_IN = {
    "bundled": "torchinfer.models.sources.bundled_source:BundledSource",
    "torchvision": "torchinfer.models.sources.torchvision_source:TorchvisionSource",
    "timm": "torchinfer.models.sources.timm_source:TimmSource",
    "transformers": "torchinfer.models.sources.transformers_source:TransformersSource",
    "hub-missing": "torchinfer.models.sources.hub_missing:MissingHubSource",
    "file": "torchinfer.models.sources.file_source:FileSource",
    "registered": "torchinfer.models.sources.registered_source:RegisteredSource",
}
# asked after the plugins: it takes any ``a:b`` the others left
LAST = {"factory": "torchinfer.models.sources.factory_source:FactorySource"}

_lock = threading.Lock()
_sources: dict[str, ModelSource] = {}  # the ones built so far, by name
_plugins: dict[str, str] | None = None  # entry points found: name -> "module:attribute"


def register_source(source: ModelSource | type[ModelSource]) -> ModelSource:
    """Add ``source`` (an instance or a class) to the table, asked after the built-in ones
    and before the import-path catch-all; a name taken is refused."""
    instance = source() if isinstance(source, type) else source
    if not isinstance(instance, ModelSource):
        raise TorchinferError(f"{source!r} is not a torchinfer ModelSource")
    with _lock:
        taken = instance.name in _sources or instance.name in BUILT_IN or instance.name in LAST
        if taken and _sources.get(instance.name) is not instance:
            raise TorchinferError(f"a model source named {instance.name!r} is registered already")
        _sources[instance.name] = instance
    return instance


def source_names() -> list[str]:
    """Every source, in the order they are asked."""
    plugins = sorted(n for n in {*_entry_points(), *_sources} if n not in BUILT_IN and n not in LAST)
    return [*BUILT_IN, *plugins, *LAST]


def get_source(name: str) -> ModelSource:
    """The source called ``name``."""
    with _lock:
        if name in _sources:
            return _sources[name]
    target = BUILT_IN.get(name) or LAST.get(name) or _entry_points().get(name)
    if target is None:
        raise TorchinferError(f"unknown model source {name!r}: use {', '.join(source_names())}")
    module_name, _, attribute = target.partition(":")
    try:  # a plugin is someone else's code: whatever it raises, it is not usable
        loaded = getattr(importlib.import_module(module_name), attribute)
        instance = loaded() if isinstance(loaded, type) else loaded
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise TorchinferError(f"model source {name!r} ({target}) cannot be imported: "
                              f"{type(exc).__name__}: {first}") from exc
    if not isinstance(instance, ModelSource) or instance.name != name:
        raise TorchinferError(f"model source {name!r} ({target}) is not a torchinfer "
                              f"ModelSource named {name!r}")
    with _lock:
        return _sources.setdefault(name, instance)


def find_source(spec: str) -> ModelSource:
    """The first source that recognises ``spec``; ModelNotFoundError when none does."""
    broken = []
    for name in source_names():
        try:
            source = get_source(name)
        except TorchinferError as exc:  # a plugin that cannot be imported: the others still work
            if name in BUILT_IN or name in LAST:
                raise
            broken.append(str(exc))
            continue
        if source.recognises(spec):
            return source
    raise ModelNotFoundError(" ".join([unknown_model_message(spec), *broken]))


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
        for name in [n for n in _sources if n not in BUILT_IN and n not in LAST]:
            del _sources[name]
