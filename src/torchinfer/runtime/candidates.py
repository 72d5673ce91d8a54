"""Candidates: a backend x precision built for a model, checked against the float32 model
before it is trusted, and timed when there is a choice.

``build`` asks the backend (``registry``) for the module; ``verify`` runs it and the eager
float32 model on the same real photographs, preprocessed by the predictor itself, and compares
every output element and every decision (``torchinfer.verify``): a candidate beyond its
precision's tolerance is refused with what differs. ``pick_fastest`` times the usable ones,
interleaved, and keeps the fastest (measured, never assumed: which wins depends on the model,
the batch size and the machine; see BENCHMARKS.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import TorchinferError, first_line
from ..models.outputs import main_output
from ..tasks.registry import task_spec
from ..verify import (
    BF16_TOLERANCE,
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    INT8_TOLERANCE,
    Comparison,
    OutputCheck,
    Tolerance,
)
from .backend import BackendError, BuildRequest
from .registry import get_backend

# how long one timed measurement of a candidate lasts at least (pick_fastest)
MEASURE_S = 0.15
TOLERANCES = {"fp32": FP32_TOLERANCE, "bf16": BF16_TOLERANCE, "fp16": FP16_TOLERANCE,
              "int8": INT8_TOLERANCE}


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
    # the verdict of an earlier check of this model on this machine, reused (runtime.memo)
    remembered: str | None = None
    # an error that building again would meet again (not a full disk or a lack of memory):
    # worth remembering
    lasting_error: bool = False

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
                "passed": self.check.passed if self.check is not None else (
                    self.error is None if self.remembered else None),
                "check": self.check.describe() if self.check is not None else self.remembered,
                "error": self.error, "remembered": self.remembered}


@dataclass
class BackendReport:
    """What runs the model and why."""

    chosen: Candidate
    candidates: list[Candidate] = field(default_factory=list)
    reason: str = ""

    def summary(self) -> str:
        lines = [f"backend: {self.chosen.label} ({self.reason})"]
        for c in self.candidates:
            state = c.error or (c.check.describe() if c.check is not None else
                                (f"checked earlier: {c.remembered}" if c.remembered
                                 else "not checked"))
            speed = f"{c.ms_per_image:.2f} ms/img, " if c.ms_per_image is not None else ""
            lines.append(f"  {c.label:<20} {speed}{state}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen.label, "backend": self.chosen.backend,
                "precision": self.chosen.precision, "reason": self.reason,
                "candidates": [c.to_dict() for c in self.candidates]}


def build(request: BuildRequest, backend: str) -> Candidate:
    """The candidate ``backend`` builds for ``request`` (its error kept, never raised)."""
    t0 = time.perf_counter()
    try:
        owner = get_backend(backend)
        missing = owner.unavailable()
        if missing is not None:
            raise BackendError(missing)
        built = owner.build(request)
    except (BackendError, TorchinferError) as exc:
        return Candidate(backend, request.precision, None, time.perf_counter() - t0,
                         error=first_line(exc), lasting_error=True)
    except (OSError, MemoryError) as exc:  # this machine now, not the model: not remembered
        return Candidate(backend, request.precision, None, time.perf_counter() - t0,
                         error=f"{type(exc).__name__}: {first_line(exc)}")
    except Exception as exc:  # a tracer or runtime refusing this model: say which and why
        return Candidate(backend, request.precision, None, time.perf_counter() - t0,
                         error=f"{type(exc).__name__}: {first_line(exc)}", lasting_error=True)
    return Candidate(backend, request.precision, built, time.perf_counter() - t0)


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
                                                    f"{tuple(batch.shape)}: {first_line(exc)}")
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
                 images: int, repeats: int = 5) -> tuple[Candidate, str]:
    """Time each usable candidate on ``run`` (one batch of ``images`` photographs): warm-up twice
    (TorchScript's profiling executor optimises on the second call), then the best of
    ``repeats`` measurements, interleaved so drifting machine load hits every candidate alike.
    A measurement runs the batch enough times to last ``MEASURE_S`` (one run of a small model
    is a few milliseconds: the scheduler's noise)."""
    usable = [c for c in candidates if c.usable]
    slowest = 0.0
    for c in list(usable):  # warm-up; a candidate failing at this batch size is dropped
        try:
            run(c.module)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            run(c.module)  # type: ignore[arg-type]
            slowest = max(slowest, time.perf_counter() - t0)
        except Exception as exc:
            c.error, c.lasting_error = f"failed at batch {images}: {first_line(exc)}", True
            usable.remove(c)
    if not usable:
        raise BackendError("no backend can run this model: " + "; ".join(
            refusal(c) for c in candidates))
    calls = max(1, math.ceil(MEASURE_S / max(slowest, 1e-6)))
    best = {c.label: float("inf") for c in usable}
    for _ in range(repeats):
        for c in usable:
            run(c.module)  # type: ignore[arg-type]  # its threads awake after the others'
            t0 = time.perf_counter()
            for _ in range(calls):
                run(c.module)  # type: ignore[arg-type]
            best[c.label] = min(best[c.label], (time.perf_counter() - t0) / calls)
    for c in usable:
        c.ms_per_image = best[c.label] * 1000 / images
    winner = min(usable, key=lambda c: best[c.label])
    others = ", ".join(f"{c.label} {c.ms_per_image:.2f}" for c in usable if c is not winner)
    skipped = [c.label for c in candidates if not c.usable]
    reason = (f"fastest on a batch of {images} photographs: {winner.ms_per_image:.2f} ms/img"
              + (f" vs {others}" if others else "")
              + (f"; not usable: {', '.join(skipped)}" if skipped else ""))
    return winner, reason
