"""Checking a predictor's reduced JPEG decoding through its own model before it is relied on.

Decoding a big JPEG at 1/2, 1/4 or 1/8 scale (``ImageLoader.load`` with ``min_size``) gives
pixels slightly different from a full decode followed by the same resize. Every predictor that
shrinks images does it by default; ``check_reduced_decode`` runs the photographs through the
model both ways, at the worst case a reduction allows (decoded exactly ``decode_margin`` times
the resize target), and compares the outputs with bfloat16's tolerance, the loss already
accepted for speed. A model that the reduction changes more decodes in full, and its report
says why.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from ..assets import load_photographs
from ..models.outputs import main_output
from ..tasks.registry import task_spec
from ..verify import BF16_TOLERANCE, Comparison, OutputCheck, Tolerance
from .memo import read_memo, update_memo

if TYPE_CHECKING:
    from ..tasks.base import Predictor

DECODE_TOLERANCE = BF16_TOLERANCE
# A per-pixel map (semantic segmentation) moves its edges when the input is resampled
# differently: logits next to an edge swing by whole units (measured: 3 std on the bundled
# segmenter, with 98.9 % of pixels agreeing at the worst case). There the pixels' decisions
# are the test; the elementwise bound only catches a broken decode.
PIXEL_DECODE_TOLERANCE = Tolerance(atol=4.0, rtol=0.1, min_agreement=0.98, atol_per_std=True)


@dataclass
class DecodeReport:
    """How a predictor decodes JPEGs, and why."""

    reduced: bool
    reason: str
    checks: tuple[OutputCheck, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"reduced": self.reduced, "reason": self.reason,
                "checks": [c.describe() for c in self.checks]}


def check_reduced_decode(predictor: Predictor, *, verify: bool = True,
                         memo: Path | None = None) -> DecodeReport:
    """Check ``predictor``'s reduced decoding (if it uses one) and keep it only if its outputs
    stay within ``DECODE_TOLERANCE``; sets and returns ``predictor.decode_report``. ``memo``:
    the file where the verdict for this model is kept (``runtime.memo``; None: checked
    afresh)."""
    if not predictor.reduced_decode:
        why = ("the model reads every pixel" if predictor.reads_every_pixel()
               else "exact decoding asked for")
        report = DecodeReport(False, why)
    elif not verify:
        report = DecodeReport(True, "reduced, not verified")
    else:
        report = _checked(predictor, memo)
        predictor.reduced_decode = report.reduced
    predictor.decode_report = report
    return report


def _checked(predictor: Predictor, memo: Path | None) -> DecodeReport:
    """The check's verdict, remembered per model (running a big segmenter on the photographs
    twice takes seconds; its verdict does not change)."""
    key = f"x{predictor.decode_margin:g}"
    kept = read_memo(memo).get("decode", {}).get(key) if memo is not None else None
    if isinstance(kept, dict) and "reduced" in kept and "reason" in kept:
        return DecodeReport(bool(kept["reduced"]), str(kept["reason"]) + " (kept from an earlier check)")
    checks = _compare(predictor)
    passed = all(c.passed for c in checks)
    allowed = _tolerance(predictor, len(checks)).describe("reduced decode")
    report = DecodeReport(
        passed, f"reduced: within {allowed} on the photographs" if passed else
        f"exact: a reduced decode changes this model's outputs beyond {allowed} on the "
        f"photographs ({'; '.join(c.describe() for c in checks if not c.passed)})",
        tuple(checks))
    if memo is not None:
        update_memo(memo, "decode", {key: report.to_dict()})
    return report


def _tolerance(predictor: Predictor, outputs: int) -> Tolerance:
    return PIXEL_DECODE_TOLERANCE if _agreement(predictor, outputs) == "pixel" else DECODE_TOLERANCE


def _agreement(predictor: Predictor, outputs: int) -> str | None:
    kind = task_spec(predictor.task).agreement
    return kind if kind in ("top-1", "pixel") and outputs == 1 else None


def _compare(predictor: Predictor) -> list[OutputCheck]:
    """Each photograph saved as a JPEG twice the size that a 1/2-scale decode may give, so its
    reduced decode is exactly ``decode_margin`` times the resize target; the model's outputs
    on a full and on a reduced decode, compared output by output."""
    pairs: list[tuple[list[np.ndarray], list[np.ndarray]]] = []
    for img in load_photographs().values():
        target = predictor.resize_target(img.size)
        assert target is not None  # a predictor that shrinks images
        scale = 2 * predictor.decode_margin * max(target[0] / img.width, target[1] / img.height)
        size = (math.ceil(img.width * scale), math.ceil(img.height * scale))
        buffer = io.BytesIO()
        img.resize(size, Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
        data = buffer.getvalue()
        full = predictor.loader.load(data, "photograph")
        reduced = predictor.loader.load(data, "photograph", min_size=predictor.decode_request)
        pairs.append((_outputs(predictor, full), _outputs(predictor, reduced)))
    outputs = len(pairs[0][0])
    checks = []
    for k in range(outputs):
        comparison = Comparison("output", _tolerance(predictor, outputs),
                                _agreement(predictor, outputs), candidate="reduced decode")
        acc = comparison.start(1)
        for ref, got in pairs:
            acc.add(ref[k], got[k])
        checks.append(acc.result())
    return checks


def _outputs(predictor: Predictor, image: Image.Image) -> list[np.ndarray]:
    """The model's output tensors for one image (every output of a multi-output model)."""
    with torch.inference_mode():
        tensor = predictor.device_preprocess(predictor.to_device(predictor.preprocess([image], [""]).tensor))
        raw = predictor.module(tensor)
    if predictor.task == "multi" and isinstance(raw, dict):  # every head
        tensors = list(raw.values())
    elif predictor.task == "multi" and isinstance(raw, (tuple, list)):
        tensors = list(raw)
    elif isinstance(raw, (tuple, list)) and raw and isinstance(raw[0], (tuple, list)):
        tensors = list(_tensors(raw))  # nested (an exported Ultralytics graph's outputs)
    else:
        tensors = [main_output(raw)]
    return [t.float().cpu().numpy() for t in tensors if isinstance(t, torch.Tensor)]


def _tensors(raw: object) -> Iterator[torch.Tensor]:
    """Every tensor of a nest of tuples and lists, in order."""
    if isinstance(raw, torch.Tensor):
        yield raw
    elif isinstance(raw, (tuple, list)):
        for item in raw:
            yield from _tensors(item)
