"""Models registered with ``@register_model``, by name or by their factory's import path,
with the preprocessing and labels the registration gives."""

from __future__ import annotations

from ..building import build_fitting, finish
from ..loaded import LoadedModel
from ..registry import registered_model
from .base import ModelSource, SourceRequest


class RegisteredSource(ModelSource):
    name = "registered"

    def recognises(self, spec: str) -> bool:
        return registered_model(spec) is not None

    def task(self, spec: str) -> str | None:
        entry = registered_model(spec)
        return entry.task if entry is not None else None

    def load(self, spec: str, request: SourceRequest) -> LoadedModel:
        entry = registered_model(spec)
        assert entry is not None  # recognised
        built = build_fitting(entry.factory, request.model_kwargs, request.num_classes,
                              request.weights, request.strict, request.trust)
        built.preprocess = built.preprocess or entry.preprocess
        if built.labels is None and entry.labels is not None and \
                built.num_classes in (None, len(entry.labels)):
            built.labels = list(entry.labels)  # the registration's head: its names
        return finish(built, entry.name, entry.task, request.weights)
