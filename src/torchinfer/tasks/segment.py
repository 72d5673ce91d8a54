"""Semantic segmentation: resize + normalise -> model -> per-pixel argmax at the ORIGINAL size.

torchvision's segmentation models return ``{"out": logits, "aux": logits}``; the auxiliary head
only serves training, so only ``out`` is read. Logits are resized back to the original image
before the argmax: resizing a label map instead would blur nothing and misplace every edge by up
to half a model pixel.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as TF
from PIL import Image
from torchvision.transforms._presets import SemanticSegmentation

from ..draw import overlay_segmentation
from ..errors import TorchinferError
from ..evaluation import SEGMENTATION_OPTIONS, evaluate_segmentation, read_segmentation_data
from ..models import LoadedModel, PreprocessConfig
from ..models.outputs import main_output
from ..results import Segmentation
from ..runner.images import full_size
from .base import Batch, Normalise, Predictor
from .resizing import input_size_of, resize_and_crop
from .spec import TaskImplementation


@dataclass(frozen=True)
class _Geometry:
    original: tuple[int, int]  # (h, w) of the picture (its file's size)
    resized: tuple[int, int]  # (h, w) fed to the model
    transposed: bool = False  # stored lying down in the batch container (_pad_together)


class SegmentationPredictor(Predictor[Segmentation]):
    """Segments images with the preprocessing of the model's weights (short side to 520 for
    torchvision's). Images of different shapes in one batch run in same-shape groups, so every
    image sees exactly what it would see alone (no padding changes the global context that
    DeepLabV3's image pooling branch reads)."""

    task = "segment"
    shrinks_images = True

    def __init__(self, model: LoadedModel, *, return_probabilities: bool = False, **kwargs: Any):
        super().__init__(model, **kwargs)
        self.config = model.preprocess
        # images whose resize would blow up are refused on their header (io.limits)
        self.loader = replace(self.loader, resize_size=self.config.resize_size)
        self.return_probabilities = return_probabilities
        self.normalise = Normalise(self.config.mean, self.config.std, self.device)

    def resize_target(self, size: tuple[int, int]) -> tuple[int, int]:
        return input_size_of(size, self.config)

    def preprocess(self, images: Sequence[Image.Image], sources: Sequence[str]) -> Batch:
        cfg = self.config
        arrays, originals = [], []
        for img, source in zip(images, sources):
            size = full_size(img)  # a reduced decode's masks are still the file's size
            originals.append((size[1], size[0]))
            arrays.append(resize_and_crop(img, cfg, source))
        container, transposed = _pad_together(arrays)
        geometry = [_Geometry(original, arr.shape[:2], t)
                    for original, arr, t in zip(originals, arrays, transposed)]
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
            if batch.meta[idx[0]].transposed:  # one shape, one orientation in the container
                images = tensor[idx, :, :w, :h].transpose(2, 3).contiguous(
                    memory_format=torch.channels_last if self.channels_last
                    else torch.contiguous_format)
            else:
                images = tensor[idx, :, :h, :w]
            out = main_output(self.module(images), ndim=4, what="the segmenter")
            for j, i in enumerate(idx):
                logits[i] = out[j]
        return logits  # type: ignore[return-value]

    def postprocess(self, raw: list[torch.Tensor], batch: Batch) -> list[Segmentation]:
        return segmentation_results(raw, batch.sources, [g.original for g in batch.meta],
                                    self.model.labels,
                                    return_probabilities=self.return_probabilities)

    def failed(self, source: str, reason: str) -> Segmentation:
        return Segmentation(source=source, error=reason)


def segmentation_results(logits: Sequence[torch.Tensor], sources: Sequence[str],
                         sizes: Sequence[tuple[int, int]], labels: Sequence[str] | None, *,
                         return_probabilities: bool = False,
                         windows: Sequence[Window | None] | None = None) -> list[Segmentation]:
    """Per image, (C, h, w) logits covering the whole image -> its Segmentation at its
    original ``sizes`` (h, w): logits upsampled bilinearly, then the argmax. Where ``windows``
    gives an image a window, its logits cover more than the image: they are upsampled to
    its ``sizes`` entry and the window of that is the image."""
    names = list(labels) if labels else [str(i) for i in range(logits[0].shape[0])]
    if len(names) != logits[0].shape[0]:
        raise TorchinferError(f"{len(names)} labels for a model with {logits[0].shape[0]} "
                              "classes: check --labels / num_classes")
    dtype = torch.uint8 if len(names) <= 256 else torch.int32
    results = []
    for source, image_logits, size, window in zip(sources, logits, sizes,
                                                  windows or [None] * len(sizes)):
        probs = None
        if return_probabilities:
            mask, full = upsampled_softmax(image_logits.float(), size, dtype)
            if window is not None:
                mask, full = mask[window].contiguous(), full[:, window[0], window[1]].contiguous()
            probs = full.cpu().numpy()
        else:
            mask = upsampled_argmax(image_logits.float(), size, dtype, window)
        results.append(Segmentation(source=source, mask=mask.cpu().numpy(),
                                    labels=tuple(names), probabilities=probs))
    return results


def _pad_together(arrays: list[np.ndarray]) -> tuple[np.ndarray, list[bool]]:
    """One uint8 NHWC container padded to the largest image (forward slices each group back
    out), and which images it holds transposed.

    Padded to both the tallest and the widest, a 256 x 25,600 and a 25,600 x 256 image would
    take a 25,600 x 25,600 slot each (2 GB); when the batch mixes orientations and lying the
    tall ones down makes the container smaller, they lie down and share a 256 x 25,600 slot.
    """
    tall = [a.shape[0] > a.shape[1] for a in arrays]
    upright = (max(a.shape[0] for a in arrays), max(a.shape[1] for a in arrays))
    lying = (max(min(a.shape[:2]) for a in arrays), max(max(a.shape[:2]) for a in arrays))
    transposed = tall if lying[0] * lying[1] < upright[0] * upright[1] else [False] * len(arrays)
    h, w = lying if any(transposed) else upright
    container = np.zeros((len(arrays), h, w, 3), dtype=np.uint8)
    for i, (arr, t) in enumerate(zip(arrays, transposed)):
        arr = arr.transpose(1, 0, 2) if t else arr
        container[i, : arr.shape[0], : arr.shape[1]] = arr
    return container, transposed


# Below this share of source cells with one class at all 4 corners, interpolating only the
# boundary pixels (gathered one by one) costs more than interpolating everything (measured:
# 1/3 boundary cells, 254 vs 185 ms for 21 classes at 1600x1067; large regions, 52 vs 187).
MIN_AGREEING_CELLS = 0.85
# Floats (64 MB) that upsampling may hold per temporary: a bigger output is computed in tiles,
# so an image at the pixel limit does not need classes x pixels floats at once (21 classes at
# 89 megapixels: 7.5 GB for each of interpolate, softmax, ...).
MAX_UPSAMPLED_ELEMENTS = 1 << 24


Window = tuple[slice, slice]  # (rows, columns) of an image, from 0, steps of 1


def upsampled_argmax(logits: torch.Tensor, size: tuple[int, int],
                     dtype: torch.dtype = torch.int64, window: Window | None = None
                     ) -> torch.Tensor:
    """``interpolate(logits, size, "bilinear").argmax(0)`` without interpolating every class at
    every pixel. Bilinear interpolation is a convex combination of the 4 source pixels around
    a point, so where one class is the (first) argmax at all 4, it is the argmax everywhere
    between them: those pixels take it directly, and only pixels near a class boundary are
    interpolated, with torch's sample positions and weights (align_corners=False). The answer
    is the full computation's, up to float rounding where two classes tie within it (the
    arithmetic is torch's, not its order). ``window``: only those rows
    and columns of the answer are computed and returned (a letterboxed image's part of the
    model's input). Memory: the answer in ``dtype``, plus temporaries of at most
    MAX_UPSAMPLED_ELEMENTS."""
    c, h, w = logits.shape
    H, W = size
    rows, cols = window or (slice(0, H), slice(0, W))
    bounds = (rows.start, rows.stop, cols.start, cols.stop)
    if (rows.step, cols.step) != (None, None) or not all(isinstance(b, int) for b in bounds) \
            or not (0 <= rows.start < rows.stop <= H and 0 <= cols.start < cols.stop <= W):
        raise ValueError(f"window {window} is not a part of a {H} x {W} answer")
    per_pixel = logits.permute(1, 2, 0).contiguous()  # (h, w, C): see class_argmax
    low = per_pixel.argmax(2)
    if (h, w) == (H, W):
        return low[rows, cols].to(dtype)
    # whether the source pixel's class is also its right, lower and lower-right neighbours'
    # (the last row and column count as their own neighbours, as the sampler clamps there)
    edged = torch.cat([low, low[-1:]], 0)
    edged = torch.cat([edged, edged[:, -1:]], 1)
    agree = ((low == edged[1:, :-1]) & (low == edged[:-1, 1:]) & (low == edged[1:, 1:]))
    small = c * H * W <= MAX_UPSAMPLED_ELEMENTS
    if small and agree.float().mean() < MIN_AGREEING_CELLS:  # boundaries everywhere: all of it
        full = TF.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
        return class_argmax(full[:, rows, cols]).to(dtype)
    sampler = _Bilinear(per_pixel, size)
    height, width = rows.stop - rows.start, cols.stop - cols.start
    mask = torch.empty((height, width), dtype=dtype, device=logits.device)
    low = low.to(dtype)
    for tile_rows, tile_cols in _tiles(height, width, MAX_UPSAMPLED_ELEMENTS // c):
        y, x = tile_rows.start + rows.start, tile_cols.start + cols.start  # in the whole answer
        top = sampler.y0[y:y + tile_rows.stop - tile_rows.start]
        left = sampler.x0[x:x + tile_cols.stop - tile_cols.start]
        # the class of each pixel's top-left source pixel, and whether it is all four's;
        # columns gathered first, while the map is small, then whole rows (gathering single
        # bytes across the wide map is the slow way round: 6x for uint8)
        tile = low.index_select(1, left).index_select(0, top)
        ys, xs = torch.nonzero(~agree.index_select(1, left).index_select(0, top), as_tuple=True)
        if len(ys):
            tile[ys, xs] = sampler.at(ys + y, xs + x).argmax(1).to(dtype)
        mask[tile_rows, tile_cols] = tile
    return mask


def class_argmax(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(0)`` of (C, h, w) logits, taken over a copy with each pixel's classes
    side by side: torch's argmax across the outer dimension of a planar tensor is slow on the
    CPU (one core, 5 classes: 8.4 vs 1.9 ms at 208 x 256 for the copy and the argmax; 81 vs
    16 ms at 600 x 800)."""
    return logits.permute(1, 2, 0).contiguous().argmax(2)


def upsampled_softmax(logits: torch.Tensor, size: tuple[int, int],
                      dtype: torch.dtype = torch.int64) -> tuple[torch.Tensor, torch.Tensor]:
    """The argmax (in ``dtype``) and float16 softmax of ``interpolate(logits, size,
    "bilinear")``; beyond MAX_UPSAMPLED_ELEMENTS computed in tiles, so that only the float16
    answer is ever whole (float32 interpolation and softmax would be 4 times its size)."""
    c = logits.shape[0]
    H, W = size
    if c * H * W <= MAX_UPSAMPLED_ELEMENTS:
        full = TF.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
        return class_argmax(full).to(dtype), full.softmax(0).half()
    sampler = _Bilinear(logits.permute(1, 2, 0).contiguous(), size)
    mask = torch.empty(size, dtype=dtype, device=logits.device)
    probs = torch.empty((c, H, W), dtype=torch.float16, device=logits.device)
    for rows, cols in _tiles(H, W, MAX_UPSAMPLED_ELEMENTS // c):
        ys, xs = torch.meshgrid(torch.arange(rows.start, rows.stop, device=logits.device),
                                torch.arange(cols.start, cols.stop, device=logits.device),
                                indexing="ij")
        values = sampler.at(ys.flatten(), xs.flatten())  # (pixels, C)
        shape = (rows.stop - rows.start, cols.stop - cols.start)
        mask[rows, cols] = values.argmax(1).view(shape).to(dtype)
        probs[:, rows, cols] = values.softmax(1).T.reshape(c, *shape).half()
    return mask, probs


def _tiles(height: int, width: int, pixels: int) -> Iterator[tuple[slice, slice]]:
    """(rows, columns) covering a height x width image, each tile at most ``pixels`` pixels
    (but at least one): bands of whole rows, or pieces of one row when a row is too long."""
    pixels = max(1, pixels)
    cols = min(width, pixels)
    rows = max(1, pixels // width) if cols == width else 1
    for r in range(0, height, rows):
        for c in range(0, width, cols):
            yield slice(r, min(r + rows, height)), slice(c, min(c + cols, width))


class _Bilinear:
    """Bilinear interpolation of (h, w, C) logits (a pixel's classes together) to (H, W) at
    chosen output pixels, with torch's sample positions and weights (align_corners=False)."""

    def __init__(self, per_pixel: torch.Tensor, size: tuple[int, int]):
        h, w, c = per_pixel.shape
        self.y0, self.y1, self.wy = _sample_positions(h, size[0], per_pixel.device)
        self.x0, self.x1, self.wx = _sample_positions(w, size[1], per_pixel.device)
        self.width = w
        # one row per source pixel: index_select of rows is 3x faster than p[ys, xs]
        self.rows = per_pixel.reshape(h * w, c)

    def at(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """(n, C): the interpolated classes at output pixels (ys[i], xs[i])."""
        top, bottom = self.y0[ys] * self.width, self.y1[ys] * self.width
        left, right = self.x0[xs], self.x1[xs]
        ly, lx = self.wy[ys, None], self.wx[xs, None]
        pick = self.rows.index_select
        return ((1 - ly) * ((1 - lx) * pick(0, top + left) + lx * pick(0, top + right))
                + ly * ((1 - lx) * pick(0, bottom + left) + lx * pick(0, bottom + right)))


def _sample_positions(n_in: int, n_out: int, device: torch.device
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each output index: the two source indices and the weight of the second, as torch's
    bilinear interpolation computes them with align_corners=False."""
    scale = n_in / n_out
    src = ((torch.arange(n_out, device=device, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = torch.clamp(i0 + 1, max=n_in - 1)
    return i0, i1, src - i0


def describe(result: Segmentation) -> tuple[str, ...]:
    return (", ".join(f"{a.label} {a.fraction:.0%}" for a in result.areas[:4]),
            f"{result.size[1]}x{result.size[0]}")


TASK = TaskImplementation(
    result=Segmentation, predictors=(SegmentationPredictor,),
    # torchvision's segmentation recipe: short side to 520, no crop, ImageNet mean/std
    preprocess=PreprocessConfig.from_transforms(SemanticSegmentation(resize_size=520)),
    output_name="out", read_dataset=read_segmentation_data, evaluator=evaluate_segmentation,
    evaluation_options=SEGMENTATION_OPTIONS, describe=describe, draw=overlay_segmentation)
