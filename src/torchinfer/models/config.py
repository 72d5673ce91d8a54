"""Preprocessing settings and label names: the config that travels with a model's weights.

Values come from torchvision's weights (``weights.transforms()`` and ``weights.meta``), never
from a table typed in here. A model without torchvision weights (a user's own factory) starts
from torchvision's ``ImageClassification`` defaults, and every value can be overridden.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torchvision.transforms import InterpolationMode
from torchvision.transforms._presets import ImageClassification

from ..errors import TorchinferError

_INTERPOLATIONS = {m.value: m for m in InterpolationMode}
FLAVOURS = ("torchvision", "transformers")
MAX_INPUT_SIDE = 8192  # pixels: 4x the largest resize torchvision's published weights use


@dataclass(frozen=True)
class PreprocessConfig:
    """Resize the short side to ``resize_size``, centre-crop ``crop_size``, normalise.

    Sizes are (height, width); ``resize_size`` of one int means "short side" as in torchvision.
    ``crop_size`` None means no crop (torchvision's segmentation recipe).
    """

    resize_size: tuple[int, ...]
    crop_size: tuple[int, int] | None
    mean: tuple[float, ...]  # 3 values, R G B (checked below)
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    antialias: bool = True
    # with a short-side resize: the long side's cap (DETR's ``longest_edge``), the short side
    # shrinking to keep the aspect ratio (transformers' ``get_size_with_aspect_ratio``)
    max_size: int | None = None
    # whose arithmetic the resize and crop follow, to the pixel: "torchvision" (PIL resize,
    # the crop's offset rounded; torchvision's and timm's transforms) or "transformers" (a
    # uint8 tensor resize, the crop's offset truncated; its default image processors)
    flavour: str = "torchvision"
    # with a resize to (H, W): each side rounded to a multiple of this (transformers' DPT and
    # Depth Anything processors, ``ensure_multiple_of``); with ``keep_aspect_ratio`` both
    # sides scale by the factor nearer 1 first (``get_resize_output_image_size``)
    multiple_of: int | None = None
    keep_aspect_ratio: bool = False
    # with no resize target (``resize_size`` empty): the image's own size, each side floored
    # to a multiple of this (transformers' GLPN processor, ``size_divisor``)
    size_divisor: int | None = None

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise TorchinferError(f"unknown interpolation {self.interpolation!r}: "
                                  f"use one of {sorted(_INTERPOLATIONS)}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != 3:
                raise TorchinferError(f"{name} needs 3 values (R, G, B), got {len(values)}: {values}")
        if any(s <= 0 for s in self.std):
            raise TorchinferError(f"std values must be positive, got {self.std}")
        if self.size_divisor is not None:
            if self.resize_size or self.crop_size is not None or self.size_divisor < 1:
                raise TorchinferError(f"size_divisor keeps the image's own size (no resize_size "
                                      f"nor crop, size_divisor >= 1), got resize "
                                      f"{self.resize_size}, crop {self.crop_size}, size_divisor "
                                      f"{self.size_divisor}")
        elif len(self.resize_size) not in (1, 2) or min(self.resize_size) <= 0:
            raise TorchinferError(f"resize_size must be 1 or 2 positive ints, got {self.resize_size}")
        if self.crop_size is not None and (len(self.crop_size) != 2 or min(self.crop_size) <= 0):
            raise TorchinferError(f"crop_size must be 2 positive ints, got {self.crop_size}")
        if self.flavour not in FLAVOURS:
            raise TorchinferError(f"unknown preprocessing flavour {self.flavour!r}: use one of "
                                  f"{', '.join(FLAVOURS)}")
        if self.max_size is not None and (len(self.resize_size) != 1 or
                                          self.max_size < self.resize_size[0]):
            raise TorchinferError(f"max_size caps a short-side resize and is at least it, got "
                                  f"max_size {self.max_size} with resize {self.resize_size}")
        if (self.multiple_of is not None or self.keep_aspect_ratio) and (
                len(self.resize_size) != 2 or self.max_size is not None
                or (self.multiple_of is not None and self.multiple_of < 1)):
            raise TorchinferError(f"multiple_of and keep_aspect_ratio shape a resize to H,W "
                                  f"(multiple_of >= 1), got resize {self.resize_size}, "
                                  f"multiple_of {self.multiple_of}")
        sides = (*self.resize_size, *(self.crop_size or ()), self.max_size or 0, 0)
        if max(sides) > MAX_INPUT_SIDE:
            # every image is resampled to this size before the model runs: a file (or a typo)
            # asking for 60,000 pixels would allocate gigabytes per image
            raise TorchinferError(f"input sizes up to {MAX_INPUT_SIDE} pixels a side are "
                                  f"supported, got resize {self.resize_size}, crop "
                                  f"{self.crop_size}")

    @property
    def nominal_side(self) -> int:
        """The side of a square the model is traced and checked at when its inputs vary: the
        short side of its resize, or, for a model run at the image's own size, 384 pixels
        floored to its size divisor."""
        if self.resize_size:
            return int(self.resize_size[0])
        m = self.size_divisor or 1
        return max(m, 384 // m * m)

    @property
    def interpolation_mode(self) -> InterpolationMode:
        return _INTERPOLATIONS[self.interpolation]

    @classmethod
    def from_transforms(cls, transforms: Any) -> PreprocessConfig:
        """Read the settings off a torchvision ``ImageClassification`` or
        ``SemanticSegmentation`` preset."""
        crop = getattr(transforms, "crop_size", None)
        return cls(
            resize_size=tuple(int(s) for s in transforms.resize_size),
            crop_size=(int(crop[0]), int(crop[-1])) if crop else None,
            mean=tuple(float(m) for m in transforms.mean),
            std=tuple(float(s) for s in transforms.std),
            interpolation=transforms.interpolation.value,
            antialias=bool(transforms.antialias if transforms.antialias is not None else True),
        )

    @classmethod
    def default(cls) -> PreprocessConfig:
        """torchvision's classification defaults (resize 256, crop 224, ImageNet mean/std): the
        start of a model that brings no preprocessing. Each task's own default is in its spec
        (``torchinfer.tasks.task_spec(name).preprocess``)."""
        return cls.from_transforms(ImageClassification(crop_size=224))

    def with_overrides(self, *, input_size: int | tuple[int, int] | None = None,
                       mean: tuple[float, ...] | None = None,
                       std: tuple[float, ...] | None = None,
                       interpolation: str | None = None) -> PreprocessConfig:
        """Change the input size (the crop, keeping this config's resize/crop ratio; or, without
        a crop, the resize: an int is the short side), and mean/std."""
        cfg = self
        if input_size is not None and self.crop_size is None:
            size = (input_size,) if isinstance(input_size, int) else tuple(input_size)
            cfg = replace(cfg, resize_size=tuple(int(v) for v in size), size_divisor=None)
        elif input_size is not None and self.crop_size is not None:
            h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
            # keep the weights' resize-to-crop ratio (e.g. 256/224) so the field of view matches
            ratio = self.resize_size[0] / self.crop_size[0]
            if len(self.resize_size) == 1:
                resize: tuple[int, ...] = (int(round(min(h, w) * ratio)),)
            else:
                resize = (int(round(h * ratio)), int(round(w * ratio)))
            cfg = replace(cfg, resize_size=resize, crop_size=(int(h), int(w)))
        if mean is not None:
            cfg = replace(cfg, mean=tuple(float(m) for m in mean))
        if std is not None:
            cfg = replace(cfg, std=tuple(float(s) for s in std))
        if interpolation is not None:
            cfg = replace(cfg, interpolation=interpolation)
        return cfg

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessConfig:
        """The inverse of ``to_dict`` (lists for tuples); TorchinferError on unknown keys or
        bad values."""
        try:
            fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                      for k, v in data.items()}
            return cls(**fields)
        except (TypeError, AttributeError) as exc:
            raise TorchinferError(f"not a preprocessing config ({exc})") from exc

    def to_dict(self) -> dict[str, Any]:
        return {"resize_size": list(self.resize_size),
                "crop_size": list(self.crop_size) if self.crop_size else None,
                "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "antialias": self.antialias,
                **({"max_size": self.max_size} if self.max_size is not None else {}),
                **({"flavour": self.flavour} if self.flavour != "torchvision" else {}),
                **({"multiple_of": self.multiple_of} if self.multiple_of is not None else {}),
                **({"keep_aspect_ratio": True} if self.keep_aspect_ratio else {}),
                **({"size_divisor": self.size_divisor} if self.size_divisor is not None else {})}


def read_utf8(path: Path, what: str) -> str:
    """A text file's contents as UTF-8 (a byte-order mark dropped), or one line naming the
    file, the line and the byte that is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TorchinferError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TorchinferError(f"{what} {path}: line {line} is not UTF-8 (byte "
                              f"{data[exc.start]:#04x} at offset {exc.start}); save it as "
                              "UTF-8") from exc


def read_labels(path: str | Path) -> list[str]:
    """Read class names from a text file (one per line) or JSON (a list, ``{"0": "cat", ...}``,
    or an object with a ``names``/``labels``/``categories`` entry holding either)."""
    path = Path(path)
    if not path.is_file():
        raise TorchinferError(f"labels file not found: {path}")
    text = read_utf8(path, "labels file")
    if path.suffix.lower() != ".json":
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TorchinferError(f"{path}: invalid JSON ({exc})") from exc
    if isinstance(data, dict):
        for key in ("names", "labels", "categories", "classes"):
            if key in data:
                data = data[key]
                break
    if isinstance(data, list) and all(isinstance(x, str) for x in data):
        return list(data)
    if isinstance(data, dict):
        try:
            by_index = {int(k): str(v) for k, v in data.items()}
        except ValueError as exc:
            raise TorchinferError(f"{path}: label keys must be class indices, got {exc}") from exc
        expected = list(range(len(by_index)))
        if sorted(by_index) != expected:
            raise TorchinferError(f"{path}: label indices must be 0..{len(by_index) - 1} "
                                  f"without gaps, got {sorted(by_index)[:10]}...")
        return [by_index[i] for i in expected]
    raise TorchinferError(f"{path}: expected a list of names or an {{index: name}} object")
