"""How large a task's resize may make an image: one rule, checked before anything is resampled.

The pixel limit (``ImageLoader.max_pixels``) bounds what is decoded, not what a resize makes of
it. Resizing the short side scales the long side by the same factor, so a 1,000,000 x 1 PNG (1 %
of the default limit) resized to a short side of 256 would become 256,000,000 x 256 pixels:
196 GB of RGB. The rule, for every task:

- A task that resizes the short side to S (classification and segmentation with a one-number
  ``resize_size``, torchvision detectors inside the model) refuses an image whose long side is
  more than ``MAX_ASPECT_RATIO`` (100) times its short side, with an InputError naming the
  aspect ratio and the limit. The header is checked, so nothing is decoded or resampled. The
  resized image then has at most 100 x S x S pixels, 100 times what a square image costs:
  6.6 megapixels for classification's 256 (cropped to 224 x 224 afterwards), 27 for
  segmentation's 520, which the segmenter runs on whole. (torchvision's detectors also cap
  the long side, at 1333 pixels; beyond about 1333:1 their short side would round to 0 pixels
  and the model would fail.)
- A task that fits the image into a fixed box (the YOLO letterbox, a ``resize_size`` of (H, W))
  is bounded by its box and takes any shape; a side that would round to 0 pixels gets 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import InputError

MAX_ASPECT_RATIO = 100


def check_resize(size: tuple[int, int], resize_size: Sequence[int] | None, name: str) -> None:
    """Raise InputError if resizing an image of ``size`` (w, h) to ``resize_size`` (a
    ``PreprocessConfig.resize_size``; None: no resize or a fixed box) breaks the rule above."""
    if resize_size is None or len(resize_size) != 1:
        return
    w, h = size
    short, long = min(w, h), max(w, h)
    if short > 0 and long > MAX_ASPECT_RATIO * short:
        raise InputError(name, f"aspect ratio {_ratio(long, short)}:1 ({w}x{h} pixels) is beyond "
                               f"the limit of {MAX_ASPECT_RATIO}:1 for a model that resizes the "
                               f"short side to {resize_size[0]} pixels")


def _ratio(long: int, short: int) -> str:
    return f"{long / short:,.2f}".rstrip("0").rstrip(".")


def resized_size(size: tuple[int, int], resize_size: Sequence[int],
                 max_size: int | None = None, multiple_of: int | None = None,
                 keep_aspect_ratio: bool = False,
                 size_divisor: int | None = None) -> tuple[int, int]:
    """The (w, h) torchvision's ``resize(img, resize_size)`` gives an image of ``size`` (w, h):
    the short side to S and the long side in proportion (truncated, as torchvision does), or
    exactly (H, W). ``max_size`` caps the long side as transformers' DETR-style processors do
    (``get_size_with_aspect_ratio``: the short side rounded, an image already at size kept).
    ``multiple_of`` / ``keep_aspect_ratio``: transformers' DPT-style processors
    (``get_resize_output_image_size``): the scale nearer 1 for both sides when the aspect
    ratio is kept, then each side rounded to the multiple (half to even, as Python's round).
    ``size_divisor`` with no ``resize_size``: the image's own size, each side floored to the
    multiple (transformers' GLPN processor; a side under it stays one multiple, where the
    processor would fail)."""
    if not resize_size:
        w, h = size
        m = size_divisor or 1
        return max(m, w // m * m), max(m, h // m * m)
    if multiple_of is not None or keep_aspect_ratio:
        w, h = size
        sh, sw = resize_size[0] / h, resize_size[1] / w
        if keep_aspect_ratio:
            if abs(1 - sw) < abs(1 - sh):
                sh = sw
            else:
                sw = sh
        m = multiple_of or 1
        return _to_multiple(sw * w, m), _to_multiple(sh * h, m)
    if len(resize_size) == 2:
        return resize_size[1], resize_size[0]
    w, h = size
    s = resize_size[0]
    if max_size is not None:
        short, long = float(min(w, h)), float(max(w, h))
        raw = None
        if long / short * s > max_size:
            raw = max_size * short / long
            s = int(round(raw))
        if (h <= w and h == s) or (w <= h and w == s):
            return w, h
        scale = raw if raw is not None else s
        if w < h:
            return s, int(scale * h / w)
        return int(scale * w / h), s
    if w <= h:
        return s, int(s * h / w)
    return int(s * w / h), s


def _to_multiple(value: float, multiple: int) -> int:
    x = round(value / multiple) * multiple
    return x if x > 0 else math.ceil(value / multiple) * multiple
