"""Every task in one place: ``task_spec(name)`` joins a task's manifest (``manifests``: its
options, columns, OIP outputs, read without torch) with the implementation the manifest names
(``spec.TaskImplementation``: how it predicts, preprocesses by default, exports, evaluates,
prints and draws), so no other module keeps a table or an if/elif keyed by task name.

    spec = task_spec("detect")
    predictor = spec.predictor_for(loaded, conf=0.3)     # the kind that runs this model
    report = spec.evaluator(predictor, spec.read_dataset("data/coco"))
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..errors import TorchinferError
from ..manifests import TaskManifest, accepted_options, task_manifest, task_names
from ..models import LoadedModel, PreprocessConfig
from ..results import Result
from .base import Predictor
from .spec import TaskImplementation


@dataclass(frozen=True)
class TaskSpec:
    """A task's manifest and its implementation, read as one."""

    manifest: TaskManifest
    implementation: TaskImplementation

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def columns(self) -> tuple[str, ...]:
        return self.manifest.columns

    @property
    def agreement(self) -> str | None:
        return self.manifest.agreement

    @property
    def options(self) -> tuple[str, ...]:
        """The keywords of the task's own, beyond those every predictor takes."""
        return tuple(accepted_options(self.name))

    # the implementation's, read through the spec
    @property
    def result(self) -> type[Result]:
        return self.implementation.result

    @property
    def predictors(self) -> tuple[type[Predictor], ...]:
        return self.implementation.predictors

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.implementation.preprocess

    @property
    def output_name(self) -> str:
        return self.implementation.output_name

    @property
    def read_dataset(self) -> Callable[..., Any]:
        return self.implementation.read_dataset

    @property
    def evaluator(self) -> Callable[..., Any]:
        return self.implementation.evaluator

    @property
    def evaluation_options(self) -> Mapping[str, Any]:
        return self.implementation.evaluation_options

    @property
    def describe(self) -> Callable[[Any], tuple[str, ...]]:
        return self.implementation.describe

    @property
    def draw(self) -> Callable[[Image.Image, Any], Image.Image]:
        return self.implementation.draw

    def predictor_class(self, model: LoadedModel, **options: Any) -> type[Predictor]:
        """The predictor class that runs ``model`` with ``options``."""
        return self.implementation.predictor_class(model, options)

    def predictor_for(self, model: LoadedModel, **options: Any) -> Predictor:
        """The predictor that runs ``model``, built with ``options`` (device, batch_size...)."""
        return self.predictor_class(model, **options)(model, **options)


_lock = threading.Lock()
_specs: dict[TaskManifest, TaskSpec] = {}


def task_spec(name: str) -> TaskSpec:
    """The spec of task ``name``: its implementation is imported on first use. A
    TorchinferError names the known tasks, or says why a plugin's code cannot be imported."""
    manifest = task_manifest(name)
    with _lock:
        found = _specs.get(manifest)
    if found is not None:
        return found
    target = manifest.implementation
    module, _, attribute = target.partition(":")
    try:  # a plugin's code is someone else's: whatever it raises, the task cannot run
        implementation = getattr(importlib.import_module(module), attribute)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise TorchinferError(f"task {name!r}: its implementation {target} cannot be imported: "
                              f"{type(exc).__name__}: {first}") from exc
    if not isinstance(implementation, TaskImplementation):
        raise TorchinferError(f"task {name!r}: {target} is a {type(implementation).__name__}, "
                              "not a torchinfer TaskImplementation")
    _check_request_options(manifest, implementation)
    with _lock:
        return _specs.setdefault(manifest, TaskSpec(manifest, implementation))


def _check_request_options(manifest: TaskManifest, implementation: TaskImplementation) -> None:
    """Every predictor of the task takes its per-request options in ``postprocess``, so a
    request's option is never silently ignored."""
    wanted = [o.name for o in manifest.options if o.per_request]
    for kind in implementation.predictors:
        params = inspect.signature(kind.postprocess).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            continue
        missing = [name for name in wanted if name not in params]
        if missing:
            raise TorchinferError(f"task {manifest.name!r}: {kind.__name__}.postprocess does not "
                                  f"take its per-request option(s) {', '.join(missing)}")


def task_options(name: str) -> tuple[str, ...]:
    """The options of task ``name``'s own (``top_k`` for classify...)."""
    return task_spec(name).options


def task_of_result(result: Result) -> TaskSpec:
    """The spec of the task whose result ``result`` is."""
    for name in task_names():
        spec = task_spec(name)
        if type(result) is spec.result:
            return spec
    raise TorchinferError(f"no task gives a {type(result).__name__}")

