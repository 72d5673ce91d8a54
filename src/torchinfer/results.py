"""Typed results: one dataclass per task, validated on construction, JSON-serialisable.

Every result carries ``source`` (which input it answers), ``speed`` (ms per image for
preprocess / inference / postprocess) and ``error``. A failed input in a batch run gets a result
of its task's type with ``error`` set and no predictions, so a run always yields one result per
input, and a failure is told by ``ok``, not by a type of its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import TorchinferError

# ms per image; "wait" is the model waiting for decoding threads (0 when decoding in turn)
STAGES = ("preprocess", "inference", "postprocess", "wait")


@dataclass(frozen=True, kw_only=True)
class Result:
    """``data``: extras a caller attaches (a camera id, attributes...), JSON values, written
    in the record as ``data``; a ``Detections``' data holds one value per detection instead
    (tracker ids...), as supervision's does."""

    source: str
    speed: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        unknown = set(self.speed) - set(STAGES)
        if unknown:
            raise ValueError(f"speed keys must be among {STAGES}, got {sorted(unknown)}")
        if not all(isinstance(k, str) for k in self.data):
            raise ValueError(f"{self.source}: data keys must be names (str)")

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source}
        if self.error is not None:
            out["error"] = self.error
        out["speed"] = {k: round(v, 3) for k, v in self.speed.items()}
        if self.data and not isinstance(self, Detections):
            out["data"] = {k: _plain(v) for k, v in self.data.items()}
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


@dataclass(frozen=True)
class InstanceMask:
    """One instance's mask, stored cropped to its box (compact: not a full-image array)."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 integer pixel bounds, x1/y1 exclusive
    mask: np.ndarray = field(compare=False, repr=False)  # bool (y1 - y0, x1 - x0)

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.box
        if self.mask.dtype != bool or self.mask.shape != (y1 - y0, x1 - x0):
            raise ValueError(f"mask must be bool of shape {(y1 - y0, x1 - x0)} for box {self.box}, "
                             f"got {self.mask.dtype} {self.mask.shape}")

    @classmethod
    def from_full(cls, full: np.ndarray) -> InstanceMask:
        ys, xs = np.nonzero(full)
        if len(ys) == 0:
            return cls((0, 0, 0, 0), np.zeros((0, 0), bool))
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        return cls((x0, y0, x1, y1), full[y0:y1, x0:x1].astype(bool))

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def full(self, size: tuple[int, int]) -> np.ndarray:
        """The (h, w) boolean mask of the whole image."""
        out = np.zeros(size, dtype=bool)
        x0, y0, x1, y1 = self.box
        out[y0:y1, x0:x1] = self.mask
        return out

    def rle(self, size: tuple[int, int]) -> dict[str, Any]:
        """COCO's uncompressed run-length encoding: runs of 0s and 1s, column-major, 0s first."""
        flat = self.full(size).ravel(order="F")
        changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
        bounds = np.concatenate([[0], changes, [flat.size]])
        counts = np.diff(bounds).tolist()
        if flat.size and flat[0]:
            counts = [0] + counts
        return {"size": [int(size[0]), int(size[1])], "counts": counts}


