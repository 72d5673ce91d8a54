"""Which architectures can be built by name, and for which task.

Two kinds of names: torchvision's registry (``mobilenet_v2``, ``deeplabv3_resnet50``,
``fasterrcnn_resnet50_fpn``...) and a user's own factory as an import path
``package.module:factory``.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

import torchvision
from torch import nn
from torchvision.models import get_model_builder, get_model_weights

from ..errors import ModelNotFoundError

TASKS = ("classify", "segment", "detect")


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


def list_models(task: str | None = None) -> list[ModelEntry]:
    if task is not None and task not in TASKS:
        raise ModelNotFoundError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    entries = []
    for t, names in _names_by_task().items():
        if task is not None and t != task:
            continue
        for name in names:
            entries.append(_entry(name, t))
    from .bundled import BUNDLED, bundled_path

    entries += [ModelEntry(name, t, ("bundled",), None) for name, t in BUNDLED.items()
                if (task is None or t == task) and bundled_path(name) is not None]
    return entries


def _entry(name: str, task: str) -> ModelEntry:
    try:
        enum = get_model_weights(name)
    except ValueError:  # an architecture without published weights
        return ModelEntry(name, task, (), None)
    default = enum.DEFAULT
    names = [f"{enum.__name__}.{default.name}"] + [
        f"{enum.__name__}.{w.name}" for w in enum if w is not default]
    return ModelEntry(name, task, tuple(names), default.meta.get("num_params"))


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
