"""The resize and crop of a model's recipe (``PreprocessConfig``), to the pixel of the library
the recipe comes from: torchvision's (and timm's) transforms resize the PIL image and round the
crop's offset; transformers' image processors resize a uint8 tensor and truncate it."""

from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.functional as F
import torchvision.transforms.v2.functional as F2
from PIL import Image

from ..models import PreprocessConfig
from ..runner.images import full_size
from ..runner.limits import check_resize, resized_size


def resize_and_crop(img: Image.Image, cfg: PreprocessConfig, source: str) -> np.ndarray:
    """``img`` resized as its whole picture would be (a reduced decode lands on the same
    size) and cropped: (H, W, 3) uint8."""
    size = full_size(img)  # the file's size: a reduced decode resizes to the same pixels
    check_resize(size, cfg.resize_size, source)  # for images that skip the loader
    w, h = resized_size(size, cfg.resize_size, cfg.max_size)
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
