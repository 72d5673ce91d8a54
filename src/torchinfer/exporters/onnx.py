"""Export a model to ONNX, and prove the file computes what the PyTorch model computes.

    report = export_onnx(load_model("resnet18", "resnet18.pth"), "resnet18.onnx")
    print(report.summary())

The file carries the model's task, labels and preprocessing (``metadata_props``), so
``torchinfer.runtime.onnxruntime.load_onnx_model(path)`` runs it with identical preprocessing.

Verification (on by default) feeds the SAME real inputs, photographs preprocessed the way the
predictors preprocess them, to the PyTorch model and to ONNX Runtime, at batch 1 and, when the
batch axis is dynamic, at a larger batch, and compares every output element:
``|onnx - torch| <= atol + rtol * |torch|`` (numpy's ``isclose``; by default atol is a fraction
of the output's standard deviation, see ``Tolerance``), and reports the task's decision
agreement (top-1 for classification, per-pixel argmax for segmentation). A trace can silently
freeze a value that depended on the dummy input; only running other inputs shows it.

A file that fails verification is kept, renamed ``<name>.unverified.onnx`` (for debugging with
other tools), and nothing is left at the requested path, so nobody loads it by accident;
``ExportVerificationError`` says which output differs, by how much, and where the file went.

A model over 2 GB (protobuf's limit) keeps its weights in one ``<name>.onnx.data`` file beside
the graph; the two travel together (after a failed verification too: the data file keeps the
name the graph refers to).

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. The dynamo exporter
(torch's default since 2.9) needs ``onnxscript``, which the ``onnx`` extra does not install.
Raw-tensor (YOLO-layout) detectors export and are compared element by element; torchvision
detectors are not supported yet (their outputs are lists of dicts of varying length).
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image
from torch import nn

from ..errors import MissingExtraError, TorchinferError
from ..models import LoadedModel, PreprocessConfig
from ..models.outputs import main_output
from ..models.weights import TORCHSCRIPT_METADATA
from ..runtime.onnxruntime import (
    META_INPUT_SIZE,
    META_LABELS,
    META_MODEL_NAME,
    META_PRECISION,
    META_PREPROCESS,
    META_TASK,
    META_VERSION,
    make_session,
)
from ..verify import FP16_TOLERANCE, FP32_TOLERANCE, Comparison, OutputCheck, Tolerance

__all__ = ["FP16_TOLERANCE", "FP32_TOLERANCE", "ExportError", "ExportReport",
           "ExportVerificationError", "OutputCheck", "Tolerance", "export_onnx"]

INPUT_NAME = "input"
OUTPUT_NAMES = {"classify": "logits", "segment": "out", "detect": "output0"}
# detect: raw-tensor (YOLO-layout) outputs, compared element by element
AGREEMENT_KINDS = {"classify": "top-1", "segment": "pixel", "detect": None}


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
    format: str = "onnx"  # "onnx" | "torchscript"

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
        lines = [f"{self.model_name} ({self.task}) -> {self.path}",
                 f"  {'ONNX opset ' + str(self.opset) if self.format == 'onnx' else 'TorchScript'}"
                 f", {self.precision}, input {INPUT_NAME} {shape}, "
                 f"{self.file_bytes / 1e6:.1f} MB, exported in {self.export_seconds:.1f} s"]
        if not self.verified:
            lines.append("  NOT VERIFIED (verify=False)")
            return "\n".join(lines)
        runtime = (f"onnxruntime ({', '.join(self.providers)})" if self.format == "onnx"
                   else "torch.jit.load")
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


def export_onnx(loaded: LoadedModel, path: str | Path, *,
                input_size: tuple[int, int] | None = None, opset: int | None = None,
                dynamic_batch: bool = True, half: bool = False, verify: bool = True,
                verify_inputs: Sequence[Image.Image] | None = None,
                atol: float | None = None, rtol: float | None = None,
                min_agreement: float | None = None, batch_size: int = 4,
                simplify: bool = False) -> ExportReport:
    """Export ``loaded`` to ONNX at ``path`` and (by default) verify it; see the module doc.

    input_size: (height, width) to export at; default the model's preprocessing: its crop, or
        for a short-side resize without a crop (torchvision segmentation) dynamic height and
        width. Given, it also becomes the preprocessing stored in the file.
    opset: ONNX opset; None takes the exporter's default (the report says which).
    dynamic_batch: leave the batch axis free (verified at batch 1 and ``batch_size``).
    half: store weights and compute in float16 (input and output float16 too). Verified
        against the float32 PyTorch model with FP16_TOLERANCE unless atol/rtol/min_agreement
        are given.
    verify_inputs: images to verify on (default: torchinfer.testing.load_photographs()).
    simplify: run onnxsim (constant folding, dead-node and shape-op elimination) on the file
        before verifying it, so the simplified graph is what is verified (extra: simplify).
    atol, rtol, min_agreement: override the precision's Tolerance (a given atol is absolute).

    Raises ExportError when the exporter refuses the model, ExportVerificationError when the
    file disagrees with PyTorch (the file is then at ``<name>.unverified.onnx``).
    """
    path = Path(path)
    if _is_torchvision_detector(loaded.module):
        return _export_torchvision_detector(loaded, path, opset=opset, half=half,
                                            input_size=input_size, verify=verify,
                                            verify_inputs=verify_inputs)
    task = _task_of(loaded)
    preprocess, static_hw = _export_preprocess(loaded, input_size)
    tolerance = _tolerance(half, atol, rtol, min_agreement)
    reference = _cpu_eval(loaded.module)
    exported = _MainOutput(copy.deepcopy(reference).half() if half else reference, task)

    path.parent.mkdir(parents=True, exist_ok=True)
    # Everything is written in a private folder beside ``path`` and moved into place at the
    # end: never a half-written file at ``path``, and the exporter's one-file-per-tensor
    # external data (models over 2 GB) cannot overwrite another model's in the same folder.
    with tempfile.TemporaryDirectory(prefix=".torchinfer-export-", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        t0 = time.perf_counter()
        tracer_warnings = _torch_export(exported, Path(tmp) / "raw" / "model.onnx", task,
                                        static_hw, preprocess, opset, dynamic_batch, half,
                                        loaded.name)
        metadata = _metadata(loaded, task, preprocess, static_hw, half)
        opset_used = _finish_file(Path(tmp) / "raw" / "model.onnx", staged, metadata)
        if simplify:
            _simplify(staged, loaded.name)
        report = ExportReport(
            path=str(path), model_name=loaded.name, task=task,
            precision="fp16" if half else "fp32", opset=opset_used,
            input_shape=_input_shape(static_hw, dynamic_batch), tolerance=tolerance,
            verified=False, export_warnings=tuple(tracer_warnings),
            export_seconds=time.perf_counter() - t0,
            file_bytes=sum(f.stat().st_size for f in _files_of(staged)), metadata=metadata)
        if verify:
            report = _verify(report, staged, _MainOutput(reference, task), preprocess,
                             verify_inputs, dynamic_batch, batch_size)
        if verify and not report.passed:
            _fail(report, staged, path)
        _move(staged, path)
    return report


def _export_torchvision_detector(loaded: LoadedModel, path: Path, *, opset: int | None,
                                 half: bool, input_size: tuple[int, int] | None, verify: bool,
                                 verify_inputs: Sequence[Image.Image] | None) -> ExportReport:
    """torchvision detectors: one image of any size in, boxes/labels/scores out, verified as
    sets of detections (see export_detectors)."""
    from .detectors import BOX_TOLERANCE, export_torchvision_detector, verify_torchvision_detector

    if half or input_size is not None:
        raise ExportError(f"{loaded.name}: torchvision detectors export in fp32 at free image "
                          "sizes (their transform resizes inside); drop --half/--input-size")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".torchinfer-export-", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        t0 = time.perf_counter()
        opset_used, tracer_warnings, metadata = export_torchvision_detector(loaded, staged, opset)
        report = ExportReport(
            path=str(path), model_name=loaded.name, task="detect", precision="fp32",
            opset=opset_used, input_shape=(3, "height", "width"), tolerance=BOX_TOLERANCE,
            verified=False, export_warnings=tuple(tracer_warnings),
            export_seconds=time.perf_counter() - t0,
            file_bytes=sum(f.stat().st_size for f in _files_of(staged)), metadata=metadata)
        if verify:
            t1 = time.perf_counter()
            check, images = verify_torchvision_detector(loaded, staged, verify_inputs)
            notes = () if check.decisions or check.error else (
                "verification compared no detections: the model found nothing on the "
                "verification images (random weights?), so only that the file runs is shown",)
            report = replace(report, verified=True, inputs=images, checks=(check,),
                             providers=("CPUExecutionProvider",),
                             export_warnings=report.export_warnings + notes,
                             verify_seconds=time.perf_counter() - t1)
            if not report.passed:
                _fail(report, staged, path)
        _move(staged, path)
    return report


def export_torchscript(loaded: LoadedModel, path: str | Path, *,
                       input_size: tuple[int, int] | None = None, verify: bool = True,
                       verify_inputs: Sequence[Image.Image] | None = None,
                       batch_size: int = 4) -> ExportReport:
    """Trace to a TorchScript archive (``torch.jit.save``) with the same metadata as an ONNX
    export (as the extra file ``torchinfer.json``), verified the same way: ``torch.jit.load``
    of the written file against the eager model on photographs, at batch 1 and ``batch_size``.
    Traced, not frozen: a frozen archive is tied to the device it was frozen on (the
    ``torchscript`` backend freezes at load time instead)."""
    path = Path(path)
    task = _task_of(loaded)
    preprocess, static_hw = _export_preprocess(loaded, input_size)
    reference = _MainOutput(_cpu_eval(loaded.module), task)
    dummy = _dummy_input(preprocess, static_hw, torch.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".torchinfer-export-", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            try:
                traced = torch.jit.trace(reference, dummy, check_trace=False)
            except Exception as exc:
                raise ExportError(f"{loaded.name}: torch.jit.trace failed: {_first_line(exc)}") from exc
        metadata = {**_metadata(loaded, task, preprocess, static_hw, False),
                    "format": "torchscript"}
        torch.jit.save(traced, str(staged),
                       _extra_files={TORCHSCRIPT_METADATA: json.dumps(metadata)})
        report = ExportReport(
            path=str(path), model_name=loaded.name, task=task, precision="fp32", opset=0,
            input_shape=_input_shape(static_hw, True), tolerance=FP32_TOLERANCE,
            verified=False, export_warnings=tuple(_tracer_warnings(caught)),
            export_seconds=time.perf_counter() - t0, file_bytes=staged.stat().st_size,
            metadata=metadata, format="torchscript")
        if verify:
            t1 = time.perf_counter()
            if verify_inputs is None:
                from ..testing import load_photographs

                verify_inputs = list(load_photographs().values())
            inputs = preprocess_images(preprocess, verify_inputs)
            written = torch.jit.load(str(staged), map_location="cpu").eval()
            comparison = Comparison(OUTPUT_NAMES[task], FP32_TOLERANCE, AGREEMENT_KINDS[task],
                                    candidate="torchscript")
            checks = tuple(_check(reference, lambda b: written(b).float().numpy(), inputs,
                                  size, comparison, "the TorchScript file")
                           for size in (1, batch_size))
            report = replace(report, verified=True, inputs=len(inputs), checks=checks,
                             verify_seconds=time.perf_counter() - t1)
            if not report.passed:
                _fail(report, staged, path)
        _move(staged, path)
    return report


# --- preparing the module ----------------------------------------------------------------------

class _MainOutput(nn.Module):
    """The model with one tensor output: a segmentation dict's ``out`` (``aux`` only serves
    training), a tuple's first element (GoogLeNet/Inception heads), or the tensor itself."""

    def __init__(self, model: nn.Module, task: str):
        super().__init__()
        self.model = model
        self.task = task
        # A new Module is in training mode, and torch.onnx.export restores the mode it found
        # after tracing: recursively, so a training-mode wrapper would leave the caller's model
        # in training mode (BatchNorm on batch statistics) after the export.
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return main_output(self.model(x))
        except TorchinferError as exc:
            raise ExportError(f"the {self.task} model's output: {exc}") from exc


