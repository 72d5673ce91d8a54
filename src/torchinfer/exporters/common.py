"""What every exporter shares: its errors, its report, the names in the exported graph, the
card the file carries, and the small helpers for tracing a model on the CPU."""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..errors import TorchinferError, first_line
from ..models import LoadedModel, ModelCard, PreprocessConfig
from ..models.card import set_prediction_format
from ..tasks.registry import task_spec
from ..verify import OutputCheck, Tolerance

INPUT_NAME = "input"


def output_name(task: str) -> str:
    """The name of a task's output in an exported graph (the task registry's)."""
    return task_spec(task).output_name


def agreement_kind(task: str) -> str | None:
    """What verification counts as a decision agreeing (top-1, pixel; None: elementwise)."""
    return task_spec(task).agreement


class ExportError(TorchinferError):
    """The model could not be exported to ONNX."""


class ExportVerificationError(ExportError):
    """The exported file computes something else than the PyTorch model.

    ``report`` holds every comparison; ``unverified_path`` is where the file was kept.
    """

    def __init__(self, message: str, report: ExportReport, unverified_path: Path):
        super().__init__(message)
        self.report = report
        self.unverified_path = unverified_path


@dataclass(frozen=True)
class ExportReport:
    """What was exported, and how the file compared with the PyTorch model."""

    path: str  # where the file is now (the ``.unverified.onnx`` name after a failure)
    model_name: str
    task: str
    precision: str  # "fp32" | "fp16"
    opset: int
    input_shape: tuple[int | str, ...]  # e.g. ("batch", 3, 224, 224)
    tolerance: Tolerance
    verified: bool  # verification ran (verify=True)
    inputs: int = 0  # images verification ran
    checks: tuple[OutputCheck, ...] = ()
    providers: tuple[str, ...] = ()
    export_warnings: tuple[str, ...] = ()  # the tracer's warnings: what a trace may have frozen
    export_seconds: float = 0.0
    verify_seconds: float = 0.0
    file_bytes: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    format: str = "onnx"  # "onnx" | "torchscript" | "openvino"

    @property
    def passed(self) -> bool:
        """Verification ran and every check passed (False when verify=False)."""
        return self.verified and bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failures(self) -> tuple[OutputCheck, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: non-finite errors (a check that could not run) become None."""
        out = asdict(self)
        out["input_shape"] = list(self.input_shape)
        out["checks"] = [{k: None if isinstance(v, float) and not math.isfinite(v) else v
                          for k, v in {**asdict(c), "passed": c.passed}.items()}
                         for c in self.checks]
        out["export_warnings"] = list(self.export_warnings)
        out["providers"] = list(self.providers)
        out["passed"] = self.passed
        return out

    def summary(self) -> str:
        shape = "x".join(str(d) for d in self.input_shape)
        kind = {"onnx": f"ONNX opset {self.opset}", "openvino": "OpenVINO IR"}.get(
            self.format, "TorchScript")
        lines = [f"{self.model_name} ({self.task}) -> {self.path}",
                 f"  {kind}, {self.precision}, input {INPUT_NAME} {shape}, "
                 f"{self.file_bytes / 1e6:.1f} MB, exported in {self.export_seconds:.1f} s"]
        if not self.verified:
            lines.append("  NOT VERIFIED (verify=False)")
            return "\n".join(lines)
        runtime = {"onnx": f"onnxruntime ({', '.join(self.providers)})",
                   "openvino": "OpenVINO on the CPU, fp32"}.get(self.format, "torch.jit.load")
        lines.append(f"  verified on {self.inputs} images with {runtime} in "
                     f"{self.verify_seconds:.1f} s: {self.tolerance.describe()}")
        lines.append(f"  {'output':<10}{'batch':>6}{'max abs err':>13}{'atol':>10}"
                     f"{'max rel err':>13}  agreement")
        for c in self.checks:
            if c.error is not None:
                lines.append(f"  {c.output:<10}{c.batch_size:>6}  FAILED: {c.error}")
                continue
            agreed = round(c.agreement * c.decisions)
            lines.append(f"  {c.output:<10}{c.batch_size:>6}{c.max_abs_error:>13.3g}"
                         f"{c.atol or 0:>10.3g}{c.max_rel_error:>13.3g}  "
                         f"{c.agreement_kind} {agreed}/{c.decisions}"
                         f"{'' if c.passed else '  FAILED'}")
        for w in self.export_warnings:
            lines.append(f"  tracer warning: {w}")
        lines.append("  PASSED" if self.passed else "  FAILED")
        return "\n".join(lines)


def export_card(loaded: LoadedModel, task: str, preprocess: PreprocessConfig,
                static_hw: tuple[int, int] | None, half: bool) -> ModelCard:
    """The card an exported file carries: what running it by its path alone needs. No
    architecture: the file holds the graph itself."""
    scoring = getattr(loaded.module, "set_prediction", None)  # a DETR-family detector's
    detector_format = set_prediction_format(scoring, getattr(loaded.module, "top_k", None)) \
        if scoring is not None else None
    return ModelCard(task=task, model_name=loaded.name,
                     labels=tuple(loaded.labels) if loaded.labels is not None else None,
                     preprocess=preprocess, input_size=static_hw, detector_format=detector_format,
                     precision="fp16" if half else "fp32",
                     versions={"torchinfer": __version__, "torch": torch.__version__})


def cpu_eval(module: nn.Module) -> nn.Module:
    """The module in eval mode on the CPU, copied only if it lives elsewhere (the caller's
    model stays where it is)."""
    on_cpu = all(t.device.type == "cpu" for t in
                 (*module.parameters(), *module.buffers()))
    return (module if on_cpu else copy.deepcopy(module).cpu()).eval()


def tracer_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """Keep the tracer's warnings for the report; pass on the others except the exporter's
    notice that it is the legacy one (we chose it, see exporters.onnx)."""
    kept: list[str] = []
    for w in caught:
        if issubclass(w.category, torch.jit.TracerWarning):
            text = first_line(w.message)
            if text not in kept:
                kept.append(text)
        elif not (issubclass(w.category, DeprecationWarning) and "legacy" in str(w.message)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return kept

