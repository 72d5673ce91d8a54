"""Which architectures can be built by name, and for which task.

Three kinds of names:

- torchvision's registry (``mobilenet_v2``, ``deeplabv3_resnet50``, ``fasterrcnn_resnet50_fpn``...);
- torchinfer's own registry: factories decorated with :func:`register_model` (the bundled
  shapes models, and a user's own models registered from Python), found by their name or their
  import path ``package.module:factory``;
- any factory as an import path ``package.module:factory``, when the user typed it: importing it
  runs the user's own code.

A name read from a *file* (a safetensors header, ONNX or TorchScript metadata) is untrusted:
:func:`resolve_architecture` builds it only from the first two registries, which hold code that
is already imported, and imports anything else only when the caller opted in with ``trust_code``.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

import torchvision
from torch import nn
from torchvision.models import get_model_builder, get_model_weights

from ..errors import ModelNotFoundError, UntrustedCodeError
from ..manifests import is_task, task_names
from .config import PreprocessConfig


def _task_modules() -> dict[str, ModuleType]:
    return {
        "classify": torchvision.models,
        "segment": torchvision.models.segmentation,
        "detect": torchvision.models.detection,
    }


@dataclass(frozen=True)
class ModelEntry:
    name: str
    task: str
    weights: tuple[str, ...]  # names of torchvision's pretrained weights, DEFAULT first
    num_params: int | None  # from the DEFAULT weights' metadata, when there are weights

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "weights": list(self.weights),
                "num_params": self.num_params}


@cache
def _names_by_task() -> dict[str, tuple[str, ...]]:
    return {task: tuple(sorted(torchvision.models.list_models(module=mod)))
            for task, mod in _task_modules().items()}


def torchvision_task(name: str) -> str | None:
    """The task a torchvision model name belongs to, or None if it is not one."""
    for task, names in _names_by_task().items():
        if name in names:
            return task
    return None


def torchvision_entries(task: str | None = None) -> list[ModelEntry]:
    """torchvision's models (of ``task``), with their published weights."""
    if task is not None and not is_task(task):
        raise ModelNotFoundError(f"unknown task {task!r}: use one of {', '.join(task_names())}")
    return [_entry(name, t) for t, names in _names_by_task().items()
            if task is None or t == task for name in names]


def _entry(name: str, task: str) -> ModelEntry:
    try:
        enum = get_model_weights(name)
    except ValueError:  # an architecture without published weights
        return ModelEntry(name, task, (), None)
    default = enum.DEFAULT
    names = [f"{enum.__name__}.{default.name}"] + [
        f"{enum.__name__}.{w.name}" for w in enum if w is not default]
    return ModelEntry(name, task, tuple(names), default.meta.get("num_params"))


@dataclass(frozen=True)
class RegisteredModel:
    """A factory in torchinfer's registry: its name, its task and where it lives."""

    name: str
    task: str | None
    factory: Callable[..., nn.Module]
    # what feeds the model and names its outputs, as torchvision's weights carry transforms
    # and meta (None: the task's defaults, class numbers)
    preprocess: PreprocessConfig | None = None
    labels: tuple[str, ...] | None = None

    @property
    def import_path(self) -> str:
        return f"{self.factory.__module__}:{self.factory.__qualname__}"


# Filled by @register_model as modules that define models are imported; read-only otherwise.
_REGISTERED: dict[str, RegisteredModel] = {}


def register_model(name: str | None = None, *, task: str | None = None,
                   preprocess: PreprocessConfig | Mapping[str, Any] | None = None,
                   labels: Sequence[str] | None = None
                   ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: make a model factory buildable by name, and trusted when a file names it.

        @torchinfer.register_model(task="classify", labels=["cat", "dog"],
                                   preprocess={"resize_size": [160], "crop_size": [144, 144],
                                               "mean": [0.5] * 3, "std": [0.5] * 3})
        def my_net(num_classes: int = 2) -> nn.Module: ...

    ``preprocess`` and ``labels`` travel with the model, as torchvision's weights carry their
    transforms and categories: a run by name feeds it what it was trained on (a weights file
    whose own card says otherwise wins; labels apply while the head keeps their count).

    ``load_model("my_net")`` then builds it, and a weights file whose metadata says
    ``architecture: my_net`` (or ``mypkg.nets:my_net``) loads without ``trust_code``: the code
    is yours and already imported. Names must be new (torchvision's included).
    """
    if task is not None and not is_task(task):
        raise ValueError(f"unknown task {task!r}: use one of {', '.join(task_names())}")
    recipe = preprocess if preprocess is None or isinstance(preprocess, PreprocessConfig) \
        else PreprocessConfig.from_dict(preprocess)
    if labels is not None and (isinstance(labels, str) or not all(isinstance(x, str) for x in labels)):
        raise ValueError("labels must be a sequence of class names")

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or factory.__name__
        if key in _REGISTERED or torchvision_task(key) is not None:
            raise ValueError(f"a model named {key!r} is already registered")
        _REGISTERED[key] = RegisteredModel(key, task, factory, recipe,
                                           tuple(labels) if labels is not None else None)
        return factory

    return decorate


def registered_model(name: str) -> RegisteredModel | None:
    """The registered model called ``name``, or whose factory's import path is ``name``."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    return next((m for m in _REGISTERED.values() if m.import_path == name), None)


def registered_models() -> list[RegisteredModel]:
    return list(_REGISTERED.values())


def resolve_architecture(spec: str, *, trust_code: bool, source: str) -> Callable[..., nn.Module]:
    """The builder for an architecture named by a file (``source``): a registered model or a
    torchvision name; any other import path only with ``trust_code``."""
    entry = registered_model(spec)
    if entry is not None:
        return entry.factory
    module, _, attr = spec.partition(":")
    # torchvision's builders by import path too (torchvision.models:resnet50): looked up by
    # name in torchvision's registry, never imported from the path
    name = attr if module.split(".")[:2] == ["torchvision", "models"] and attr else spec
    if torchvision_task(name) is not None:
        return torchvision_builder(name)
    if not trust_code:
        raise UntrustedCodeError(
            f"{source} names architecture {spec!r}, which is neither a torchvision model nor a "
            f"registered one; building it would import and call {spec}, code the file chose. "
            "If you trust the file, pass --trust-code (Python: trust_code=True), or register "
            "the factory with @torchinfer.register_model")
    return import_factory(spec)


def torchvision_builder(name: str) -> Callable[..., nn.Module]:
    return get_model_builder(name)


def import_factory(spec: str) -> Callable[..., nn.Module]:
    """Resolve ``package.module:factory`` to a callable, with errors that say which part failed."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ModelNotFoundError(f"{spec!r}: expected 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelNotFoundError(f"{spec!r}: cannot import {module_name!r} ({exc})") from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise ModelNotFoundError(f"{spec!r}: {module_name!r} has no attribute {attr!r}") from exc
    if not callable(target):
        raise ModelNotFoundError(f"{spec!r}: {attr!r} is a {type(target).__name__}, not callable")
    return target


def unknown_model_message(name: str) -> str:
    all_names = [n for names in _names_by_task().values() for n in names]
    close = difflib.get_close_matches(name, all_names, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return (f"unknown model {name!r}: not a torchvision model, an existing file, or a "
            f"'package.module:factory' path.{hint} (`torchinfer models` lists the names)")