def _task_of(loaded: LoadedModel) -> str:
    """classify or segment: from the registry, else from what the model returns."""
    task = loaded.task
    if task is None:
        task = _probe_task(loaded)
    if task == "detect" and _is_torchvision_detector(loaded.module):
        raise ExportError(f"{loaded.name}: exporting torchvision detectors is not supported yet "
                          "(their outputs are per-image lists of boxes); raw-tensor (YOLO) "
                          "detectors export")
    if task not in OUTPUT_NAMES:
        raise ExportError(f"{loaded.name}: cannot export task {task!r}; "
                          f"supported: {', '.join(OUTPUT_NAMES)}")
    return task


def _is_torchvision_detector(module: nn.Module) -> bool:
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    return isinstance(getattr(module, "transform", None), GeneralizedRCNNTransform)


def _probe_task(loaded: LoadedModel) -> str:
    """A model not from the registry: 2-D logits mean classify, 4-D (or a dict with ``out``)
    mean segment."""
    h, w = _static_size(loaded.preprocess) or (224, 224)
    module = _cpu_eval(loaded.module)
    with torch.inference_mode():
        raw = module(torch.zeros(1, 3, h, w))
    if isinstance(raw, dict) and "out" in raw:
        return "segment"
    out = raw[0] if isinstance(raw, (tuple, list)) else raw
    if isinstance(out, torch.Tensor) and out.ndim in (2, 4):
        return "classify" if out.ndim == 2 else "segment"
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    raise ExportError(f"{loaded.name}: cannot tell its task from its output {got}; "
                      "expected (N, classes) logits or (N, classes, H, W)")


