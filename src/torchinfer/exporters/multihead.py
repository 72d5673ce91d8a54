"""Exporting a multi-head model: one graph, one named output per head's tensor, the heads in
the file's card, and verification head by head.

Each output is compared element by element like any export, and with its head's decision:
top-1 for a classifier, per-pixel argmax for a segmenter, and for a detector the boxes kept
after decoding and NMS (the share of PyTorch's boxes matched by the file's: same class,
IoU >= 0.5), since a raw detection tensor's argmax per anchor decides nothing.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.ops import box_iou

from ..errors import first_line
from ..manifests import task_manifest
from ..models import LoadedModel, ModelCard
from ..models.card import TORCHSCRIPT_EXTRA_FILE
from ..models.onnx_session import make_session
from ..tasks.base import Normalise
from ..tasks.heads import Head, make_heads, named_outputs
from ..tasks.yolo import decode, guess_decoder, letterbox
from ..verify import FP32_TOLERANCE, Comparison, OutputCheck
from .common import INPUT_NAME, ExportError, ExportReport, cpu_eval, export_card, tracer_warnings
from .files import fail_verification, files_of, move, write_onnx
from .prepare import input_shape, tolerance_for
from .verification import verification_images

# decisions a detection head is verified on: what a default predict keeps
VERIFY_CONF, VERIFY_IOU, MATCH_IOU = 0.25, 0.45, 0.5


class HeadOutputs(nn.Module):
    """The model with its heads' outputs as a tuple, in ``outputs`` order (ONNX graphs name
    outputs by position)."""

    def __init__(self, model: nn.Module, outputs: Sequence[str]):
        super().__init__()
        self.model = model
        self.outputs = list(outputs)
        self.eval()  # see prepare.MainOutput: the exporter restores the mode it found

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        found = named_outputs(self.model(x))
        return tuple(found[name] for name in self.outputs)


def export_multihead_onnx(loaded: LoadedModel, path: str | Path, *, opset: int | None = None,
                          dynamic_batch: bool = True, half: bool = False, verify: bool = True,
                          verify_inputs: Sequence[Image.Image] | None = None,
                          atol: float | None = None, rtol: float | None = None,
                          min_agreement: float | None = None, batch_size: int = 4,
                          input_size: tuple[int, int] | None = None,
                          simplify: bool = False) -> ExportReport:
    """Export a model whose card (``loaded.heads``) names its heads; see the module doc."""
    if input_size is not None or simplify:
        raise ExportError(f"{loaded.name}: a multi-head model exports at its own input size, "
                          "without --simplify")
    heads = make_heads(loaded.heads or (), loaded.name)
    outputs = list(dict.fromkeys(h.output for h in heads))
    cfg = loaded.preprocess
    hw = _input_hw(loaded)
    tolerance = tolerance_for(half, atol, rtol, min_agreement)
    reference = HeadOutputs(cpu_eval(loaded.module), outputs)
    exported = HeadOutputs(copy.deepcopy(cpu_eval(loaded.module)).half(), outputs) if half \
        else reference
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".torchinfer-export-", dir=path.parent) as tmp:
        raw, staged = Path(tmp) / "raw" / "model.onnx", Path(tmp) / path.name
        raw.parent.mkdir()
        t0 = time.perf_counter()
        dummy = torch.zeros(1, 3, *hw, dtype=torch.float16 if half else torch.float32)
        axes = {name: {0: "batch"} for name in (INPUT_NAME, *outputs)} if dynamic_batch else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                torch.onnx.export(exported, (dummy,), str(raw), dynamo=False,
                                  input_names=[INPUT_NAME], output_names=outputs,
                                  dynamic_axes=axes, opset_version=opset, do_constant_folding=True)
            except Exception as exc:
                raise ExportError(f"{loaded.name}: torch.onnx.export failed: "
                                  f"{first_line(exc)}") from exc
        card = replace(export_card(loaded, "multi", cfg, hw, half),
                       heads=tuple(h.to_dict() for h in heads))
        opset_used, metadata = write_onnx(raw, staged, card)
        report = ExportReport(
            path=str(path), model_name=loaded.name, task="multi",
            precision="fp16" if half else "fp32", opset=opset_used,
            input_shape=input_shape(hw, dynamic_batch), tolerance=tolerance, verified=False,
            export_warnings=tuple(tracer_warnings(caught)),
            export_seconds=time.perf_counter() - t0,
            file_bytes=sum(f.stat().st_size for f in files_of(staged)), metadata=metadata)
        if verify:
            session = make_session(staged, device="cpu")
            feed = session.get_inputs()[0]
            dtype = np.float16 if feed.type == "tensor(float16)" else np.float32
            report = _verify(report, lambda b: session.run(None, {feed.name: b.numpy().astype(dtype)}),
                             reference, heads, card, verify_inputs,
                             [1, batch_size] if dynamic_batch and batch_size > 1 else [1], "onnx")
            report = replace(report, providers=tuple(session.get_providers()))
            del session  # release the file before it is renamed
        if verify and not report.passed:
            fail_verification(report, staged, path)
        move(staged, path)
    return report


class _NamedOutputs(nn.Module):
    """The heads' outputs as a dict by output name: what a TorchScript archive returns, so
    the heads in its card find their outputs by name."""

    def __init__(self, model: HeadOutputs):
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self.model.outputs, self.model(x)))


def export_multihead_torchscript(loaded: LoadedModel, path: str | Path, *, verify: bool = True,
                                 verify_inputs: Sequence[Image.Image] | None = None,
                                 batch_size: int = 4,
                                 input_size: tuple[int, int] | None = None) -> ExportReport:
    """A traced TorchScript archive returning {output name: tensor}, its card naming the heads,
    verified head by head against the eager model at batch 1 and ``batch_size``."""
    if input_size is not None:
        raise ExportError(f"{loaded.name}: a multi-head model exports at its own input size")
    heads = make_heads(loaded.heads or (), loaded.name)
    outputs = list(dict.fromkeys(h.output for h in heads))
    hw = _input_hw(loaded)
    reference = HeadOutputs(cpu_eval(loaded.module), outputs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".torchinfer-export-", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            try:
                traced = torch.jit.trace(_NamedOutputs(reference), torch.zeros(1, 3, *hw),
                                         check_trace=False, strict=False)
            except Exception as exc:
                raise ExportError(f"{loaded.name}: torch.jit.trace failed: "
                                  f"{first_line(exc)}") from exc
        card = replace(export_card(loaded, "multi", loaded.preprocess, hw, False),
                       heads=tuple(h.to_dict() for h in heads))
        card_json = card.to_torchscript_json()
        torch.jit.save(traced, str(staged), _extra_files={TORCHSCRIPT_EXTRA_FILE: card_json})
        report = ExportReport(
            path=str(path), model_name=loaded.name, task="multi", precision="fp32", opset=0,
            input_shape=input_shape(hw, True), tolerance=FP32_TOLERANCE, verified=False,
            export_warnings=tuple(tracer_warnings(caught)),
            export_seconds=time.perf_counter() - t0, file_bytes=staged.stat().st_size,
            metadata=json.loads(card_json), format="torchscript")
        if verify:
            written = torch.jit.load(str(staged), map_location="cpu").eval()
            report = _verify(report, lambda b: [written(b)[o].float().numpy() for o in outputs],
                             reference, heads, card, verify_inputs, [1, batch_size],
                             "torchscript")
        if verify and not report.passed:
            fail_verification(report, staged, path)
        move(staged, path)
    return report


def _input_hw(loaded: LoadedModel) -> tuple[int, int]:
    size = loaded.preprocess.crop_size or loaded.preprocess.resize_size
    return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])


def _inputs(card: ModelCard, images: Sequence[Image.Image] | None) -> torch.Tensor:
    """The photographs letterboxed and normalised as the multi-head predictor feeds them."""
    assert card.preprocess is not None and card.input_size is not None
    normalise = Normalise(card.preprocess.mean, card.preprocess.std, torch.device("cpu"))
    arrays = [letterbox(img.convert("RGB"), card.input_size)[0]
              for img in verification_images(images)]
    return normalise(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous())


def _verify(report: ExportReport, run: Callable[[torch.Tensor], Sequence[np.ndarray]],
            reference: HeadOutputs, heads: Sequence[Head], card: ModelCard,
            images: Sequence[Image.Image] | None, sizes: list[int],
            candidate: str) -> ExportReport:
    """``report`` with one check per head and batch size: ``run`` (the written file, its
    outputs in ``reference.outputs`` order) against ``reference`` on the photographs."""
    t0 = time.perf_counter()
    inputs = _inputs(card, images)
    checks: list[OutputCheck] = []
    for size in sizes:
        per_head = {h.name: Comparison(h.output, report.tolerance, task_manifest(h.task).agreement,
                                       candidate=candidate).start(size) for h in heads}
        matched = {h.name: [0, 0] for h in heads}
        for i in range(0, len(inputs), size):
            batch = inputs[i:i + size]
            with torch.inference_mode():
                ref = [t.float().numpy() for t in reference(batch)]
                got = [np.asarray(g, dtype=np.float32) for g in run(batch)]
            by_name = dict(zip(reference.outputs, zip(ref, got)))
            for head in heads:
                r, g = by_name[head.output]
                per_head[head.name].add(r, g)
                if head.task == "detect":
                    m, n = _matched_boxes(head, r, g)
                    matched[head.name][0] += m
                    matched[head.name][1] += n
        for head in heads:
            check = per_head[head.name].result()
            if head.task == "detect":
                m, n = matched[head.name]
                check = replace(check, agreement=m / n if n else 1.0, agreement_kind="boxes",
                                decisions=n, min_agreement=report.tolerance.min_agreement)
            checks.append(replace(check, output=f"{head.name} ({head.output})"))
    return replace(report, verified=True, inputs=len(inputs), checks=tuple(checks),
                   verify_seconds=time.perf_counter() - t0)


def _matched_boxes(head: Head, ref: np.ndarray, got: np.ndarray) -> tuple[int, int]:
    """(PyTorch's kept boxes that the file's match: same class, IoU >= MATCH_IOU; the larger
    of the two counts), decoded the way the head's predictor decodes them."""
    decoder = head.option("decoder")
    r_t, g_t = torch.from_numpy(ref), torch.from_numpy(got)
    decoder = guess_decoder(r_t) if decoder == "auto" else decoder
    matched = total = 0
    for a, b in zip(decode(r_t, decoder, conf=VERIFY_CONF, iou=VERIFY_IOU, max_det=300),
                    decode(g_t, decoder, conf=VERIFY_CONF, iou=VERIFY_IOU, max_det=300)):
        total += max(len(a.boxes), len(b.boxes))
        if len(a.boxes) and len(b.boxes):
            iou = box_iou(a.boxes, b.boxes)
            iou[a.class_ids[:, None] != b.class_ids[None, :]] = 0
            used: set[int] = set()
            for i in range(len(a.boxes)):  # PyTorch's best first
                j = int(iou[i].argmax())
                if iou[i, j] >= MATCH_IOU and j not in used:
                    used.add(j)
                    matched += 1
    return matched, total
