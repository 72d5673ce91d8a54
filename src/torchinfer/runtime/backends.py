"""Choosing what runs the model: eager PyTorch, frozen TorchScript or ONNX Runtime, in float32,
bfloat16 or float16, each checked against the float32 model before it is trusted.

A predictor asks for ``backend`` x ``precision``; ``build`` makes the candidate module (a drop-in
``nn.Module`` taking the prepared float32 batch and returning the main output in float32), and
``verify`` runs the candidate and the eager float32 model on the same real photographs,
preprocessed by the predictor itself, and compares every output element and every decision
(``torchinfer.verify``). A candidate beyond its precision's tolerance is refused with what
differs. ``backend="auto"`` builds and verifies every candidate, then ``pick_fastest`` times them
on the first real batch and keeps the fastest (measured, never assumed: which wins depends on
the model, the batch size and the machine; see BENCHMARKS.md).

Reduced precision changes answers a little by nature; it is opt-in, and the report says how
much it changed on the photographs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import TorchinferError
from ..models import LoadedModel
from ..models.onnx import OrtModule
from ..models.outputs import main_output
from ..tasks.registry import task_spec
from ..verify import BF16_TOLERANCE, FP16_TOLERANCE, FP32_TOLERANCE, Comparison, OutputCheck, Tolerance

BACKENDS = ("torch", "torchscript", "onnxruntime")
PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOLERANCES = {"fp32": FP32_TOLERANCE, "bf16": BF16_TOLERANCE, "fp16": FP16_TOLERANCE}


class BackendError(TorchinferError):
    """A backend cannot run this model, or computes something else than the float32 model."""


class CastIO(nn.Module):
    """Runs ``model`` in ``dtype`` behind a float32 interface: the predictor prepares float32
    and reads float32, whatever the model computes in. Returns the main output only (a
    segmentation dict's ``out``, a tuple's first element)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return main_output(self.model(x.to(self.dtype))).float()


@dataclass
class Candidate:
    """One way to run the model, once built (and verified)."""

    backend: str
    precision: str
    module: nn.Module | None  # None when it could not be built (see error)
    build_seconds: float = 0.0
    check: OutputCheck | None = None  # against the float32 eager model on real images
    ms_per_image: float | None = None  # measured by pick_fastest
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.precision}"

    @property
    def usable(self) -> bool:
        return self.module is not None and self.error is None and (
            self.check is None or self.check.passed)

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision,
                "build_seconds": round(self.build_seconds, 3),
                "ms_per_image": None if self.ms_per_image is None else round(self.ms_per_image, 3),
                "passed": None if self.check is None else self.check.passed,
                "check": None if self.check is None else self.check.describe(),
                "error": self.error}


@dataclass
class BackendReport:
    """What runs the model and why."""

    chosen: Candidate
    candidates: list[Candidate] = field(default_factory=list)
    reason: str = ""

    def summary(self) -> str:
        lines = [f"backend: {self.chosen.label} ({self.reason})"]
        for c in self.candidates:
            state = c.error or (c.check.describe() if c.check is not None else "not checked")
            speed = f"{c.ms_per_image:.2f} ms/img, " if c.ms_per_image is not None else ""
            lines.append(f"  {c.label:<20} {speed}{state}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen.label, "reason": self.reason,
                "candidates": [c.to_dict() for c in self.candidates]}


def check_choice(backend: str, precision: str) -> None:
    if backend not in (*BACKENDS, "auto"):
        raise BackendError(f"unknown backend {backend!r}: use auto, {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")


def candidates_for(backend: str, precision: str, device: torch.device) -> list[tuple[str, str]]:
    """(backend, precision) pairs to try: one, or for "auto" every backend that can run the
    precision on the device."""
    if backend != "auto":
        return [(backend, precision)]
    pairs = [("torch", precision), ("torchscript", precision)]
    if _onnxruntime_can(precision, device):
        pairs.append(("onnxruntime", precision))
    return pairs