def _cpu_eval(module: nn.Module) -> nn.Module:
    """The module in eval mode on the CPU, copied only if it lives elsewhere (the caller's
    model stays where it is)."""
    on_cpu = all(t.device.type == "cpu" for t in
                 (*module.parameters(), *module.buffers()))
    return (module if on_cpu else copy.deepcopy(module).cpu()).eval()


def _export_preprocess(loaded: LoadedModel, input_size: tuple[int, int] | None
                       ) -> tuple[PreprocessConfig, tuple[int, int] | None]:
    """The preprocessing the file is exported for (``input_size`` overrides the weights'),
    and the (h, w) every input then has, or None when it varies."""
    preprocess = loaded.preprocess
    if input_size is not None:
        preprocess = preprocess.with_overrides(input_size=(int(input_size[0]),
                                                           int(input_size[1])))
    return preprocess, _static_size(preprocess)


def _dummy_input(preprocess: PreprocessConfig, static_hw: tuple[int, int] | None,
                 dtype: torch.dtype) -> torch.Tensor:
    """A fixed, seeded dummy batch of one: the same file for the same model, run after run."""
    h, w = static_hw or (preprocess.resize_size[0],) * 2
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0)).to(dtype)


def _static_size(cfg: PreprocessConfig) -> tuple[int, int] | None:
    """(h, w) every input has after this preprocessing, or None when it depends on the image
    (a short-side resize without a crop)."""
    if cfg.crop_size is not None:
        return (int(cfg.crop_size[0]), int(cfg.crop_size[1]))
    if len(cfg.resize_size) == 2:
        return (int(cfg.resize_size[0]), int(cfg.resize_size[1]))
    return None


