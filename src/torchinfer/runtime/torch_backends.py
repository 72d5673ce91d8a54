"""The backends that run on PyTorch itself: eager (the reference) and frozen TorchScript."""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from ..models.onnx import OrtModule
from .backend import DTYPES, Backend, BackendError, BuildRequest, CastIO


def torch_precisions(device: torch.device) -> tuple[str, ...]:
    """fp16 has no fast CPU kernels; bf16 runs everywhere (natively only on some CPUs, which
    ``select`` checks before it measures bf16 by default)."""
    return ("fp32", "bf16", "fp16") if device.type != "cpu" else ("fp32", "bf16")


def refuse_foreign(request: BuildRequest, name: str) -> None:
    if isinstance(request.module, OrtModule):
        raise BackendError(f"{request.loaded.name} is an ONNX file: it runs on onnxruntime "
                           f"only, not {name}")
    if request.precision == "fp16" and request.device.type == "cpu":
        raise BackendError("fp16 on the CPU has no fast kernels (use bf16, or fp16 on CUDA)")
    if request.precision not in torch_precisions(request.device):
        raise BackendError(f"{name} runs {', '.join(torch_precisions(request.device))}, not "
                           f"{request.precision} (int8: --backend openvino with --calibration)")


def cast(module: nn.Module, precision: str) -> nn.Module:
    return copy.deepcopy(module).to(DTYPES[precision])


class TorchBackend(Backend):
    """Eager PyTorch: the model as loaded (float32 is the reference every other candidate is
    compared with); a reduced precision runs a cast copy behind a float32 interface."""

    name = "torch"

    def precisions(self, device: torch.device) -> tuple[str, ...]:
        return torch_precisions(device)

    def build(self, request: BuildRequest) -> nn.Module:
        refuse_foreign(request, self.name)
        if request.precision == "fp32":
            return request.module
        return CastIO(cast(request.module, request.precision), DTYPES[request.precision])


class TorchScriptBackend(Backend):
    """Traced, frozen (weights become constants, so BatchNorm folds into convolutions) and
    ``optimize_for_inference``: oneDNN-prepacked convolutions on the CPU."""

    name = "torchscript"

    def precisions(self, device: torch.device) -> tuple[str, ...]:
        return torch_precisions(device)

    def build(self, request: BuildRequest) -> nn.Module:
        refuse_foreign(request, self.name)
        precision, module = request.precision, request.module
        source = module if precision == "fp32" else cast(module, precision)
        wrapped = CastIO(source, DTYPES[precision]).eval()
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)  # "deprecated": still the fastest here
            traced = torch.jit.trace(wrapped, request.example.clone(), check_trace=False)
            frozen = torch.jit.freeze(traced.eval())
            return torch.jit.optimize_for_inference(frozen)