def _onnxruntime_can(precision: str, device: torch.device) -> bool:
    try:
        import onnxruntime
    except ImportError:
        return False
    if precision == "bf16":
        return False
    on_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    return on_cuda if device.type == "cuda" else precision == "fp32" and device.type == "cpu"


# --- building ------------------------------------------------------------------------------

def build(loaded: LoadedModel, module: nn.Module, task: str, backend: str, precision: str,
          device: torch.device, example: torch.Tensor) -> Candidate:
    """The candidate module for ``backend`` x ``precision``; ``module`` is the float32 model as
    the predictor holds it (on ``device``, maybe channels_last), ``example`` a prepared batch."""
    t0 = time.perf_counter()
    try:
        if isinstance(module, OrtModule) and backend != "onnxruntime":
            raise BackendError(f"{loaded.name} is an ONNX file: it runs on onnxruntime only")
        if device.type == "cpu" and precision == "fp16":
            raise BackendError("fp16 on the CPU has no fast kernels (use bf16, or fp16 on CUDA)")
        if backend == "torch":
            built = module if precision == "fp32" else CastIO(_cast(module, precision),
                                                               DTYPES[precision])
        elif backend == "torchscript":
            built = _frozen_torchscript(module, precision, example)
        elif backend == "onnxruntime":
            built = module if isinstance(module, OrtModule) else _onnxruntime(
                loaded, task, precision, device)
        else:
            raise BackendError(f"unknown backend {backend!r}")
    except (BackendError, TorchinferError) as exc:
        return Candidate(backend, precision, None, time.perf_counter() - t0, error=str(exc))
    except Exception as exc:  # a tracer or runtime refusing this model: say which and why
        return Candidate(backend, precision, None, time.perf_counter() - t0,
                         error=f"{type(exc).__name__}: {_first_line(exc)}")
    return Candidate(backend, precision, built, time.perf_counter() - t0)


def _cast(module: nn.Module, precision: str) -> nn.Module:
    return copy.deepcopy(module).to(DTYPES[precision])


def _frozen_torchscript(module: nn.Module, precision: str, example: torch.Tensor) -> nn.Module:
    """Traced, frozen (weights become constants, so BatchNorm folds into convolutions) and
    ``optimize_for_inference``: oneDNN-prepacked convolutions on the CPU."""
    dtype = DTYPES[precision]
    source = module if precision == "fp32" else _cast(module, precision)
    wrapped = CastIO(source, dtype).eval()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # "deprecated": still the fastest here
        traced = torch.jit.trace(wrapped, example.clone(), check_trace=False)
        frozen = torch.jit.freeze(traced.eval())
        return torch.jit.optimize_for_inference(frozen)


def cache_dir() -> Path:
    """Where exported files are kept between runs: $TORCHINFER_CACHE or ~/.cache/torchinfer."""
    return Path(os.environ.get("TORCHINFER_CACHE") or Path.home() / ".cache" / "torchinfer")


def _onnxruntime(loaded: LoadedModel, task: str, precision: str,
                 device: torch.device) -> nn.Module:
    """Export once per model + weights + settings (the file name is their hash), verified by
    export_onnx on photographs; later runs load the cached file."""
    from ..exporters.onnx import export_onnx
    from ..models.onnx_session import PREDICTOR_SESSION, make_session

    if precision == "bf16":
        raise BackendError("onnxruntime runs fp32 or fp16, not bf16")
    path = cache_dir() / "onnx" / f"{loaded.name.replace('/', '_')}-{model_fingerprint(loaded, task, precision)}.onnx"
    if not path.is_file():  # export_onnx raises, leaving nothing at path, if it does not verify
        export_onnx(replace(loaded, task=task), path, half=precision == "fp16")
    ort_device = "cpu" if device.type == "cpu" else f"cuda:{device.index or 0}"
    return OrtModule(make_session(path, device=ort_device, **PREDICTOR_SESSION), str(path))