def _input_shape(static_hw: tuple[int, int] | None,
                 dynamic_batch: bool) -> tuple[int | str, ...]:
    hw: tuple[int | str, ...] = static_hw if static_hw is not None else ("height", "width")
    return ("batch" if dynamic_batch else 1, 3, *hw)


def _tolerance(half: bool, atol: float | None, rtol: float | None,
               min_agreement: float | None) -> Tolerance:
    base = FP16_TOLERANCE if half else FP32_TOLERANCE
    return Tolerance(atol=base.atol if atol is None else float(atol),
                     rtol=base.rtol if rtol is None else float(rtol),
                     min_agreement=base.min_agreement if min_agreement is None
                     else float(min_agreement),
                     atol_per_std=base.atol_per_std and atol is None)  # a given atol is absolute


# --- exporting ---------------------------------------------------------------------------------

def _torch_export(module: nn.Module, out: Path, task: str, static_hw: tuple[int, int] | None,
                  preprocess: PreprocessConfig, opset: int | None, dynamic_batch: bool,
                  half: bool, name: str) -> list[str]:
    """torch.onnx.export to ``out``; returns the tracer's warnings (deduplicated)."""
    dummy = _dummy_input(preprocess, static_hw, torch.float16 if half else torch.float32)
    output = OUTPUT_NAMES[task]
    axes: dict[int, str] = {0: "batch"} if dynamic_batch else {}
    if static_hw is None:
        axes.update({2: "height", 3: "width"})
    dynamic_axes = {INPUT_NAME: axes, output: axes} if axes else None
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # Not under no_grad: nn.MultiheadAttention (ViT) then takes its fused fast path,
            # which has no ONNX symbolic; with grad enabled it traces as plain ops.
            torch.onnx.export(module, (dummy,), str(out), dynamo=False,
                              input_names=[INPUT_NAME], output_names=[output],
                              dynamic_axes=dynamic_axes, opset_version=opset,
                              do_constant_folding=True)
        except Exception as exc:
            raise ExportError(f"{name}: torch.onnx.export failed: {_first_line(exc)}") from exc
    return _tracer_warnings(caught)


