"""A file that holds a whole model: TorchScript, ONNX (run by ONNX Runtime), a trusted pickle,
or weights whose metadata names their architecture (``building.load_whole_model_file``)."""

from __future__ import annotations

from pathlib import Path

from ...errors import TorchinferError, WeightsError
from ..building import load_whole_model_file
from ..loaded import LoadedModel
from ..onnx import load_onnx_model
from ..weights import read_weights
from .base import ModelSource, SourceRequest


class FileSource(ModelSource):
    name = "file"

    def recognises(self, spec: str) -> bool:
        return Path(spec).is_file()

    def task(self, spec: str) -> str | None:
        if Path(spec).suffix.lower() == ".onnx":
            return None  # read when it is loaded (its metadata, or the decoder's guess)
        try:
            return read_weights(spec).card.task
        except TorchinferError:
            return None  # its own error comes when it is loaded

    def holds_weights(self, spec: str) -> bool:
        return True

    def load(self, spec: str, request: SourceRequest) -> LoadedModel:
        path = Path(spec)
        if request.weights is not None:
            what = "an ONNX file" if path.suffix.lower() == ".onnx" else "a whole-model file"
            raise WeightsError(f"{spec} is {what}; it takes no separate weights "
                               f"(got {request.weights})")
        if path.suffix.lower() == ".onnx":
            return load_onnx_model(path)  # onnxruntime (an optional extra) is imported when called
        return load_whole_model_file(path, request.trust, request.num_classes, request.strict,
                                     request.model_kwargs)
