"""Turn a device string ("auto", "cpu", "cuda", "cuda:1", "mps") into a checked torch.device,
and count the cores this process may use."""

from __future__ import annotations

import os

import torch

from .errors import DeviceError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return the device to run on, refusing ones this machine does not have.

    "auto" prefers CUDA, then Apple's MPS, then the CPU. Asking for a device that is absent is an
    error rather than a silent fallback: a user who asked for a GPU and got the CPU would only
    notice from the timings.
    """
    if isinstance(device, torch.device):
        device = str(device)
    spec = device.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError as exc:
        raise DeviceError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} requested but CUDA is not available here "
                              f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(f"device {device!r} requested but only {count} CUDA device(s) exist")
        return dev
    if dev.type == "mps":
        if not _mps_available():
            raise DeviceError(f"device {device!r} requested but MPS is not available here")
        return dev
    raise DeviceError(f"unsupported device {device!r}: use auto, cpu, cuda, cuda:N or mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def usable_cpus() -> int:
    """The cores this process may run on (a container or taskset can allow fewer than
    os.cpu_count() reports): ONNX Runtime sessions and the runner's plan count the same."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