def _tracer_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """Keep the tracer's warnings for the report; pass on the others except the exporter's
    notice that it is the legacy one (we chose it, see the module doc)."""
    kept: list[str] = []
    for w in caught:
        if issubclass(w.category, torch.jit.TracerWarning):
            text = _first_line(w.message)
            if text not in kept:
                kept.append(text)
        elif not (issubclass(w.category, DeprecationWarning) and "legacy" in str(w.message)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return kept


def _first_line(obj: object) -> str:
    text = str(obj).strip()
    return text.splitlines()[0] if text else type(obj).__name__


def _metadata(loaded: LoadedModel, task: str, preprocess: PreprocessConfig,
              static_hw: tuple[int, int] | None, half: bool) -> dict[str, str]:
    from .. import __version__  # at call time: torchinfer/__init__ may import this module

    return {
        META_VERSION: __version__,
        META_TASK: task,
        META_MODEL_NAME: loaded.name,
        META_LABELS: json.dumps(loaded.labels),
        META_PREPROCESS: json.dumps(preprocess.to_dict()),
        META_INPUT_SIZE: json.dumps(list(static_hw) if static_hw else None),
        META_PRECISION: "fp16" if half else "fp32",
    }


def _finish_file(raw: Path, out: Path, metadata: dict[str, str]) -> int:
    """Write the exporter's ``raw`` file to ``out`` with ``metadata``, weights over 2 GB in
    one ``<out name>.data`` file beside it; check it is valid ONNX. Returns its opset."""
    try:
        import onnx
        from onnx.external_data_helper import uses_external_data
    except ImportError as exc:
        raise MissingExtraError("onnx", "onnx") from exc
    model = onnx.load(str(raw), load_external_data=False)
    external = any(uses_external_data(t) for t in model.graph.initializer)
    if external:
        onnx.load_external_data_for_model(model, str(raw.parent))
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    if external:  # protobuf cannot hold over 2 GB: the weights go beside the graph
        onnx.save_model(model, str(out), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=_data_name(out))
    else:
        onnx.save_model(model, str(out))
    try:
        onnx.checker.check_model(str(out))  # by path, so it finds external data
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{out.name}: the exporter wrote invalid ONNX: "
                          f"{_first_line(exc)}") from exc
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _simplify(path: Path, name: str) -> None:
    """onnxsim in place, keeping the metadata; onnxsim checks the result itself by running
    both graphs on random inputs, and our verification then runs it on photographs."""
    try:
        import onnx
        import onnxsim
    except ImportError as exc:
        raise MissingExtraError("onnxsim", "simplify") from exc
    model = onnx.load(str(path))
    metadata = {p.key: p.value for p in model.metadata_props}
    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception as exc:  # onnxsim raises plain RuntimeErrors from its C++ core
        raise ExportError(f"{name}: onnxsim failed: {_first_line(exc)}") from exc
    if not ok:
        raise ExportError(f"{name}: onnxsim's own check of the simplified graph failed")
    del simplified.metadata_props[:]
    for key, value in metadata.items():
        simplified.metadata_props.add(key=key, value=value)
    onnx.save_model(simplified, str(path))


