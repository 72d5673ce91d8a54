"""ONNX export of torchvision's detectors (Faster R-CNN, RetinaNet, SSD, SSDlite, FCOS), verified.

These models take a list of images of any size and return, per image, a dict of boxes, labels
and scores of varying length; their transform (resize, normalise) and NMS are inside. The file
takes ONE image, float (3, H, W) in [0, 1] with H and W free, and returns ``boxes`` (N, 4) in
that image's pixels, ``labels`` (N,) and ``scores`` (N,): the model's own output for a batch of
one. ``OrtDetector`` runs it behind the same list-in, dicts-out interface.

Verification compares detections as sets, not element by element: the order of equal scores,
and which of two equal scores survives the top-k cut, are not defined, and random or weak
weights produce many near-equal scores. A detection PyTorch returns counts as matched when ONNX
Runtime returns one with the same label, IoU >= 0.99 and a score within 1e-3; an unmatched
detection scored within 1e-3 of the lowest score kept is not counted when the other runtime cut
its list at the same place (the cut may fall either way between equal scores). Every counted
detection must match (BOX_TOLERANCE), on every photograph.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image
from torch import nn
from torchvision.ops import box_iou

from ..errors import first_line
from ..models import LoadedModel
from ..models.onnx_session import make_session
from ..tasks import task_spec
from ..verify import OutputCheck, Tolerance
from .common import ExportError, ExportReport, cpu_eval, export_card, tracer_warnings
from .files import fail_verification, files_of, move, write_onnx
from .verification import verification_images

OUTPUTS = ("boxes", "labels", "scores")
INPUT_NAME = "image"
BOX_TOLERANCE = Tolerance(atol=1e-3, rtol=0.0, min_agreement=1.0)  # atol: on the scores
MIN_BOX_IOU = 0.99


class _SingleImage(nn.Module):
    """The detector on one (3, H, W) image, returning a tuple instead of a list of dicts."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.eval()  # a new Module is in training mode, and export would leave model there

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model([image])[0]
        return out["boxes"], out["labels"], out["scores"]


def export_torchvision_detector(loaded: LoadedModel, path: Path, *, opset: int | None,
                                half: bool, input_size: tuple[int, int] | None, verify: bool,
                                verify_inputs: Sequence[Image.Image] | None) -> ExportReport:
    """Export to ``path`` and (by default) verify, as ``export_onnx`` does for the other
    models: one image of any size in, boxes/labels/scores out, compared as sets of detections
    (see the module doc)."""
    if half or input_size is not None:
        raise ExportError(f"{loaded.name}: torchvision detectors export in fp32 at free image "
                          "sizes (their transform resizes inside); drop --half/--input-size")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".torchinfer-export-", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        t0 = time.perf_counter()
        opset_used, warned, metadata = _export_graph(loaded, staged, opset)
        report = ExportReport(
            path=str(path), model_name=loaded.name, task="detect", precision="fp32",
            opset=opset_used, input_shape=(3, "height", "width"), tolerance=BOX_TOLERANCE,
            verified=False, export_warnings=tuple(warned),
            export_seconds=time.perf_counter() - t0,
            file_bytes=sum(f.stat().st_size for f in files_of(staged)), metadata=metadata)
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
                fail_verification(report, staged, path)
        move(staged, path)
    return report


