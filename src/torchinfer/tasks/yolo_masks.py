"""Instance masks of a YOLO segment head, in original image pixels.

Each kept detection has M mask coefficients; its mask is sigmoid(coefficients · prototypes)
> 0.5, i.e. the linear combination > 0, at the prototypes' resolution (a quarter of the
letterboxed input). As Ultralytics' ``retina_masks`` path (``process_mask_native``), the
combination is resampled bilinearly onto the ORIGINAL image's pixels through the letterbox
(the padding falls away), thresholded, and cropped to the detection's box (pixel columns
x0 <= c < x1, rows y0 <= r < y1 of the box in original pixels).

Only the pixels inside each box are computed: bilinear resampling is separable, so the box's
block of the upsampled mask is ``rows @ combination @ columns.T`` with one small
interpolation matrix per axis, never the whole (N, H, W) stack Ultralytics builds.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..results import InstanceMask
from .yolo import Letterbox


def _interpolation(out: int, scale: float, offset: float, size: int) -> torch.Tensor:
    """(out, size) bilinear weights: output pixel i samples the source at the point
    ((i + 0.5) * scale + offset) / stride - 0.5 in source pixel units, clamped at the edges
    (``F.interpolate(align_corners=False)``'s convention), with ``stride`` folded into scale
    and offset by the caller."""
    centres = (torch.arange(out, dtype=torch.float32) + 0.5) * scale + offset - 0.5
    centres = centres.clamp(0, size - 1)
    low = centres.floor().long().clamp(max=size - 1)
    high = (low + 1).clamp(max=size - 1)
    frac = centres - low
    weights = torch.zeros(out, size)
    rows = torch.arange(out)
    weights[rows, low] += 1 - frac
    weights[rows, high] += frac
    return weights


def instance_masks(prototypes: torch.Tensor, coefficients: torch.Tensor, boxes: torch.Tensor,
                   letterbox: Letterbox, input_size: tuple[int, int]) -> list[InstanceMask]:
    """One InstanceMask per detection. prototypes: (M, h, w) of one image; coefficients:
    (n, M); boxes: (n, 4) xyxy in ORIGINAL pixels; input_size: the letterboxed (H, W)."""
    if not len(coefficients):
        return []
    m, ph, pw = prototypes.shape
    combined = (coefficients.float() @ prototypes.float().reshape(m, -1)).reshape(-1, ph, pw)
    combined = combined.cpu()
    h, w = letterbox.original
    (left, top), (gx, gy) = letterbox.pad, letterbox.gains
    # original pixel centre x + 0.5 -> letterboxed (x + 0.5) * gx + left -> prototype pixels
    # divided by the input/prototype stride
    sx, sy = input_size[1] / pw, input_size[0] / ph
    columns = _interpolation(w, gx / sx, left / sx, pw)
    rows = _interpolation(h, gy / sy, top / sy, ph)
    masks = []
    for i, box in enumerate(boxes.cpu().tolist()):
        x0, y0 = (min(max(math.ceil(v), 0), lim) for v, lim in zip(box[:2], (w, h)))
        x1, y1 = (min(max(math.ceil(v), 0), lim) for v, lim in zip(box[2:], (w, h)))
        x1, y1 = max(x1, x0), max(y1, y0)
        block = rows[y0:y1] @ combined[i] @ columns[x0:x1].T
        masks.append(InstanceMask((x0, y0, x1, y1), (block > 0).numpy().astype(bool)))
    return masks


def nonempty(masks: list[InstanceMask]) -> np.ndarray:
    """Which masks have a pixel: Ultralytics drops detections whose mask is empty."""
    return np.array([bool(m.mask.any()) for m in masks], dtype=bool)