def _data_name(onnx_file: Path) -> str:
    return onnx_file.name + ".data"


def _files_of(onnx_file: Path) -> list[Path]:
    """The file and, for a model over 2 GB, its external data."""
    data = onnx_file.with_name(_data_name(onnx_file))
    return [onnx_file, data] if data.exists() else [onnx_file]


def _move(staged: Path, path: Path) -> None:
    """Put the staged file (and its data) at ``path``; data first, so the graph never
    appears before the weights it points to."""
    data = staged.with_name(_data_name(staged))
    if data.exists():
        os.replace(data, path.with_name(data.name))
    else:
        path.with_name(_data_name(path)).unlink(missing_ok=True)  # an older export's
    os.replace(staged, path)


# --- verifying ---------------------------------------------------------------------------------

def preprocess_images(cfg: PreprocessConfig, images: Sequence[Image.Image]) -> list[torch.Tensor]:
    """(3, H, W) float32 tensors exactly as the predictors make them: resize (PIL, antialiased
    as configured), centre crop if the config has one, /255, normalise in float32."""
    mean = torch.tensor(cfg.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32).view(3, 1, 1)
    out = []
    for img in images:
        img = F.resize(img.convert("RGB"), list(cfg.resize_size),
                       interpolation=cfg.interpolation_mode, antialias=cfg.antialias)
        if cfg.crop_size is not None:
            img = F.center_crop(img, list(cfg.crop_size))
        chw = torch.from_numpy(np.array(img)).permute(2, 0, 1)
        out.append((chw.float().div_(255.0) - mean).div_(std))
    return out


def _verify(report: ExportReport, file: Path, reference: nn.Module, cfg: PreprocessConfig,
            images: Sequence[Image.Image] | None, dynamic_batch: bool,
            batch_size: int) -> ExportReport:
    t0 = time.perf_counter()
    if images is None:
        from ..testing import load_photographs

        images = list(load_photographs().values())
    if not images:
        raise ExportError("verify_inputs is empty: verification needs at least one image")
    inputs = preprocess_images(cfg, images)
    comparison = Comparison(OUTPUT_NAMES[report.task], report.tolerance,
                             AGREEMENT_KINDS[report.task])
    try:
        # CPU on both sides on purpose: this compares the exported graph with the model, not
        # GPU kernels (TF32 alone would exceed the fp32 tolerance).
        session = make_session(file, device="cpu")
    except TorchinferError as exc:  # e.g. an op without a kernel for this dtype
        return replace(report, verified=True, inputs=len(inputs),
                       checks=(comparison.failed(1, str(exc)),),
                       verify_seconds=time.perf_counter() - t0)
    sizes = [1] + ([batch_size] if dynamic_batch and batch_size > 1 else [])
    checks = tuple(_check(reference, _ort_runner(session), inputs, size, comparison,
                          "onnxruntime") for size in sizes)
    providers = tuple(session.get_providers())
    del session  # release the file before it is renamed
    return replace(report, verified=True, inputs=len(inputs), checks=checks,
                   providers=providers, verify_seconds=time.perf_counter() - t0)