def _export_graph(loaded: LoadedModel, staged: Path,
                  opset: int | None) -> tuple[int, list[str], dict[str, str]]:
    """Export to ``staged``; returns (opset used, tracer warnings, metadata written)."""
    raw = staged.parent / "raw" / "model.onnx"
    raw.parent.mkdir(parents=True, exist_ok=True)
    model = _SingleImage(cpu_eval(loaded.module))
    # a fixed, image-like dummy of a typical size; H and W stay free
    dummy = torch.rand(3, 480, 640, generator=torch.Generator().manual_seed(0))
    axes = {INPUT_NAME: {1: "height", 2: "width"}, **{o: {0: "detections"} for o in OUTPUTS}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torch.onnx.export(model, (dummy,), str(raw), dynamo=False, input_names=[INPUT_NAME],
                              output_names=list(OUTPUTS), dynamic_axes=axes,
                              opset_version=opset or 17, do_constant_folding=True)
        except Exception as exc:
            raise ExportError(f"{loaded.name}: torch.onnx.export failed: {first_line(exc)}") from exc
    preprocess = task_spec("detect").preprocess  # what the predictor feeds: [0, 1] pixels
    card = replace(export_card(loaded, "detect", preprocess, None, False),
                   detector_format="torchvision")
    opset_used, metadata = write_onnx(raw, staged, card)
    return opset_used, tracer_warnings(caught), metadata


def verify_torchvision_detector(loaded: LoadedModel, file: Path,
                                images: Sequence[Image.Image] | None) -> tuple[OutputCheck, int]:
    """(the box comparison over every image, number of images)."""
    images = verification_images(images)
    session = make_session(file, device="cpu")
    model = _SingleImage(cpu_eval(loaded.module))
    matched = counted = 0
    max_box_err = max_score_err = 0.0
    worst: str | None = None
    for i, img in enumerate(images):
        tensor = F.pil_to_tensor(img.convert("RGB")).float().div_(255.0)
        with torch.inference_mode():
            ref = [t.numpy() for t in model(tensor)]
        try:
            got = session.run(list(OUTPUTS), {INPUT_NAME: tensor.numpy()})
        except Exception as exc:  # noqa: BLE001 - ORT's pybind errors
            return _failed(f"onnxruntime failed on image {i} of shape {tuple(tensor.shape)}: {exc}"), len(images)
        m, c, box_err, score_err, miss = _match(ref, got)
        matched, counted = matched + m, counted + c
        max_box_err, max_score_err = max(max_box_err, box_err), max(max_score_err, score_err)
        if miss is not None and worst is None:
            worst = f"image {i}: {miss}"
    agreement = matched / counted if counted else 1.0
    # within tolerance by construction (a match needs the score within atol); the agreement
    # says whether every detection found its match
    return OutputCheck("boxes", 1, max_abs_error=max_box_err, max_rel_error=max_score_err,
                       within_tolerance=True, agreement=agreement, agreement_kind="box", decisions=counted,
                       worst=worst, min_agreement=BOX_TOLERANCE.min_agreement,
                       atol=BOX_TOLERANCE.atol), len(images)


def _match(ref: list[np.ndarray], got: list[np.ndarray]) -> tuple[int, int, float, float, str | None]:
    """Match PyTorch's detections to ONNX Runtime's: (matched, counted, largest box coordinate
    difference of a match, largest score difference of a match, the first miss)."""
    (rb, rl, rs), (gb, gl, gs) = ref, got
    if len(rs) == 0:
        return 0, 0, 0.0, 0.0, None
    # A detection scored at the lowest score torch kept may fall on either side of the cut
    # (top-k, or the score threshold) in the other runtime, when that one was cut there too:
    # it returned as many detections, or reaches down to that score.
    boundary = float(rs.min()) + BOX_TOLERANCE.atol
    other_cut_there = len(gs) >= len(rs) or (len(gs) and float(gs.min()) <= boundary)
    iou = box_iou(torch.from_numpy(rb), torch.from_numpy(gb)).numpy() if len(gb) else \
        np.zeros((len(rb), 0))
    matched = counted = 0
    box_err = score_err = 0.0
    miss = None
    for j in range(len(rb)):
        ok = (gl == rl[j]) & (np.abs(gs - rs[j]) <= BOX_TOLERANCE.atol)
        candidates = np.nonzero(ok & (iou[j] >= MIN_BOX_IOU))[0] if iou.shape[1] else []
        if len(candidates):
            k = candidates[np.argmax(iou[j][candidates])]
            matched += 1
            counted += 1
            box_err = max(box_err, float(np.abs(gb[k] - rb[j]).max()))
            score_err = max(score_err, float(abs(gs[k] - rs[j])))
        elif rs[j] > boundary or not other_cut_there:
            counted += 1
            if miss is None:
                miss = (f"torch's detection {j} (label {int(rl[j])}, score {rs[j]:.4f}, box "
                        f"{np.round(rb[j], 1).tolist()}) has no match in onnxruntime's output")
    return matched, counted, box_err, score_err, miss


def _failed(error: str) -> OutputCheck:
    return OutputCheck("boxes", 1, float("inf"), float("inf"), False, 0.0, "box", 0, error=error,
                       min_agreement=BOX_TOLERANCE.min_agreement)