@dataclass(frozen=True, kw_only=True, repr=False)
class Detections(Result):
    """Objects found in one image: xyxy boxes in ORIGINAL image pixels, scores, class ids and
    names; optional instance masks (box-cropped) and keypoints (N, K, 3: x, y, score), with
    the keypoints' names and skeleton (index pairs) when the model gives them; optional
    rotated boxes (N, 5: centre x, centre y, width, height, angle in radians, clockwise on
    the image), whose ``boxes`` are then their enclosing boxes clipped to the image.

    Index it like an array: ``dets[dets.scores > 0.5]``, ``dets[:3]``.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32), compare=False)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), compare=False)
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), compare=False)
    labels: tuple[str, ...] = ()
    image_size: tuple[int, int] = (0, 0)  # (h, w)
    masks: tuple[InstanceMask, ...] | None = None
    keypoints: np.ndarray | None = field(default=None, compare=False)
    keypoint_names: tuple[str, ...] | None = None
    skeleton: tuple[tuple[int, int], ...] | None = None
    rotated: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        n = len(self.boxes)

        def expect(name: str, ok: bool, wanted: str, got: object) -> None:
            if not ok:
                raise ValueError(f"{self.source}: {name} must be {wanted}, got {got}")

        expect("boxes", self.boxes.ndim == 2 and self.boxes.shape[1] == 4, "(N, 4) xyxy",
               self.boxes.shape)
        expect("scores", self.scores.shape == (n,), f"shape ({n},)", self.scores.shape)
        expect("class_ids", self.class_ids.shape == (n,), f"shape ({n},)", self.class_ids.shape)
        expect("labels", len(self.labels) == n, f"{n} names", len(self.labels))
        if n:
            expect("boxes", bool((self.boxes[:, 2:] >= self.boxes[:, :2]).all()),
                   "x1 >= x0 and y1 >= y0", self.boxes[(self.boxes[:, 2:] < self.boxes[:, :2]).any(1)][:1])
            expect("scores", bool(((self.scores >= 0) & (self.scores <= 1)).all()),
                   "probabilities in [0, 1]", (float(self.scores.min()), float(self.scores.max())))
        if self.masks is not None:
            expect("masks", len(self.masks) == n, f"{n} masks", len(self.masks))
        if self.keypoints is not None:
            expect("keypoints", self.keypoints.ndim == 3 and self.keypoints.shape[0] == n
                   and self.keypoints.shape[2] == 3, f"({n}, K, 3)", self.keypoints.shape)
        k = None if self.keypoints is None else self.keypoints.shape[1]
        if self.keypoint_names is not None:
            expect("keypoint_names", k == len(self.keypoint_names), f"{k} names (one per "
                   "keypoint)", len(self.keypoint_names))
        if self.skeleton is not None:
            expect("skeleton", k is not None and all(
                0 <= a < k and 0 <= b < k for a, b in self.skeleton), f"pairs of keypoint "
                f"indices below {k}", self.skeleton)
        if self.rotated is not None:
            expect("rotated", self.rotated.shape == (n, 5), f"({n}, 5) cx, cy, w, h, angle",
                   self.rotated.shape)
        for key, values in self.data.items():
            expect(f"data[{key!r}]", hasattr(values, "__len__") and len(values) == n,
                   f"{n} values (one per detection)",
                   len(values) if hasattr(values, "__len__") else type(values).__name__)

    def __len__(self) -> int:
        return len(self.boxes)

    def __repr__(self) -> str:
        if not self.ok:
            return f"Detections(source={self.source!r}, error={self.error!r})"
        best = ", ".join(f"{self.labels[i]} {self.scores[i]:.2f}" for i in range(min(3, len(self))))
        extra = " +masks" if self.masks is not None else ""
        extra += " +keypoints" if self.keypoints is not None else ""
        extra += " +rotated" if self.rotated is not None else ""
        return f"Detections(source={self.source!r}, n={len(self)}, best=[{best}]{extra})"

    def __getitem__(self, key: Any) -> Detections:
        idx = np.arange(len(self))[key]
        idx = np.atleast_1d(idx)
        return Detections(
            source=self.source, speed=self.speed, error=self.error,
            boxes=self.boxes[idx], scores=self.scores[idx], class_ids=self.class_ids[idx],
            labels=tuple(self.labels[i] for i in idx), image_size=self.image_size,
            masks=None if self.masks is None else tuple(self.masks[i] for i in idx),
            keypoints=None if self.keypoints is None else self.keypoints[idx],
            keypoint_names=self.keypoint_names, skeleton=self.skeleton,
            rotated=None if self.rotated is None else self.rotated[idx],
            data={k: _take(v, idx) for k, v in self.data.items()})

    @property
    def corners(self) -> np.ndarray | None:
        """(N, 4, 2) corners of the rotated boxes in original pixels (None without them),
        in Ultralytics' order: from the (+w/2, +h/2) corner of each box's own frame, around."""
        if self.rotated is None:
            return None
        return rotated_corners(self.rotated)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if not self.ok:
            return out
        out["size"] = list(self.image_size)
        objects = []
        for i in range(len(self)):
            obj: dict[str, Any] = {
                "box": [round(float(v), 2) for v in self.boxes[i]],
                "score": round(float(self.scores[i]), 5),
                "class_id": int(self.class_ids[i]), "label": self.labels[i]}
            if self.masks is not None:
                obj["mask"] = self.masks[i].rle(self.image_size)
            if self.keypoints is not None:
                obj["keypoints"] = [[round(float(v), 2) for v in kp] for kp in self.keypoints[i]]
            if self.rotated is not None:
                cx, cy, w, h, angle = (float(v) for v in self.rotated[i])
                obj["rotated_box"] = {"cx": round(cx, 2), "cy": round(cy, 2), "w": round(w, 2),
                                      "h": round(h, 2), "angle": round(angle, 6)}
                obj["corners"] = [[round(float(v), 2) for v in p] for p in rotated_corners(
                    self.rotated[i:i + 1])[0]]
            if self.data:
                obj["data"] = {k: _plain(v[i]) for k, v in self.data.items()}
            objects.append(obj)
        out["detections"] = objects
        if self.keypoint_names is not None:
            out["keypoint_names"] = list(self.keypoint_names)
        return out

    def to_coco(self, image_id: int, category_ids: dict[int, int] | None = None) -> list[dict[str, Any]]:
        """COCO results-format records (``coco_entry``); ``category_ids`` maps our class ids to
        the dataset's category ids (identity by default)."""
        records = []
        for i in range(len(self)):
            cid = int(self.class_ids[i])
            records.append(coco_entry(
                image_id, category_ids[cid] if category_ids else cid,
                [float(v) for v in self.boxes[i]], float(self.scores[i]),
                segmentation=None if self.masks is None else self.masks[i].rle(self.image_size),
                keypoints=None if self.keypoints is None
                else [float(v) for v in self.keypoints[i].ravel()]))
        return records


