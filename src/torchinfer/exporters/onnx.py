"""Export a model to ONNX, and prove the file computes what the PyTorch model computes.

    report = export_onnx(load_model("resnet18", "resnet18.pth"), "resnet18.onnx")
    print(report.summary())

The file carries the model's card (task, labels, preprocessing: ``ModelCard`` as
``metadata_props``), so ``torchinfer.models.onnx.load_onnx_model(path)`` runs it with identical
preprocessing.

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
the graph (see ``exporters.files``).

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. The dynamo exporter
(torch's default since 2.9) needs ``onnxscript``, which the ``onnx`` extra does not install.
Raw-tensor (YOLO-layout) detectors export and are compared element by element; torchvision
detectors export one image at a time and are compared as sets of detections
(``exporters.detectors``).
"""

from __future__ import annotations

import copy
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from ..errors import first_line
from ..models import LoadedModel, PreprocessConfig
from ..tasks.detect import has_torchvision_detection_transform
from ..verify import FP16_TOLERANCE, FP32_TOLERANCE, OutputCheck, Tolerance
from .common import (
    INPUT_NAME,
    ExportError,
    ExportReport,
    ExportVerificationError,
    cpu_eval,
    export_card,
    output_name,
    tracer_warnings,
)
from .detectors import export_torchvision_detector
from .files import fail_verification, files_of, move, simplify_onnx, write_onnx
from .multihead import export_multihead_onnx
from .prepare import (
    MainOutput,
    dummy_input,
    export_preprocess,
    input_shape,
    task_of,
    tolerance_for,
)
from .verification import verify_onnx

__all__ = ["FP16_TOLERANCE", "FP32_TOLERANCE", "ExportError", "ExportReport",
           "ExportVerificationError", "OutputCheck", "Tolerance", "export_onnx"]


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
    verify_inputs: images to verify on (default: torchinfer.assets.load_photographs()).
    simplify: run onnxsim (constant folding, dead-node and shape-op elimination) on the file
        before verifying it, so the simplified graph is what is verified (extra: simplify).
    atol, rtol, min_agreement: override the precision's Tolerance (a given atol is absolute).

    Raises ExportError when the exporter refuses the model, ExportVerificationError when the
    file disagrees with PyTorch (the file is then at ``<name>.unverified.onnx``).
    """
    path = Path(path)
    if loaded.heads is not None:  # one output per head, verified head by head
        return export_multihead_onnx(loaded, path, opset=opset, dynamic_batch=dynamic_batch,
                                     half=half, verify=verify, verify_inputs=verify_inputs,
                                     atol=atol, rtol=rtol, min_agreement=min_agreement,
                                     batch_size=batch_size, input_size=input_size,
                                     simplify=simplify)
    if has_torchvision_detection_transform(loaded.module):
        return export_torchvision_detector(loaded, path, opset=opset, half=half,
                                           input_size=input_size, verify=verify,
                                           verify_inputs=verify_inputs)
    task = task_of(loaded)
    preprocess, static_hw = export_preprocess(loaded, input_size)
    tolerance = tolerance_for(half, atol, rtol, min_agreement)
    reference = cpu_eval(loaded.module)
    exported = MainOutput(copy.deepcopy(reference).half() if half else reference, task)

    path.parent.mkdir(parents=True, exist_ok=True)
    # Everything is written in a private folder beside ``path`` and moved into place at the
    # end: never a half-written file at ``path``, and the exporter's one-file-per-tensor
    # external data (models over 2 GB) cannot overwrite another model's in the same folder.
    with tempfile.TemporaryDirectory(prefix=".torchinfer-export-", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        t0 = time.perf_counter()
        warned = _torch_export(exported, Path(tmp) / "raw" / "model.onnx", task, static_hw,
                               preprocess, opset, dynamic_batch, half, loaded.name)
        card = export_card(loaded, task, preprocess, static_hw, half)
        opset_used, metadata = write_onnx(Path(tmp) / "raw" / "model.onnx", staged, card)
        if simplify:
            simplify_onnx(staged, loaded.name)
        report = ExportReport(
            path=str(path), model_name=loaded.name, task=task,
            precision="fp16" if half else "fp32", opset=opset_used,
            input_shape=input_shape(static_hw, dynamic_batch), tolerance=tolerance,
            verified=False, export_warnings=tuple(warned),
            export_seconds=time.perf_counter() - t0,
            file_bytes=sum(f.stat().st_size for f in files_of(staged)), metadata=metadata)
        if verify:
            report = verify_onnx(report, staged, MainOutput(reference, task), preprocess,
                                 verify_inputs, dynamic_batch, batch_size)
        if verify and not report.passed:
            fail_verification(report, staged, path)
        move(staged, path)
    return report


def _torch_export(module: nn.Module, out: Path, task: str, static_hw: tuple[int, int] | None,
                  preprocess: PreprocessConfig, opset: int | None, dynamic_batch: bool,
                  half: bool, name: str) -> list[str]:
    """torch.onnx.export to ``out``; returns the tracer's warnings (deduplicated)."""
    dummy = dummy_input(preprocess, static_hw, torch.float16 if half else torch.float32)
    output = output_name(task)
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
            raise ExportError(f"{name}: torch.onnx.export failed: {first_line(exc)}") from exc
    return tracer_warnings(caught)
