"""The models that ship inside the package (``shapes_classifier``...): their file describes
them (``models.bundled``)."""

from __future__ import annotations

from dataclasses import replace

from ...errors import WeightsError
from ..building import load_whole_model_file
from ..bundled import BUNDLED, bundled_path
from ..loaded import LoadedModel
from .base import ModelSource, SourceRequest


class BundledSource(ModelSource):
    name = "bundled"

    def recognises(self, spec: str) -> bool:
        return bundled_path(spec) is not None

    def task(self, spec: str) -> str | None:
        return BUNDLED.get(spec)

    def holds_weights(self, spec: str) -> bool:
        return True

    def load(self, spec: str, request: SourceRequest) -> LoadedModel:
        if request.weights is not None:
            raise WeightsError(f"{spec} is a bundled model with its own weights (got {request.weights})")
        path = bundled_path(spec)
        assert path is not None  # recognised
        loaded = load_whole_model_file(path, request.trust, request.num_classes, request.strict,
                                       request.model_kwargs)
        return replace(loaded, name=spec)
