"""The resize and crop of a model's recipe (``PreprocessConfig``), to the pixel of the library
the recipe comes from: torchvision's (and timm's) transforms resize the PIL image and round the
crop's offset; transformers' image processors resize a uint8 tensor and truncate it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as F
import torchvision.transforms.v2.functional as F2
from PIL import Image

from ..models import PreprocessConfig
from ..runner.images import full_size
from ..runner.limits import check_resize, resized_size
from .base import Batch, Normalise


def input_size_of(size: tuple[int, int], cfg: PreprocessConfig) -> tuple[int, int]:
    """The (w, h) an image of ``size`` (w, h) is resized to by ``cfg``, before any crop."""
    return resized_size(size, cfg.resize_size, cfg.max_size, cfg.multiple_of,
                        cfg.keep_aspect_ratio, cfg.size_divisor)


def resize_and_crop(img: Image.Image, cfg: PreprocessConfig, source: str) -> np.ndarray:
    """``img`` resized as its whole picture would be (a reduced decode lands on the same
    size) and cropped: (H, W, 3) uint8."""
    size = full_size(img)  # the file's size: a reduced decode resizes to the same pixels
    check_resize(size, cfg.resize_size, source)  # for images that skip the loader
    w, h = input_size_of(size, cfg)
    if cfg.flavour == "transformers":
        # planar (C, H, W) memory, as the processor's tensor
        tensor = torch.from_numpy(np.asarray(img).transpose(2, 0, 1).copy())
        if tuple(tensor.shape[1:]) != (h, w):
            # v2's resize on a stack of one, as the processor resizes its same-size groups:
            # the uint8 kernels round by the tensor's shape and memory, so to the level
            tensor = F2.resize(tensor[None], [h, w], interpolation=cfg.interpolation_mode,
                               antialias=cfg.antialias)[0]
        if cfg.crop_size is not None:
            ch, cw = cfg.crop_size
            top, left = int((h - ch) / 2.0), int((w - cw) / 2.0)  # truncated, as transformers
            if top < 0 or left < 0:  # smaller than the crop: centred with padding
                tensor = F.center_crop(tensor, [ch, cw])
            else:
                tensor = tensor[:, top:top + ch, left:left + cw]
        return tensor.permute(1, 2, 0).numpy()
    img = F.resize(img, [h, w], interpolation=cfg.interpolation_mode, antialias=cfg.antialias)
    if cfg.crop_size is not None:
        img = F.center_crop(img, list(cfg.crop_size))
    return np.asarray(img)


@dataclass(frozen=True)
class Fitted:
    """Where one picture of a batch stands: its own (h, w), and the (h, w) fed to the model
    (the top-left corner of the batch's container)."""

    original: tuple[int, int]
    resized: tuple[int, int]


def fitted_batch(images: Sequence[Image.Image], sources: Sequence[str],
                 cfg: PreprocessConfig) -> Batch:
    """Each picture resized by ``cfg`` at the top left of one uint8 container; ``meta``: its
    ``Fitted``. The model sees each one alone or with others of its size (``by_size``), never
    the padding."""
    arrays = [resize_and_crop(img, cfg, src) for img, src in zip(images, sources)]
    container = np.zeros((len(arrays), max(a.shape[0] for a in arrays),
                          max(a.shape[1] for a in arrays), 3), dtype=np.uint8)
    for i, a in enumerate(arrays):
        container[i, :a.shape[0], :a.shape[1]] = a
    meta = [Fitted((full_size(img)[1], full_size(img)[0]), (a.shape[0], a.shape[1]))
            for img, a in zip(images, arrays)]
    return Batch(torch.from_numpy(container).permute(0, 3, 1, 2), list(sources), meta)


def by_size(tensor: Any, meta: Sequence[Fitted], run: Callable[[Any], Any]
            ) -> list[Any]:
    """``run`` on the pictures of each size together (a batch of their (h, w) corner); per
    picture, its row of what ``run`` returned, in the batch's order."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, fitted in enumerate(meta):
        groups[fitted.resized].append(i)
    out: list[Any] = [None] * len(meta)
    for (h, w), idx in groups.items():
        for i, row in zip(idx, run(tensor[idx, :, :h, :w])):
            out[i] = row
    return out


class FittedToRecipe:
    """What a predictor that runs its model at its recipe's size (the weights' own
    preprocessing, ``model.preprocess``) shares: the resize, the batch of pictures at the top
    left of one container, and the model run on the pictures of each size together
    (``by_size``). ``model_outputs`` says how the model's output becomes one row per picture.
    Mixed into a ``Predictor`` subclass, before it, with ``fit_to_recipe()`` called after its
    ``__init__``."""

    config: PreprocessConfig
    module: Any
    loader: Any
    device: Any
    normalise: Any

    def fit_to_recipe(self, config: PreprocessConfig) -> None:
        self.config = config
        self.loader = replace(self.loader, resize_size=config.resize_size)
        self.normalise = Normalise(config.mean, config.std, self.device)

    def model_outputs(self, raw: Any) -> Any:
        """The model's output for a batch as rows, one per picture."""
        return raw

    def resize_target(self, size: tuple[int, int]) -> tuple[int, int]:
        return input_size_of(size, self.config)

    def preprocess(self, images: Sequence[Image.Image], sources: Sequence[str]) -> Batch:
        return fitted_batch(images, sources, self.config)

    def forward(self, tensor: torch.Tensor, batch: Batch | None = None) -> Any:
        if batch is None:
            return list(self.model_outputs(self.module(tensor)))
        return by_size(tensor, batch.meta, lambda images: self.model_outputs(self.module(images)))