def model_fingerprint(loaded: LoadedModel, task: str, precision: str) -> str:
    """A hash of everything the exported file depends on: the weights' bytes, the
    architecture, the preprocessing (it fixes the input size), the precision and the versions
    of torch and torchinfer (the exporter's output changes with them)."""
    from .. import __version__

    h = hashlib.sha256()
    h.update(json.dumps([loaded.name, task, precision, loaded.preprocess.to_dict(),
                         torch.__version__, __version__, type(loaded.module).__qualname__]).encode())
    for key, tensor in loaded.module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


# --- verifying and choosing ----------------------------------------------------------------

def verify(candidate: Candidate, reference: nn.Module, batches: Sequence[torch.Tensor],
           task: str) -> Candidate:
    """Compare ``candidate`` with the float32 ``reference`` on ``batches`` (prepared real
    images); sets ``candidate.check``. The float32 eager model is the reference itself."""
    if candidate.module is None or (candidate.backend, candidate.precision) == ("torch", "fp32"):
        return candidate
    tolerance: Tolerance = TOLERANCES[candidate.precision]
    comparison = Comparison("output", tolerance, task_spec(task).agreement,
                            candidate=candidate.label)
    acc = comparison.start(len(batches[0]) if batches else 0)
    for batch in batches:
        with torch.inference_mode():
            ref = main_output(reference(batch)).float().cpu().numpy()
            try:
                got = main_output(candidate.module(batch)).float().cpu().numpy()
            except Exception as exc:  # a frozen shape, a missing kernel
                candidate.check = comparison.failed(len(batch), f"failed on input shape "
                                                    f"{tuple(batch.shape)}: {_first_line(exc)}")
                return candidate
        if got.shape != ref.shape:
            candidate.check = comparison.failed(len(batch), f"gave shape {got.shape} where "
                                                f"torch gave {ref.shape}")
            return candidate
        acc.add(ref, np.asarray(got, dtype=np.float32))
    candidate.check = acc.result()
    return candidate


def refusal(candidate: Candidate) -> str:
    """Why ``candidate`` cannot be used, for the error a user sees."""
    if candidate.error is not None:
        return f"backend {candidate.label} cannot run this model: {candidate.error}"
    assert candidate.check is not None
    allowed = TOLERANCES[candidate.precision].describe(candidate.label)
    return (f"backend {candidate.label} does not compute what the float32 model computes on "
            f"the verification photographs (allowed: {allowed}): {candidate.check.describe()}")


def pick_fastest(candidates: Sequence[Candidate], run: Callable[[nn.Module], Any],
                 images: int, repeats: int = 2) -> tuple[Candidate, str]:
    """Time each usable candidate on ``run`` (one real batch of ``images``): warm-up twice
    (TorchScript's profiling executor optimises on the second call), then the best of
    ``repeats``, interleaved so drifting machine load hits every candidate alike."""
    usable = [c for c in candidates if c.usable]
    if not usable:
        raise BackendError("no backend can run this model:\n" + "\n".join(
            f"  {refusal(c)}" for c in candidates))
    for c in usable:
        for _ in range(2):
            run(c.module)  # type: ignore[arg-type]
    best = {c.label: float("inf") for c in usable}
    for _ in range(repeats):
        for c in usable:
            t0 = time.perf_counter()
            run(c.module)  # type: ignore[arg-type]
            best[c.label] = min(best[c.label], time.perf_counter() - t0)
    for c in usable:
        c.ms_per_image = best[c.label] * 1000 / images
    winner = min(usable, key=lambda c: best[c.label])
    others = ", ".join(f"{c.label} {c.ms_per_image:.2f}" for c in usable if c is not winner)
    skipped = [c.label for c in candidates if not c.usable]
    reason = (f"fastest on the first batch of {images}: {winner.ms_per_image:.2f} ms/img"
              + (f" vs {others}" if others else "")
              + (f"; not usable: {', '.join(skipped)}" if skipped else ""))
    return winner, reason


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
