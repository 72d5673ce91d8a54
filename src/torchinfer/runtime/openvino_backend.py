"""OpenVINO on the CPU: the model converted once to IR (kept in the cache under the model's
stamp), compiled in fp32 (``INFERENCE_PRECISION_HINT=f32``) or, where the CPU has native
bf16, in bf16; threads as the streamer's plan says (``OpenVinoModule.set_threads``)."""

from __future__ import annotations

import threading
from pathlib import Path

import torch
from torch import nn

from ..models import LoadedModel
from ..models.openvino import OpenVinoModule, import_openvino, load_openvino_model, openvino_has_bf16
from .backend import Backend, BackendError, BuildRequest
from .ort_backend import exported_file

_convert_lock = threading.Lock()  # two predictors converting the same model: one writes


class OpenVinoBackend(Backend):
    name = "openvino"
    layout = "NCHW"
    requires = ("openvino", "openvino")
    file_suffixes = (".xml",)

    def precisions(self, device: torch.device) -> tuple[str, ...]:
        if device.type != "cpu":
            return ()  # torchinfer drives OpenVINO's CPU plugin only
        return ("fp32", "bf16") if openvino_has_bf16() else ("fp32",)

    def build(self, request: BuildRequest) -> nn.Module:
        if request.precision not in self.precisions(request.device):
            can = " or ".join(self.precisions(request.device)) or "nothing"
            raise BackendError(f"openvino runs {can} on this {request.device.type}, not "
                               f"{request.precision}")
        if isinstance(request.module, OpenVinoModule):  # an IR file: compile it again
            return OpenVinoModule(request.module.ov_model, request.module.source,
                                  request.precision)
        ov = import_openvino()
        path = exported_file(request, "openvino", ".xml", tag="ir")
        with _convert_lock:
            if not path.is_file():  # verified per precision by the runtime, not here
                from ..exporters.openvino import convert_to_openvino

                model = convert_to_openvino(request.loaded, request.task)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.stem}.partial.xml")
                ov.save_model(model, str(tmp), compress_to_fp16=False)
                tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))
                tmp.replace(path)
        return OpenVinoModule(ov.Core().read_model(str(path)), str(path), request.precision)

    def load_file(self, path: Path, device: torch.device) -> LoadedModel:
        if device.type != "cpu":
            raise BackendError(f"{path}: torchinfer runs OpenVINO IR files on the CPU only "
                               f"(asked for {device})")
        return load_openvino_model(path)
