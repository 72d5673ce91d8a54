"""Typed results: one dataclass per task, validated on construction, JSON-serialisable.

Every result carries ``source`` (which input it answers), ``speed`` (ms per image for
preprocess / inference / postprocess) and ``error``. A failed input in a batch run gets a result
of the same type with ``error`` set and no predictions, so a run always yields one result per
input and callers never switch on the type.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import TorchinferError

STAGES = ("preprocess", "inference", "postprocess")


@dataclass(frozen=True, kw_only=True)
class Result:
    source: str
    speed: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None

    def __post_init__(self) -> None:
        unknown = set(self.speed) - set(STAGES)
        if unknown:
            raise ValueError(f"speed keys must be among {STAGES}, got {sorted(unknown)}")

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source}
        if self.error is not None:
            out["error"] = self.error
        out["speed"] = {k: round(v, 3) for k, v in self.speed.items()}
        return out


@dataclass(frozen=True)
class ClassScore:
    index: int
    label: str
    score: float

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"class index must be >= 0, got {self.index}")
        if not (0.0 <= self.score <= 1.0) or math.isnan(self.score):
            raise ValueError(f"score must be a probability in [0, 1], got {self.score}")

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "score": round(self.score, 6)}


@dataclass(frozen=True, kw_only=True)
class Classification(Result):
    """Top-k classes of one image, best first. ``top1`` is ``topk[0]``."""

    topk: tuple[ClassScore, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.error is None and not self.topk:
            raise ValueError(f"{self.source}: a classification needs at least one class "
                             "(or an error)")
        if self.error is not None and self.topk:
            raise ValueError(f"{self.source}: a failed result carries no classes")
        scores = [c.score for c in self.topk]
        if scores != sorted(scores, reverse=True):
            raise ValueError(f"{self.source}: topk must be sorted by score, got {scores}")

    @property
    def top1(self) -> ClassScore:
        if not self.topk:
            raise TorchinferError(f"{self.source}: no prediction ({self.error})")
        return self.topk[0]

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.ok:
            out["top1"] = self.top1.to_dict()
            out["topk"] = [c.to_dict() for c in self.topk]
        return out


@dataclass(frozen=True)
class ClassArea:
    index: int
    label: str
    pixels: int
    fraction: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "pixels": self.pixels,
                "fraction": round(self.fraction, 6)}


@dataclass(frozen=True, kw_only=True)
class Segmentation(Result):
    """A class index per pixel of the ORIGINAL image (``mask``, H x W), and the class names.

    ``probabilities`` (C x H x W, float16) is only present when asked for: at full resolution
    it is large (21 classes x 12 megapixels = 500 MB).
    """

    mask: np.ndarray | None = field(default=None, compare=False, repr=False)
    labels: tuple[str, ...] = ()
    probabilities: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.error is not None:
            if self.mask is not None:
                raise ValueError(f"{self.source}: a failed result carries no mask")
            return
        if self.mask is None or self.mask.ndim != 2 or not np.issubdtype(self.mask.dtype, np.integer):
            got = "None" if self.mask is None else f"{self.mask.dtype} {self.mask.shape}"
            raise ValueError(f"{self.source}: mask must be a 2-D integer array (H, W), got {got}")
        if not self.labels:
            raise ValueError(f"{self.source}: labels are required (one per class)")
        if self.mask.size and int(self.mask.max()) >= len(self.labels):
            raise ValueError(f"{self.source}: mask has class {int(self.mask.max())} but only "
                             f"{len(self.labels)} labels")
        if self.probabilities is not None and self.probabilities.shape != (len(self.labels), *self.mask.shape):
            raise ValueError(f"{self.source}: probabilities must be {(len(self.labels), *self.mask.shape)}, "
                             f"got {self.probabilities.shape}")

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the original image."""
        if self.mask is None:
            raise TorchinferError(f"{self.source}: no mask ({self.error})")
        return (int(self.mask.shape[0]), int(self.mask.shape[1]))

    @property
    def areas(self) -> tuple[ClassArea, ...]:
        """The classes present, largest first, with their pixel counts and image fractions."""
        if self.mask is None:
            return ()
        counts = np.bincount(self.mask.ravel(), minlength=len(self.labels))
        total = max(int(self.mask.size), 1)
        present = [i for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
        return tuple(ClassArea(int(i), self.labels[i], int(counts[i]), float(counts[i] / total))
                     for i in present)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.ok:
            out["size"] = list(self.size)
            out["classes"] = [a.to_dict() for a in self.areas]
        return out
