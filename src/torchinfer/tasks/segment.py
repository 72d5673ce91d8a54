"""Semantic segmentation: resize + normalise -> model -> per-pixel argmax at the ORIGINAL size.

torchvision's segmentation models return ``{"out": logits, "aux": logits}``; the auxiliary head
only serves training, so only ``out`` is read. Logits are resized back to the original image
before the argmax: resizing a label map instead would blur nothing and misplace every edge by up
to half a model pixel.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as TF
import torchvision.transforms.functional as F
from PIL import Image

from ..errors import TorchinferError
from ..models import LoadedModel
from ..models.outputs import main_output
from ..results import Segmentation
from .base import Batch, Normalise, Predictor


@dataclass(frozen=True)
class _Geometry:
    original: tuple[int, int]  # (h, w) of the decoded image
    resized: tuple[int, int]  # (h, w) fed to the model


class SegmentationPredictor(Predictor[Segmentation]):
    """Segments images with the preprocessing of the model's weights (short side to 520 for
    torchvision's). Images of different shapes in one batch run in same-shape groups, so every
    image sees exactly what it would see alone (no padding changes the global context that
    DeepLabV3's image pooling branch reads)."""

    task = "segment"

    def __init__(self, model: LoadedModel, *, return_probabilities: bool = False, **kwargs: Any):
        super().__init__(model, **kwargs)
        self.config = model.preprocess
        self.return_probabilities = return_probabilities
        self.normalise = Normalise(self.config.mean, self.config.std, self.device)

    def preprocess(self, images: Sequence[Image.Image], sources: Sequence[str]) -> Batch:
        cfg = self.config
        arrays, geometry = [], []
        for img in images:
            original = (img.height, img.width)
            img = F.resize(img, list(cfg.resize_size), interpolation=cfg.interpolation_mode,
                           antialias=cfg.antialias)
            if cfg.crop_size is not None:
                img = F.center_crop(img, list(cfg.crop_size))
            arrays.append(np.asarray(img))
            geometry.append(_Geometry(original, (img.height, img.width)))
        # one uint8 NHWC container padded to the largest image; forward slices each group back out
        h = max(g.resized[0] for g in geometry)
        w = max(g.resized[1] for g in geometry)
        container = np.zeros((len(arrays), h, w, 3), dtype=np.uint8)
        for i, arr in enumerate(arrays):
            container[i, : arr.shape[0], : arr.shape[1]] = arr
        return Batch(torch.from_numpy(container).permute(0, 3, 1, 2), list(sources), geometry)

    def forward(self, tensor: torch.Tensor, batch: Batch | None = None) -> list[torch.Tensor]:
        """Per image, logits (C, h, w) at the model's input size."""
        if batch is None:
            return list(main_output(self.module(tensor), ndim=4, what="the segmenter"))
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, g in enumerate(batch.meta):
            groups[g.resized].append(i)
        logits: list[torch.Tensor | None] = [None] * len(batch.meta)
        for (h, w), idx in groups.items():
            out = main_output(self.module(tensor[idx, :, :h, :w]), ndim=4, what="the segmenter")
            for j, i in enumerate(idx):
                logits[i] = out[j]
        return logits  # type: ignore[return-value]

    def postprocess(self, raw: list[torch.Tensor], batch: Batch) -> list[Segmentation]:
        labels = self.model.labels or [str(i) for i in range(raw[0].shape[0])]
        if len(labels) != raw[0].shape[0]:
            raise TorchinferError(f"{len(labels)} labels for a model with {raw[0].shape[0]} "
                                  "classes: check --labels / num_classes")
        results = []
        for source, logits, geom in zip(batch.sources, raw, batch.meta):
            probs = None
            if self.return_probabilities:
                full = TF.interpolate(logits[None].float(), size=geom.original, mode="bilinear",
                                      align_corners=False)[0]
                mask = full.argmax(0)
                probs = full.softmax(0).half().cpu().numpy()
            else:
                mask = upsampled_argmax(logits.float(), geom.original)
            mask = mask.to(torch.uint8 if len(labels) <= 256 else torch.int32)
            results.append(Segmentation(source=source, mask=mask.cpu().numpy(),
                                        labels=tuple(labels), probabilities=probs))
        return results

    def failed(self, source: str, reason: str) -> Segmentation:
        return Segmentation(source=source, error=reason)


# Below this share of source cells with one class at all 4 corners, interpolating only the
# boundary pixels (gathered one by one) costs more than interpolating everything (measured:
# 1/3 boundary cells, 254 vs 185 ms for 21 classes at 1600x1067; large regions, 52 vs 187).
MIN_AGREEING_CELLS = 0.85


def upsampled_argmax(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``interpolate(logits, size, "bilinear").argmax(0)`` without interpolating every class at
    every pixel. Bilinear interpolation is a convex combination of the 4 source pixels around
    a point, so where one class is the (first) argmax at all 4, it is the argmax everywhere
    between them: those pixels take it directly, and only pixels near a class boundary are
    interpolated, with torch's sample positions and weights (align_corners=False). The answer
    is the full computation's, up to float rounding at exact ties."""
    c, h, w = logits.shape
    H, W = size
    y0, y1, wy = _sample_positions(h, H, logits.device)
    x0, x1, wx = _sample_positions(w, W, logits.device)
    low = logits.argmax(0)  # (h, w)
    down = torch.clamp(torch.arange(h, device=low.device) + 1, max=h - 1)
    right = torch.clamp(torch.arange(w, device=low.device) + 1, max=w - 1)
    agree = (low == low[down]) & (low == low[:, right]) & (low == low[down][:, right])
    if agree.float().mean() < MIN_AGREEING_CELLS:  # boundaries everywhere: interpolate it all
        return TF.interpolate(logits[None], size=size, mode="bilinear",
                              align_corners=False)[0].argmax(0)
    mask = low[y0][:, x0]  # (H, W): the class of each pixel's top-left source pixel
    ys, xs = torch.nonzero(~agree[y0][:, x0], as_tuple=True)
    if len(ys):
        per_pixel = logits.permute(1, 2, 0).contiguous()  # (h, w, C): a pixel's classes together
        top, bottom, left, right_ = y0[ys], y1[ys], x0[xs], x1[xs]
        ly, lx = wy[ys, None], wx[xs, None]
        mixed = ((1 - ly) * ((1 - lx) * per_pixel[top, left] + lx * per_pixel[top, right_])
                 + ly * ((1 - lx) * per_pixel[bottom, left] + lx * per_pixel[bottom, right_]))
        mask[ys, xs] = mixed.argmax(1)
    return mask


def _sample_positions(n_in: int, n_out: int, device: torch.device
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each output index: the two source indices and the weight of the second, as torch's
    bilinear interpolation computes them with align_corners=False."""
    scale = n_in / n_out
    src = ((torch.arange(n_out, device=device, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = torch.clamp(i0 + 1, max=n_in - 1)
    return i0, i1, src - i0