@dataclass(frozen=True, kw_only=True, repr=False)
class MultiTask(Result):
    """One input's answers from several heads (or several models run over one decode): one
    typed result per head, by head name, each the same as its single-task result. A failed
    input has ``error`` and no heads."""

    heads: Mapping[str, Result] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.error is None and not self.heads:
            raise ValueError(f"{self.source}: a multi-head result needs heads (or an error)")
        if self.error is not None and self.heads:
            raise ValueError(f"{self.source}: a failed result carries no heads")
        for name, head in self.heads.items():
            if not isinstance(head, Result) or isinstance(head, MultiTask):
                raise ValueError(f"{self.source}: head {name!r} must be a single-task result, "
                                 f"got {type(head).__name__}")

    def __getitem__(self, name: str) -> Result:
        try:
            return self.heads[name]
        except KeyError:
            raise TorchinferError(f"no head {name!r}: this result has "
                                  f"{', '.join(self.heads) or 'none'}") from None

    def __repr__(self) -> str:
        if not self.ok:
            return f"MultiTask(source={self.source!r}, error={self.error!r})"
        inner = ", ".join(f"{name}={type(r).__name__}" for name, r in self.heads.items())
        return f"MultiTask(source={self.source!r}, {inner})"

    def to_dict(self) -> dict[str, Any]:
        """The common keys once, then each head's record without them."""
        out = super().to_dict()
        if self.ok:
            out["heads"] = {name: {k: v for k, v in head.to_dict().items()
                                   if k not in ("source", "speed")}
                            for name, head in self.heads.items()}
        return out


def coco_entry(image_id: Any, category_id: Any, box: Sequence[float], score: float, *,
               segmentation: dict[str, Any] | None = None,
               keypoints: list[float] | None = None) -> dict[str, Any]:
    """One detection in COCO's results format, its xyxy ``box`` as ``bbox`` x, y, width,
    height: what ``Detections.to_coco`` gives and a run's ``coco_results.json`` holds (made
    there from the JSONL records, so that a resumed run's lines are in it too)."""
    x0, y0, x1, y1 = box
    entry: dict[str, Any] = {"image_id": image_id, "category_id": category_id,
                             "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score}
    if segmentation is not None:
        entry["segmentation"] = segmentation
    if keypoints is not None:
        entry["keypoints"] = keypoints  # x, y, score per keypoint, one flat list
    return entry


def rotated_corners(rotated: np.ndarray) -> np.ndarray:
    """(N, 4, 2) corners of (N, 5) rotated boxes (cx, cy, w, h, angle): the box's half-width
    along its angle plus and minus its half-height across it (Ultralytics' order)."""
    rotated = np.asarray(rotated, dtype=np.float64).reshape(-1, 5)
    centre = rotated[:, None, :2]
    cos, sin = np.cos(rotated[:, 4:5]), np.sin(rotated[:, 4:5])
    half_w, half_h = rotated[:, 2:3] / 2, rotated[:, 3:4] / 2
    along = np.concatenate([half_w * cos, half_w * sin], 1)[:, None]
    across = np.concatenate([-half_h * sin, half_h * cos], 1)[:, None]
    return np.concatenate([centre + along + across, centre + along - across,
                           centre - along - across, centre - along + across], 1)


def _plain(value: Any) -> Any:
    """A JSON value: NumPy scalars and arrays as Python numbers and lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _take(values: Any, idx: np.ndarray) -> Any:
    """``values`` (an array or a sequence, one per detection) at the positions ``idx``."""
    if isinstance(values, np.ndarray):
        return values[idx]
    return [values[i] for i in idx]
