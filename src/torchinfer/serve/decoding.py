"""Single-image batches merged into model batches (the model's side: each request is decoded
on its own, as it arrives, and the worker joins what it takes without decoding again).

The request's type was read from its bytes before (sniff.py).
"""

from __future__ import annotations

import torch

from ..runner.batches import Batch, Decoded
from ..tasks import Predictor
from ..tasks.detect_torchvision import TorchvisionDetectionPredictor


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
