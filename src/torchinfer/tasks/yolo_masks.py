"""Instance masks of a YOLO segment head, in original image pixels, as Ultralytics' predict
computes them.

Each kept detection has M mask coefficients; its mask logits are coefficients · prototypes,
at the prototypes' resolution (a quarter of the letterboxed input). Ultralytics has two
ways on from there, and torchinfer follows both:

- its default (``retina_masks=False``, ``process_mask(upsample=True)``): the logits are
  upsampled bilinearly to the LETTERBOXED input, thresholded at 0 and cropped to the box in
  input pixels; a detection whose mask is empty there is dropped. The binary mask is then
  resampled bilinearly onto the original pixels (the padding falls away) and thresholded at
  0.5, as its ``scale_masks`` maps it back;
- ``retina_masks=True`` (``process_mask_native``): the logits are resampled straight onto the
  ORIGINAL image's pixels through the letterbox, thresholded and cropped to the box in
  original pixels; the empty ones are dropped there.

Small masks tell the two apart: a mask a few input pixels wide can vanish between the
original pixels of a small picture, or appear only at the original resolution of a large one.

Only the pixels near each box are computed: bilinear resampling is separable, so the box's
block of an upsampled mask is ``rows @ logits @ columns.T`` with one small interpolation
matrix per axis, never the whole (N, H, W) stack Ultralytics builds. Pixel column c is in a
box when x0 <= c < x1 (Ultralytics' ``crop_mask``), likewise rows.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..results import InstanceMask
from .yolo import Letterbox


def interpolation(out: int, scale: float, offset: float, size: int) -> torch.Tensor:
    """(out, size) bilinear weights: output pixel i samples the source at
    (i + 0.5) * scale + offset - 0.5 in source pixels, clamped at the edges
    (``F.interpolate(align_corners=False)``'s convention)."""
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


def pixel_span(low: float, high: float, limit: int) -> tuple[int, int]:
    """The pixels i with low <= i < high, within [0, limit)."""
    start = min(max(math.ceil(low), 0), limit)
    return start, max(min(max(math.ceil(high), 0), limit), start)


def touched(weights: torch.Tensor, start: int, stop: int) -> tuple[int, int]:
    """The output pixels (rows of ``weights``) that sample any source pixel in [start, stop)."""
    hit = torch.nonzero(weights[:, start:stop].sum(1) > 0).flatten()
    return (int(hit[0]), int(hit[-1]) + 1) if len(hit) else (0, 0)


def mask_logits(prototypes: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """(n, h, w) mask logits at the prototypes' resolution."""
    m, ph, pw = prototypes.shape
    combined = coefficients.float() @ prototypes.float().reshape(m, -1)
    return combined.reshape(-1, ph, pw).cpu()


def native_resampling(out: int, proto: int, other_out: int, other_proto: int,
                      stride: int) -> torch.Tensor:
    """(out, proto) weights that take one axis of the prototypes onto the original pixels as
    ``process_mask_native`` does: an upsampling by f (1, 2 or the stride: the least that
    puts the letterbox's padding on whole pixels), the padding cropped and the rest resized
    to the original (``scale_masks``). Both steps are bilinear, so the product of their
    matrices is the whole map. ``other_*``: the other axis, which the letterbox's gain and
    f depend on."""
    gain = min(stride * proto / out, stride * other_proto / other_out)
    pad = ((stride * proto - max(round(out * gain), 1))
           | (stride * other_proto - max(round(other_out * gain), 1)))
    f = stride // math.gcd(stride, pad | pad // 2)
    up = interpolation(f * proto, 1 / f, 0.0, proto) if f > 1 else torch.eye(proto)
    size, other = f * proto, f * other_proto
    gain = min(size / out, other / other_out)
    start = round((size - max(round(out * gain), 1)) / 2 - 0.1)
    length = max(round(out * gain), 1)
    return interpolation(out, length / out, 0.0, length) @ up[start:start + length]


def retina_masks(prototypes: torch.Tensor, coefficients: torch.Tensor, boxes: torch.Tensor,
                 letterbox: Letterbox, input_size: tuple[int, int]) -> list[InstanceMask]:
    """Ultralytics' ``retina_masks=True``: one mask per detection, computed on the original
    pixels. boxes: (n, 4) xyxy in ORIGINAL pixels; input_size: the letterboxed (H, W)."""
    if not len(coefficients):
        return []
    logits = mask_logits(prototypes, coefficients)
    _, ph, pw = logits.shape
    h, w = letterbox.original
    stride = round(input_size[0] / ph)
    rows = native_resampling(h, ph, w, pw, stride)
    columns = native_resampling(w, pw, h, ph, stride)
    masks = []
    for i, box in enumerate(boxes.cpu().tolist()):
        x0, x1 = pixel_span(box[0], box[2], w)
        y0, y1 = pixel_span(box[1], box[3], h)
        block = rows[y0:y1] @ logits[i] @ columns[x0:x1].T
        masks.append(InstanceMask((x0, y0, x1, y1), (block > 0).numpy()))
    return masks


def letterboxed_masks(prototypes: torch.Tensor, coefficients: torch.Tensor,
                      boxes: torch.Tensor, letterbox: Letterbox,
                      input_size: tuple[int, int]) -> tuple[list[InstanceMask], np.ndarray]:
    """Ultralytics' default: each mask decided at the letterboxed input's resolution, then
    mapped onto the original pixels. boxes: (n, 4) xyxy in INPUT pixels. Returns the masks and
    which are non-empty at the input's resolution (the ones Ultralytics keeps)."""
    if not len(coefficients):
        return [], np.zeros(0, dtype=bool)
    logits = mask_logits(prototypes, coefficients)
    _, ph, pw = logits.shape
    height, width = input_size
    # the upsampling to the input: F.interpolate(size=input) samples at scale proto/input
    in_rows = interpolation(height, ph / height, 0.0, ph)
    in_columns = interpolation(width, pw / width, 0.0, pw)
    # back to the original: the content (the letterbox less its padding) resized to the
    # original size, as scale_masks does
    h, w = letterbox.original
    (left, top), (ch, cw) = letterbox.pad, letterbox.resized
    out_rows = interpolation(h, ch / h, 0.0, ch)
    out_columns = interpolation(w, cw / w, 0.0, cw)
    masks, keep = [], []
    for i, box in enumerate(boxes.cpu().tolist()):
        x0, x1 = pixel_span(box[0], box[2], width)
        y0, y1 = pixel_span(box[1], box[3], height)
        decided = (in_rows[y0:y1] @ logits[i] @ in_columns[x0:x1].T > 0)
        keep.append(bool(decided.any()))
        # the decided block, in content coordinates, clipped to the content
        cx0, cx1 = min(max(x0 - left, 0), cw), min(max(x1 - left, 0), cw)
        cy0, cy1 = min(max(y0 - top, 0), ch), min(max(y1 - top, 0), ch)
        inner = decided[cy0 + top - y0:cy1 + top - y0, cx0 + left - x0:cx1 + left - x0].float()
        ox0, ox1 = touched(out_columns, cx0, cx1)
        oy0, oy1 = touched(out_rows, cy0, cy1)
        block = out_rows[oy0:oy1, cy0:cy1] @ inner @ out_columns[ox0:ox1, cx0:cx1].T
        masks.append(InstanceMask((ox0, oy0, ox1, oy1), (block > 0.5).numpy()))
    return masks, np.array(keep, dtype=bool)


def nonempty(masks: list[InstanceMask]) -> np.ndarray:
    """Which masks have a pixel: Ultralytics drops detections whose mask is empty."""
    return np.array([bool(m.mask.any()) for m in masks], dtype=bool)
