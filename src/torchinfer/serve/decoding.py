"""Request bytes -> what the model worker runs: the type read from the bytes, and single-image
batches merged into model batches.

Only common raster formats are decoded. Pillow opens many more (EPS through Ghostscript among
them), and the Content-Type a client sends proves nothing, so the first bytes decide: JPEG,
PNG, GIF, BMP, WebP or TIFF, or 415 before any decoder runs.
"""

from __future__ import annotations

import torch

from ..errors import TorchinferError
from ..runner.batches import Batch, Decoded
from ..tasks import Predictor
from ..tasks.detect_torchvision import TorchvisionDetectionPredictor

IMAGE_TYPES = "JPEG, PNG, GIF, BMP, WebP or TIFF"


class UnsupportedType(TorchinferError):
    """The bytes are not an image of an accepted type (HTTP 415)."""


def sniff_image(data: bytes) -> str:
    """The image type the bytes start with, or UnsupportedType."""
    head = bytes(data[:16])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if not data:
        raise UnsupportedType("empty body: send an image")
    raise UnsupportedType(f"unsupported image type: the bytes are not {IMAGE_TYPES} (the type "
                          "is read from the bytes, not the Content-Type)")


def merge(predictor: Predictor, parts: list[Decoded]) -> list[Decoded]:
    """``parts`` (each one decoded image) as few batches as the predictor's layout allows, in
    order. Images stacked as (N, C, H, W) join when their (C, H, W) agree (a classifier's crop,
    a letterbox; a segmenter's equal sizes); a torchvision detector's images lie end to end
    in one (1, 3, 1, pixels) row, so they always join."""
    end_to_end = isinstance(predictor, TorchvisionDetectionPredictor)
    groups: list[list[Decoded]] = []
    for part in parts:
        if part.batch is None:
            groups.append([part])
            continue
        last = groups[-1][-1].batch if groups else None
        if last is not None and (end_to_end or _stackable(last, part.batch)):
            groups[-1].append(part)
        else:
            groups.append([part])
    return [_join(group, end_to_end) if len(group) > 1 else group[0] for group in groups]


def _stackable(a: Batch, b: Batch) -> bool:
    return a.tensor.shape[1:] == b.tensor.shape[1:] and a.tensor.dtype == b.tensor.dtype and \
        a.tensor.shape[0] == len(a.sources) and b.tensor.shape[0] == len(b.sources)


def _join(group: list[Decoded], end_to_end: bool) -> Decoded:
    batches = [d.batch for d in group if d.batch is not None]
    tensor = torch.cat([b.tensor for b in batches], dim=3 if end_to_end else 0)
    batch = Batch(tensor, [s for b in batches for s in b.sources],
                  [m for b in batches for m in b.meta])
    return Decoded([s for d in group for s in d.sources], batch, {},
                   sum(d.preprocess_s for d in group))
