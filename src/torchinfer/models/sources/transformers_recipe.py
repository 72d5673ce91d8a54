"""A transformers image processor's settings as torchinfer's recipe (``PreprocessConfig``).

The processors read here are transformers' default (torchvision) backend: a uint8 tensor
resized with antialiasing, cropped with the offset truncated, rescaled and normalised in
float32. Their size forms are ``height``/``width`` (squash), ``shortest_edge`` (the aspect
ratio kept; ConvNeXt's ``crop_pct`` below 384), and ``shortest_edge`` + ``longest_edge``
(DETR's), and DPT's ``height``/``width`` with ``keep_aspect_ratio`` and ``ensure_multiple_of``
(DPT, Depth Anything), and GLPN's own size floored to its ``size_divisor``. A processor
class not listed here may preprocess in its own way (flip channels, add offsets): it is
refused rather than approximated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import WeightsError
from ..config import PreprocessConfig

# processors whose preprocessing is the base class's resize/crop/rescale/normalise (some add
# label handling for training, or padding that torchinfer replaces by same-size groups)
SUPPORTED = frozenset({
    "ViTImageProcessor", "DeiTImageProcessor", "BeitImageProcessor", "BitImageProcessor",
    "ConvNextImageProcessor", "SegformerImageProcessor", "DetrImageProcessor",
    "ConditionalDetrImageProcessor", "DeformableDetrImageProcessor", "YolosImageProcessor",
    "RTDetrImageProcessor", "DPTImageProcessor", "GLPNImageProcessor",
})
# transformers' PIL resample numbers -> the tensor interpolation its torchvision backend uses
_RESAMPLE = {0: "nearest-exact", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box",
             5: "hamming"}


def recipe_of(processor: Any, task: str, where: Path) -> PreprocessConfig:
    """The recipe of ``processor`` (an image processor instance) for ``task``."""
    kind = type(processor).__name__
    if kind not in SUPPORTED:
        raise WeightsError(f"{where}: {kind} preprocesses in its own way, which torchinfer does "
                           f"not reproduce yet (supported: {', '.join(sorted(SUPPORTED))})")
    if kind == "GLPNImageProcessor":
        return _own_size_recipe(processor, where)
    if not getattr(processor, "do_resize", True):
        raise WeightsError(f"{where}: the processor does not resize, so the model's input size "
                           "is unknown")
    size = _size_dict(getattr(processor, "size", None))
    max_size = None
    crop: tuple[int, int] | None = None
    if "height" in size and "width" in size:
        resize: tuple[int, ...] = (size["height"], size["width"])
    elif "shortest_edge" in size and "longest_edge" in size:
        resize, max_size = (size["shortest_edge"],), size["longest_edge"]
    elif "shortest_edge" in size and kind == "ConvNextImageProcessor":
        edge = size["shortest_edge"]
        if edge < 384:  # the short side to edge / crop_pct, then the centre edge x edge
            resize, crop = (int(edge / float(processor.crop_pct)),), (edge, edge)
        else:  # warped to a square, no crop
            resize = (edge, edge)
    elif "shortest_edge" in size:
        resize = (size["shortest_edge"],)
    else:
        raise WeightsError(f"{where}: size {size} is not a form torchinfer reproduces "
                           "(height/width, shortest_edge, shortest_edge + longest_edge)")
    if getattr(processor, "do_center_crop", False):
        crop_size = _size_dict(getattr(processor, "crop_size", None))
        if "height" not in crop_size or "width" not in crop_size:
            raise WeightsError(f"{where}: crop_size {crop_size} has no height and width")
        crop = (crop_size["height"], crop_size["width"])
    if task == "classify" and crop is None and len(resize) != 2:
        raise WeightsError(f"{where}: a classifier's processor must give a fixed size")
    interpolation = _interpolation(processor, where)
    mean, std = _normalisation(processor, where)
    multiple, keep_aspect = None, False
    if kind == "DPTImageProcessor":
        if getattr(processor, "do_pad", False):
            raise WeightsError(f"{where}: the processor pads to a multiple of its size_divisor, "
                               "which torchinfer does not reproduce yet")
        keep_aspect = bool(getattr(processor, "keep_aspect_ratio", False))
        multiple = int(getattr(processor, "ensure_multiple_of", 1) or 1)
        if len(resize) != 2:
            raise WeightsError(f"{where}: a DPT processor's size must be height and width")
    return PreprocessConfig(resize_size=resize, crop_size=crop, mean=mean, std=std,
                            max_size=max_size, interpolation=interpolation,
                            flavour="transformers", multiple_of=multiple,
                            keep_aspect_ratio=keep_aspect)


def _own_size_recipe(processor: Any, where: Path) -> PreprocessConfig:
    """GLPN's: no size, each side floored to a multiple of ``size_divisor``, rescaled (its
    processor always resizes, whatever ``do_resize`` says)."""
    divisor = int(getattr(processor, "size_divisor", 32) or 32)
    mean, std = _normalisation(processor, where)
    return PreprocessConfig(resize_size=(), crop_size=None, mean=mean, std=std,
                            interpolation=_interpolation(processor, where),
                            flavour="transformers", size_divisor=divisor)


def _interpolation(processor: Any, where: Path) -> str:
    resample = getattr(processor, "resample", 2)
    interpolation = _RESAMPLE.get(int(resample) if resample is not None else 2)
    if interpolation is None:
        raise WeightsError(f"{where}: unknown resample {resample!r}")
    return interpolation


def _size_dict(size: Any) -> dict[str, int]:
    if size is None:
        return {}
    items = size.items() if hasattr(size, "items") else vars(size).items()
    return {k: int(v) for k, v in items if v is not None}


def _normalisation(processor: Any, where: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """mean/std on [0, 1] pixels that give the processor's ``(x * rescale - mean) / std``
    on [0, 255] ones: (x / 255 - M) / S with M = mean / (255 rescale), S = std / (255 rescale)."""
    factor = float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else 1.0
    if getattr(processor, "do_normalize", True):
        mean, std = _three(processor.image_mean, where), _three(processor.image_std, where)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if factor <= 0:
        raise WeightsError(f"{where}: rescale_factor must be positive, got {factor}")
    scale = 255.0 * factor
    return tuple(m / scale for m in mean), tuple(s / scale for s in std)


def _three(values: Any, where: Path) -> tuple[float, ...]:
    values = [values] * 3 if isinstance(values, (int, float)) else list(values)
    if len(values) != 3:
        raise WeightsError(f"{where}: image_mean/image_std need 3 values, got {values}")
    return tuple(float(v) for v in values)
