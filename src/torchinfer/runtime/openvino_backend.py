"""OpenVINO on the CPU: the model converted once to IR (kept in the cache under the model's
stamp), compiled in fp32 (``INFERENCE_PRECISION_HINT=f32``) or, where the CPU has native
bf16, in bf16; threads as the streamer's plan says (``OpenVinoModule.set_threads``).

int8: NNCF's post-training quantisation of the IR on the user's calibration images (only
when a calibration folder is given: the quantisation ranges come from them), kept in the cache
under the model's and the folder's stamps. Like every candidate it is then verified against
fp32 on the photographs and used only where its decisions agree."""

from __future__ import annotations

import importlib.util
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import LoadedModel
from ..models.openvino import OpenVinoModule, import_openvino, load_openvino_model, openvino_has_bf16
from .backend import Backend, BackendError, BuildRequest
from .ort_backend import exported_file

_convert_lock = threading.RLock()  # two predictors converting the same model: one writes


class OpenVinoBackend(Backend):
    name = "openvino"
    layout = "NCHW"
    requires = ("openvino", "openvino")
    file_suffixes = (".xml",)

    def precisions(self, device: torch.device) -> tuple[str, ...]:
        if device.type != "cpu":
            return ()  # torchinfer drives OpenVINO's CPU plugin only
        int8 = ("int8",) if importlib.util.find_spec("nncf") is not None else ()
        return ("fp32", "bf16", *int8) if openvino_has_bf16() else ("fp32", *int8)

    def build(self, request: BuildRequest) -> nn.Module:
        if request.precision not in self.precisions(request.device):
            can = " or ".join(self.precisions(request.device)) or "nothing"
            raise BackendError(f"openvino runs {can} on this {request.device.type}, not "
                               f"{request.precision}")
        if request.precision == "int8":
            return self._int8(request)
        if isinstance(request.module, OpenVinoModule):  # an IR file: compile it again
            return OpenVinoModule(request.module.ov_model, request.module.source,
                                  request.precision)
        path = self._ir(request)
        return OpenVinoModule(import_openvino().Core().read_model(str(path)), str(path),
                              request.precision)

    def _ir(self, request: BuildRequest) -> Path:
        """The model's IR in the cache, converted the first time (verified per precision by
        the runtime, not here)."""
        path = exported_file(request, "openvino", ".xml", tag="ir")
        with _convert_lock:
            if not path.is_file():
                from ..exporters.openvino import convert_to_openvino

                save(convert_to_openvino(request.loaded, request.task), path)
        return path

    def _int8(self, request: BuildRequest) -> nn.Module:
        if request.calibration is None or request.calibration_stamp is None:
            raise BackendError("int8 needs calibration images: --calibration FOLDER "
                               "(ti.load(..., calibration=FOLDER)), a few hundred of the "
                               "pictures the model will see")
        ov = import_openvino()
        path = exported_file(request, "openvino", ".xml",
                             tag=f"int8-{request.calibration_stamp[:12]}")
        with _convert_lock:
            if not path.is_file():
                try:
                    import nncf
                except ImportError as exc:
                    raise BackendError("int8 needs nncf: pip install 'torchinfer[openvino]'"
                                       ) from exc
                source = request.module.ov_model if isinstance(request.module, OpenVinoModule) \
                    else ov.Core().read_model(str(self._ir(request)))
                arrays = [b.contiguous().numpy() for b in request.calibration()]
                quantized = nncf.quantize(source, nncf.Dataset(arrays),
                                          subset_size=len(arrays))
                save(quantized, path)
        return OpenVinoModule(ov.Core().read_model(str(path)), str(path), "int8")

    def load_file(self, path: Path, device: torch.device) -> LoadedModel:
        if device.type != "cpu":
            raise BackendError(f"{path}: torchinfer runs OpenVINO IR files on the CPU only "
                               f"(asked for {device})")
        return load_openvino_model(path)


def save(model: Any, path: Path) -> None:
    """Write an IR where readers never see half of it: the .bin first, then the .xml."""
    ov = import_openvino()
    path.parent.mkdir(parents=True, exist_ok=True)
    # a name of this process's own: Ray workers or server processes on one machine may
    # convert the same model at once (the lock above is per process); the last one wins
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial.xml")
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))
    tmp.replace(path)
