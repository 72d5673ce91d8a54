"""Comparing a candidate runtime with the PyTorch model it replaces, on real inputs.

An ONNX export, a frozen TorchScript module and a reduced-precision copy all promise to compute
what the float32 PyTorch model computes. ``Comparison`` accumulates, over every batch of real
inputs, the largest absolute and relative differences, the element furthest beyond tolerance
and the task's decision agreement (top-1 per image, argmax per pixel), without keeping the
outputs (segmentation logits of a few photographs are gigabytes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """What verification accepts: every element within ``atol + rtol * |torch|`` and, when
    ``min_agreement`` is set, at least that fraction of top-1/pixel decisions equal.

    ``atol_per_std``: atol is in units of the reference output's standard deviation (per
    verification batch) instead of absolute: rounding errors grow with the size of the values
    a network carries, so an absolute atol that suits logits of spread 1 flags logits of spread
    30 (and the other way round misses real errors). Floored at ATOL_FLOOR so a constant output
    is not held to exact equality.
    """

    atol: float
    rtol: float
    min_agreement: float | None = None
    atol_per_std: bool = False

    def effective_atol(self, reference: np.ndarray) -> float:
        if not self.atol_per_std:
            return self.atol
        return max(self.atol * float(np.std(reference, dtype=np.float64)), ATOL_FLOOR)

    def describe(self, candidate: str = "onnx") -> str:
        atol = f"{self.atol:g}*std(torch)" if self.atol_per_std else f"{self.atol:g}"
        rule = f"|{candidate} - torch| <= {atol} + {self.rtol:g}*|torch|"
        if self.min_agreement is not None:
            rule += f", agreement >= {100 * self.min_agreement:g}%"
        return rule


ATOL_FLOOR = 1e-6
# fp32: the runtimes differ in summation order, fused kernels (BatchNorm folded into the
# convolutions, the NCHWc layout of ORT_ENABLE_ALL) and activation approximations. Measured
# on all torchvision classifiers, calibrated (logit std ~3), against PyTorch: max abs error
# from 4e-6 (alexnet) to 5e-3 (efficientnet_b7 at 600 px, 1.4e-3 of the spread; against
# float64 PyTorch fp32 is off by 1e-4 there, ORT by 5e-3 with ORT_ENABLE_ALL and 1.2e-3
# without). An absolute 1e-4 failed 7 of the first 28 architectures with nothing wrong in
# their export. A frozen or wrong computation is off by a sizeable fraction of the spread
# (0.3-1 std in the tests), far above 5e-3 std.
FP32_TOLERANCE = Tolerance(atol=5e-3, rtol=1e-3, atol_per_std=True)
# fp16 keeps ~3 significant digits and rounds after every layer: measured max abs errors were
# 0.02 (resnet18), 0.15 (mobilenet_v3_small), 0.27 (efficientnet_b0) on logits of std 3, i.e.
# up to 0.09 std. Elementwise it can only promise "close"; the decisions carry the proof.
FP16_TOLERANCE = Tolerance(atol=0.2, rtol=0.05, min_agreement=0.99, atol_per_std=True)
BF16_TOLERANCE = Tolerance(atol=0.5, rtol=0.1, min_agreement=0.95, atol_per_std=True)
# int8 (post-training quantisation) moves values by a sizeable fraction of their spread by
# design; elementwise it only catches a broken graph, the decisions are the test.
INT8_TOLERANCE = Tolerance(atol=1.0, rtol=0.2, min_agreement=0.95, atol_per_std=True)


@dataclass(frozen=True)
class OutputCheck:
    """One output compared between PyTorch and ONNX Runtime at one batch size, over all
    verification inputs."""

    output: str
    batch_size: int
    max_abs_error: float
    # |onnx - torch| / max(|torch|, atol): relative error, with near-zero references floored at
    # atol so an element that should be 0 and is 1e-9 does not report a relative error of 1e3
    max_rel_error: float
    within_tolerance: bool
    agreement: float  # fraction of decisions (top-1 per image, or argmax per pixel) that agree
    agreement_kind: str | None  # "top-1" | "pixel"; None when there is no decision to compare
    decisions: int
    worst: str | None = None  # the element furthest beyond tolerance, when one is
    error: str | None = None  # onnxruntime failed, or the shapes differ
    min_agreement: float | None = None
    atol: float | None = None  # the absolute tolerance applied (Tolerance.effective_atol)

    @property
    def passed(self) -> bool:
        if self.error is not None or not self.within_tolerance:
            return False
        return self.min_agreement is None or self.agreement >= self.min_agreement

    def describe(self) -> str:
        """One line saying what differs, for error messages."""
        where = f"output {self.output!r} at batch {self.batch_size}"
        if self.error is not None:
            return f"{where}: {self.error}"
        agreed = round(self.agreement * self.decisions)
        atol = f" (atol {self.atol:.3g})" if self.atol is not None else ""
        return (f"{where}: max abs error {self.max_abs_error:.3g}{atol}, max rel error "
                f"{self.max_rel_error:.3g}"
                + (f", worst element {self.worst}" if self.worst else "")
                + (f"; {self.agreement_kind} agreement {agreed}/{self.decisions} "
                   f"({100 * self.agreement:.2f}%)" if self.agreement_kind else ""))


@dataclass(frozen=True)
class Comparison:
    output: str
    tolerance: Tolerance
    kind: str | None  # agreement kind ("top-1", "pixel"); None: no decision to compare
    candidate: str = "onnx"  # what is compared with torch, for messages

    def start(self, size: int) -> Accumulator:
        return Accumulator(self, size)

    def failed(self, size: int, error: str) -> OutputCheck:
        return OutputCheck(self.output, size, math.inf, math.inf, False, 0.0, self.kind, 0,
                           error=error, min_agreement=self.tolerance.min_agreement)


class Accumulator:
    """Running maxima and agreement counts over the batches of one batch size."""

    def __init__(self, comparison: Comparison, size: int):
        self.c = comparison
        self.size = size
        self.max_abs = 0.0
        self.max_rel = 0.0
        self.worst_excess = -math.inf
        self.worst: str | None = None
        self.atol = math.inf  # the smallest absolute tolerance applied
        self.agreed = 0
        self.decisions = 0
        self.batches = 0

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        tol = self.c.tolerance
        atol = tol.effective_atol(ref)  # per batch when it scales with the output's spread
        self.atol = min(self.atol, atol)
        diff = np.abs(got - ref)
        diff[np.isnan(ref) & np.isnan(got)] = 0.0
        excess = diff - (atol + tol.rtol * np.abs(ref))
        excess[np.isnan(excess)] = np.inf  # NaN where PyTorch has a number: as bad as it gets
        i = int(np.argmax(excess))
        if excess.flat[i] > self.worst_excess:
            self.worst_excess = float(excess.flat[i])
            index = tuple(int(v) for v in np.unravel_index(i, ref.shape))
            self.worst = (f"batch {self.batches} element {index}: torch {ref.flat[i]:.6g}, "
                          f"{self.c.candidate} {got.flat[i]:.6g}")
        self.max_abs = max(self.max_abs, float(np.max(diff)))  # NaN propagates
        self.max_rel = max(self.max_rel, float(np.max(diff / np.maximum(np.abs(ref), atol))))
        self.batches += 1
        if self.c.kind is None:
            return
        # argmax over the class axis: one decision per image, or per pixel. A decision the
        # reference itself makes by less than float32's own tolerance (random weights: logits
        # within 1e-6 of each other) is a tie, and either answer agrees with it.
        decided = ref.argmax(axis=1) == got.argmax(axis=1)
        if ref.shape[1] > 1:
            top2 = np.partition(ref, -2, axis=1)
            margin = np.take(top2, -1, axis=1) - np.take(top2, -2, axis=1)
            decided |= margin <= FP32_TOLERANCE.effective_atol(ref)
        self.agreed += int(decided.sum())
        self.decisions += decided.size

    def result(self) -> OutputCheck:
        within = self.worst_excess <= 0 and not math.isnan(self.max_abs)
        return OutputCheck(self.c.output, self.size, max_abs_error=self.max_abs,
                           max_rel_error=self.max_rel, within_tolerance=within,
                           agreement=self.agreed / self.decisions if self.decisions else 1.0,
                           agreement_kind=self.c.kind, decisions=self.decisions,
                           worst=None if within else self.worst,
                           min_agreement=self.c.tolerance.min_agreement, atol=self.atol)