def _batches(inputs: list[torch.Tensor], size: int) -> list[torch.Tensor]:
    """Consecutive batches of ``size`` images (the last one filled up from the start, so every
    batch has the size under test). Images of different shapes (no crop) are centre-cropped
    to their common size: still real pixels, and one tensor per batch."""
    n = max(len(inputs), size)
    padded = [inputs[i % len(inputs)] for i in range(math.ceil(n / size) * size)]
    out = []
    for i in range(0, len(padded), size):
        group = padded[i:i + size]
        h = min(t.shape[1] for t in group)
        w = min(t.shape[2] for t in group)
        out.append(torch.stack([F.center_crop(t, [h, w]) for t in group]))
    return out


def _check(reference: nn.Module, run: Callable[[torch.Tensor], np.ndarray],
           inputs: list[torch.Tensor], size: int, comparison: Comparison,
           runtime: str) -> OutputCheck:
    """Run every batch of ``size`` through PyTorch and ``run`` (the exported file in its
    runtime), comparing as it goes (segmentation logits of 8 photographs at 520 px are ~1 GB:
    nothing is kept but the running maxima)."""
    acc = comparison.start(size)
    for batch in _batches(inputs, size):
        with torch.inference_mode():
            ref = reference(batch).float().numpy()
            try:
                got = run(batch)
            except Exception as exc:  # a frozen shape, a missing kernel
                return comparison.failed(size, f"{runtime} failed on input shape "
                                               f"{tuple(batch.shape)}: {_first_line(exc)}")
        if got.shape != ref.shape:
            return comparison.failed(size, f"{runtime} gave shape {tuple(got.shape)} where "
                                           f"PyTorch gave {tuple(ref.shape)} (input shape "
                                           f"{tuple(batch.shape)})")
        acc.add(ref, np.asarray(got, dtype=np.float32))
    return acc.result()


def _ort_runner(session: Any) -> Callable[[torch.Tensor], np.ndarray]:
    feed = session.get_inputs()[0]
    dtype = np.float16 if feed.type == "tensor(float16)" else np.float32
    return lambda batch: session.run(None, {feed.name: batch.numpy().astype(dtype)})[0]


def _fail(report: ExportReport, staged: Path, path: Path) -> None:
    """Keep the file under a name nobody loads by accident, remove any older file at ``path``
    (it would no longer match this model), and raise with what differs."""
    unverified = path.with_name(f"{path.stem}.unverified{path.suffix or '.onnx'}")
    path.unlink(missing_ok=True)
    _move(staged, unverified)
    report = replace(report, path=str(unverified))
    lines = [f"{path}: the {report.format} export of {report.model_name} does not compute what the "
             f"PyTorch model computes on {report.inputs} real images ({report.precision}, "
             f"allowed: {report.tolerance.describe()}):"]
    lines += [f"  {c.describe()}" for c in report.failures]
    if report.export_warnings:
        lines.append("  the tracer warned (a possible cause: a value computed from the dummy "
                     "input was frozen into the graph):")
        lines += [f"    {w}" for w in report.export_warnings]
    lines.append(f"  The file was kept as {unverified} for inspection; nothing was written "
                 f"to {path}.")
    raise ExportVerificationError("\n".join(lines), report, unverified)
