"""Export to OpenVINO's IR (``model.xml`` + ``model.bin``), verified like the ONNX export.

    report = export_openvino(load_model("resnet18", "resnet18.pth"), "resnet18.xml")

The model is converted from PyTorch directly (``openvino.convert_model`` with a dummy batch of
the real size: no ONNX step, so the ``openvino`` extra alone is enough), the batch axis left
free and the height and width fixed where the preprocessing fixes them. The card (task, labels,
preprocessing) goes into the IR's runtime info, so ``torchinfer predict ... -m model.xml`` runs
it by its path. Verification compiles the written file in float32 on the CPU and compares it
with the PyTorch model on the photographs at batch 1 and ``batch_size``; a file that differs
is kept as ``<name>.unverified.xml`` and nothing is left at the requested path.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..errors import first_line
from ..models import LoadedModel
from ..models.card import OPENVINO_RT_INFO_PATH
from ..models.openvino import OpenVinoModule, import_openvino
from ..verify import FP32_TOLERANCE, Comparison
from .common import (
    ExportError,
    ExportReport,
    agreement_kind,
    cpu_eval,
    export_card,
    output_name,
)
from .files import fail_verification, move
from .prepare import MainOutput, dummy_input, export_preprocess, input_shape, task_of
from .verification import check, preprocess_images, verification_images


def convert_to_openvino(loaded: LoadedModel, task: str,
                        input_size: tuple[int, int] | None = None) -> Any:
    """The ``openvino.Model`` of ``loaded``'s main output, batch axis free, with the card in
    its runtime info."""
    ov = import_openvino()
    if loaded.heads is not None:
        raise ExportError(f"{loaded.name}: a multi-head model exports to ONNX or TorchScript, "
                          "not yet to OpenVINO")
    preprocess, static_hw = export_preprocess(loaded, input_size)
    reference = MainOutput(cpu_eval(loaded.module), task)
    dummy = dummy_input(preprocess, static_hw, torch.float32)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's, reported by the verification instead
        try:
            model = ov.convert_model(reference, example_input=dummy)
        except Exception as exc:
            raise ExportError(f"{loaded.name}: openvino.convert_model failed: "
                              f"{first_line(exc)}") from exc
    if static_hw is not None:
        model.reshape({model.inputs[0]: ov.PartialShape([-1, 3, *static_hw])})
    card = export_card(loaded, task, preprocess, static_hw, False)
    model.set_rt_info(card.to_openvino_rt_info(), list(OPENVINO_RT_INFO_PATH))
    return model


def export_openvino(loaded: LoadedModel, path: str | Path, *,
                    input_size: tuple[int, int] | None = None, verify: bool = True,
                    verify_inputs: Sequence[Image.Image] | None = None,
                    batch_size: int = 4) -> ExportReport:
    """Write ``loaded`` as an IR at ``path`` (``.xml``; the ``.bin`` beside it) and (by
    default) verify it; see the module doc. Raises ExportError when OpenVINO refuses the
    model, ExportVerificationError when the file disagrees with PyTorch."""
    ov = import_openvino()
    path = Path(path)
    if path.suffix.lower() != ".xml":
        raise ExportError(f"{path}: an OpenVINO IR is written as a .xml file (its weights go "
                          "to the .bin beside it)")
    task = task_of(loaded)
    preprocess, static_hw = export_preprocess(loaded, input_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".torchinfer-export-", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        t0 = time.perf_counter()
        model = convert_to_openvino(loaded, task, input_size)
        ov.save_model(model, str(staged), compress_to_fp16=False)
        files = (staged, staged.with_suffix(".bin"))
        report = ExportReport(
            path=str(path), model_name=loaded.name, task=task, precision="fp32", opset=0,
            input_shape=input_shape(static_hw, True), tolerance=FP32_TOLERANCE,
            verified=False, export_seconds=time.perf_counter() - t0,
            file_bytes=sum(f.stat().st_size for f in files),
            metadata={"runtime_info": card_text(model)}, format="openvino")
        if verify:
            t1 = time.perf_counter()
            inputs = preprocess_images(preprocess, verification_images(verify_inputs), task)
            written = OpenVinoModule(ov.Core().read_model(str(staged)), str(path), "fp32")
            comparison = Comparison(output_name(task), FP32_TOLERANCE, agreement_kind(task),
                                    candidate="openvino")
            reference = MainOutput(cpu_eval(loaded.module), task)
            checks = tuple(check(reference, lambda b: written(b).numpy(), inputs, size,
                                 comparison, "the OpenVINO IR")
                           for size in (1, batch_size))
            del written  # the compiled model holds the file open on some platforms
            report = replace(report, verified=True, inputs=len(inputs), checks=checks,
                             verify_seconds=time.perf_counter() - t1)
            if not report.passed:
                fail_verification(report, staged, path)
        move(staged, path)
    return report


def card_text(model: Any) -> str:
    return model.get_rt_info(list(OPENVINO_RT_INFO_PATH)).astype(str)
