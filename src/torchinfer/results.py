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
