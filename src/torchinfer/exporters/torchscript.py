"""Export to a TorchScript archive, verified the same way as an ONNX export."""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from ..errors import first_line
from ..models import LoadedModel
from ..models.card import TORCHSCRIPT_EXTRA_FILE
from ..verify import FP32_TOLERANCE, Comparison
from .common import (
    ExportError,
    ExportReport,
    agreement_kind,
    cpu_eval,
    export_card,
    output_name,
    tracer_warnings,
)
from .files import fail_verification, move
from .multihead import export_multihead_torchscript
from .prepare import MainOutput, dummy_input, export_preprocess, input_shape, task_of
from .verification import check, preprocess_images, verification_images


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
    if loaded.heads is not None:  # a dict of the heads' outputs, verified head by head
        return export_multihead_torchscript(loaded, path, verify=verify,
                                            verify_inputs=verify_inputs, batch_size=batch_size,
                                            input_size=input_size)
    task = task_of(loaded)
    preprocess, static_hw = export_preprocess(loaded, input_size)
    reference = MainOutput(cpu_eval(loaded.module), task)
    dummy = dummy_input(preprocess, static_hw, torch.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".torchinfer-export-", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            try:
                traced = torch.jit.trace(reference, dummy, check_trace=False)
            except Exception as exc:
                raise ExportError(f"{loaded.name}: torch.jit.trace failed: {first_line(exc)}") from exc
        card_json = export_card(loaded, task, preprocess, static_hw, False).to_torchscript_json()
        torch.jit.save(traced, str(staged), _extra_files={TORCHSCRIPT_EXTRA_FILE: card_json})
        metadata = json.loads(card_json)
        report = ExportReport(
            path=str(path), model_name=loaded.name, task=task, precision="fp32", opset=0,
            input_shape=input_shape(static_hw, True), tolerance=FP32_TOLERANCE,
            verified=False, export_warnings=tuple(tracer_warnings(caught)),
            export_seconds=time.perf_counter() - t0, file_bytes=staged.stat().st_size,
            metadata=metadata, format="torchscript")
        if verify:
            t1 = time.perf_counter()
            inputs = preprocess_images(preprocess, verification_images(verify_inputs), task)
            written = torch.jit.load(str(staged), map_location="cpu").eval()
            comparison = Comparison(output_name(task), FP32_TOLERANCE, agreement_kind(task),
                                    candidate="torchscript")
            checks = tuple(check(reference, lambda b: written(b).float().numpy(), inputs,
                                 size, comparison, "the TorchScript file")
                           for size in (1, batch_size))
            report = replace(report, verified=True, inputs=len(inputs), checks=checks,
                             verify_seconds=time.perf_counter() - t1)
            if not report.passed:
                fail_verification(report, staged, path)
        move(staged, path)
    return report
