"""What this machine offers for inference: the seed's first snippet (versions, CUDA), as data."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any

import torch
import torchvision

from ..runtime.cpu import describe_cpu, native_bf16
from ..runtime.registry import backend_names, get_backend


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_build": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_devices": [],
        "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "onnxruntime": _version("onnxruntime"),
        "onnxruntime_providers": _ort_providers(),
        "onnx": _version("onnx"),
        "openvino": _version("openvino"),
        "nncf": _version("nncf"),
        # what the default's candidates depend on: the CPU's vector units (bf16 is measured
        # only where it runs natively) and the backends that can run here, plugins included
        "cpu": describe_cpu(),
        "native_bf16": native_bf16(),
        "backends": {b: _unavailable(b) or "available" for b in backend_names()},
    }
    if info["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            info["cuda_devices"].append({
                "index": i, "name": props.name,
                "memory_gib": round(props.total_memory / 2**30, 1),
                "capability": f"{props.major}.{props.minor}",
                "bf16": torch.cuda.is_bf16_supported() if i == torch.cuda.current_device() else None,
            })
    return info


def _unavailable(name: str) -> str | None:
    try:
        return get_backend(name).unavailable()
    except Exception as exc:  # a plugin that cannot even be imported
        return f"cannot be loaded: {exc}"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _ort_providers() -> list[str] | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return list(onnxruntime.get_available_providers())
