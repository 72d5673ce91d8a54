"""ONNX Runtime: the model exported once to ONNX (verified by ``export_onnx``), kept in the
cache under the model's stamp, and run in a session sized by the streamer's plan."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..models.onnx import OrtModule
from ..models.onnx_session import PREDICTOR_SESSION, make_session
from .backend import Backend, BackendError, BuildRequest
from .memo import cache_dir, content_fingerprint


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    layout = "NCHW"  # a session takes a plain array: the batch is reordered once, in uint8
    requires = ("onnxruntime", "onnx")
    # .onnx files are read by models.loader (inspect and export read them too), not here

    def precisions(self, device: torch.device) -> tuple[str, ...]:
        if device.type == "cpu":
            return ("fp32",)
        import onnxruntime

        on_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        return ("fp32", "fp16") if device.type == "cuda" and on_cuda else ()

    def build(self, request: BuildRequest) -> nn.Module:
        if request.precision not in self.precisions(request.device):
            raise BackendError(f"onnxruntime runs {' or '.join(self.precisions(request.device))} "
                               f"on {request.device.type}, not {request.precision}")
        if isinstance(request.module, OrtModule):
            return request.module  # an .onnx file: already a session
        path = exported_file(request, "onnx", ".onnx")
        if not path.is_file():  # export_onnx raises, leaving nothing at path, if it differs
            from ..exporters.onnx import export_onnx

            export_onnx(replace(request.loaded, task=request.task), path,
                        half=request.precision == "fp16")
        device = request.device
        ort_device = "cpu" if device.type == "cpu" else f"cuda:{device.index or 0}"
        return OrtModule(make_session(path, device=ort_device, **PREDICTOR_SESSION), str(path))


def exported_file(request: BuildRequest, folder: str, suffix: str, tag: str | None = None
                  ) -> Path:
    """Where the export of ``request``'s model is kept (``tag``: what else tells exports
    apart, by default the precision): named by the model's stamp, or (a model with no file
    behind it) by a hash of its weights."""
    key = request.stamp or content_fingerprint(request.loaded, request.task)
    name = request.loaded.name.replace("/", "_")
    return cache_dir() / folder / f"{name}-{key[:16]}-{tag or request.precision}{suffix}"
