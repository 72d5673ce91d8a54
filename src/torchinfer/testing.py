"""Helpers for tests and benchmarks (never imported by the library itself): real photographs
(from ``torchinfer.assets``) and test weights that see them.

A randomly initialised classifier gives a near-uniform softmax with tiny logits, which hides
preprocessing bugs (a channel swap or a different resize still "matches"). ``calibrate`` makes
weights whose answers depend on the picture: BatchNorm statistics are measured on crops of real
photographs and the output layer is scaled until the logits spread.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from .assets import PHOTOGRAPHS, load_photographs, photograph_dir, photograph_paths
from .models.outputs import main_output


@torch.no_grad()
def calibrate(model: nn.Module, images: list[Image.Image], *, size: int = 224,
              crops_per_image: int = 8, logit_std: float = 3.0, seed: int = 0) -> nn.Module:
    """Make ``model``'s answers depend on the picture (in place; returns it in eval mode).

    BatchNorm running statistics become the exact statistics of random crops of ``images``
    (``momentum=None`` is a cumulative average), then the last Linear/Conv layer is scaled so
    the logits on those crops have standard deviation ``logit_std``. Works for classifiers and
    segmenters (their ``out``).
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    crop = v2.Compose([v2.PILToTensor(), v2.RandomResizedCrop(size, scale=(0.2, 1.0)),
                       v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    batch = torch.stack([crop(img) for img in images for _ in range(crops_per_image)])
    batch = batch[torch.randperm(len(batch), generator=generator)]
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    model(batch)
    model.eval()
    head = _last_layer(model)
    if head is not None:
        logits = main_output(model(batch))
        scale = logit_std / max(float(logits.std()), 1e-6)
        head.weight.mul_(scale)
        if head.bias is not None:
            head.bias.mul_(scale)
    return model


def _last_layer(model: nn.Module) -> nn.Linear | nn.Conv2d | None:
    last = None
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            last = m
    return last


def write_sample_jpegs(folder: Path, count: int, seed: int = 0,
                       long_side: tuple[int, int] = (256, 1600)) -> list[Path]:
    """Random crops of the photographs, rescaled so the long side is in ``long_side`` px."""
    rng = random.Random(seed)
    photos = list(load_photographs().values())
    paths = []
    for i in range(count):
        img = photos[i % len(photos)]
        w, h = img.size
        cw, ch = rng.randint(w // 2, w), rng.randint(h // 2, h)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        crop = img.crop((x, y, x + cw, y + ch))
        scale = rng.randint(*long_side) / max(cw, ch)
        crop = crop.resize((max(1, round(cw * scale)), max(1, round(ch * scale))), Image.BILINEAR)
        path = folder / f"img_{i:04d}.jpg"
        crop.save(path, quality=90)
        paths.append(path)
    return paths


def write_phone_jpegs(folder: Path, count: int, seed: int = 0,
                      size: tuple[int, int] = (4000, 3000), noise: float = 5.0) -> list[Path]:
    """The photographs enlarged to ``size`` (12 megapixels, as phones take them) with sensor
    noise of ``noise`` levels, so every 8x8 block carries detail and the files have a
    photograph's entropy (~2.3 MB at quality 90, where a smooth enlargement makes 0.5 MB and
    decodes faster than a real photo)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    photos = list(load_photographs().values())
    paths = []
    for i in range(count):
        img = photos[i % len(photos)].resize(size, Image.BICUBIC)
        if i % 2:  # portrait too
            img = img.transpose(Image.Transpose.ROTATE_90)
        pixels = np.asarray(img, dtype=np.float32) + rng.normal(0, noise, (img.height, img.width, 3))
        path = folder / f"phone_{i:04d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


__all__ = ["PHOTOGRAPHS", "calibrate", "load_photographs", "main_output", "photograph_dir",
           "photograph_paths", "write_phone_jpegs", "write_sample_jpegs"]
