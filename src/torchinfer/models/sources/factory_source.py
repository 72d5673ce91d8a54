"""Any factory as an import path ``package.module:factory``, typed by the user: importing it
runs the user's own code, which is why only a name given by the user (never one read from a
file) is taken this way."""

from __future__ import annotations

from ..building import build_fitting, finish
from ..loaded import LoadedModel
from ..registry import import_factory
from .base import ModelSource, SourceRequest


class FactorySource(ModelSource):
    name = "factory"

    def recognises(self, spec: str) -> bool:
        return ":" in spec

    def load(self, spec: str, request: SourceRequest) -> LoadedModel:
        factory = import_factory(spec)
        built = build_fitting(factory, request.model_kwargs, request.num_classes,
                              request.weights, request.strict, request.trust)
        return finish(built, spec, None, request.weights)
