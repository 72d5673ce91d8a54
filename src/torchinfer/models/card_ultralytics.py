"""Ultralytics' ONNX metadata read as a model card's fields (read only: torchinfer writes its
own keys).

Ultralytics writes ``str()`` of Python values: names ``"{0: 'person', ...}"``, imgsz
``"[640, 640]"``. Segment, pose and obb files are torchinfer detectors (masks, keypoints and
rotated boxes are fields of their detections): their Ultralytics task stays in
``extra["yolo_task"]``, beside ``kpt_shape`` and ``kpt_names`` as written.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

from ..errors import TorchinferError, WeightsError
from .card_strings import CARD_KEYS, FORMAT_KEY
from .config import PreprocessConfig

# Ultralytics task -> torchinfer task. Segment, pose and obb heads add rows after the classes
# (mask coefficients, keypoints, an angle) that the YOLO decoders read (tasks.yolo_heads).
ULTRALYTICS_HEADS = ("segment", "pose", "obb")
ULTRALYTICS_TASKS = {"detect": "detect", **dict.fromkeys(ULTRALYTICS_HEADS, "detect"),
                     "classify": "classify"}
# What ultralytics_card_fields turns into card fields.
ULTRALYTICS_KEYS = frozenset({"names", "imgsz", "task", "version"})


def is_ultralytics_metadata(meta: Mapping[str, str]) -> bool:
    """Whether ONNX metadata is the kind Ultralytics' exporter writes."""
    return "names" in meta and "imgsz" in meta and (
        str(meta.get("author", "")).startswith("Ultralytics") or "stride" in meta)


def ultralytics_card_fields(meta: Mapping[str, str], source: str) -> dict[str, Any]:
    """``ModelCard``'s keyword arguments from an Ultralytics export's metadata: labels from
    ``names``, the letterbox (detect, segment, pose, obb) or resize + crop (classify) at
    ``imgsz`` with inputs in [0, 1] and no mean/std (Ultralytics' preprocessing), the task,
    and the Ultralytics version."""
    task = meta.get("task", "detect")
    if task not in ULTRALYTICS_TASKS:
        raise TorchinferError(f"{source}: an Ultralytics {task!r} model; torchinfer runs "
                              f"Ultralytics exports of task {', '.join(ULTRALYTICS_TASKS)}")
    if task == "pose" and not meta.get("kpt_shape"):
        raise WeightsError(f"{source}: an Ultralytics pose model without 'kpt_shape' in its "
                           "metadata: expected kpt_shape [K, 2] or [K, 3] (e.g. [17, 3])")
    try:
        names = ast.literal_eval(meta["names"])
        imgsz = ast.literal_eval(meta["imgsz"])
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise WeightsError(f"{source}: Ultralytics metadata 'names'/'imgsz' unreadable "
                           f"({exc})") from exc
    labels = _labels(names, source)
    h, w = _image_size(imgsz, meta["imgsz"], source)
    versions = {"ultralytics": meta["version"]} if "version" in meta else {}
    rest = {k: v for k, v in meta.items()
            if k not in ULTRALYTICS_KEYS and k not in CARD_KEYS and k != FORMAT_KEY}
    if task in ULTRALYTICS_HEADS:
        rest["yolo_task"] = task
    preprocess = _ultralytics_preprocess(ULTRALYTICS_TASKS[task], h, w, meta["imgsz"], source)
    return dict(task=ULTRALYTICS_TASKS[task], labels=labels, preprocess=preprocess,
                input_size=(h, w), versions=versions, extra=rest, source=source)


def _labels(names: Any, source: str) -> tuple[str, ...]:
    """Class names in class order, from a list or an id -> name dict."""
    if isinstance(names, dict):  # {0: 'person', 1: 'bicycle', ...}
        if set(names) != set(range(len(names))):
            raise WeightsError(f"{source}: Ultralytics 'names' ids are not 0..{len(names) - 1}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, (list, tuple)):
        raise WeightsError(f"{source}: Ultralytics 'names' must be a list or an id -> name "
                           f"dict, got {type(names).__name__}")
    return tuple(str(n) for n in names)


def _image_size(imgsz: Any, written: str, source: str) -> tuple[int, int]:
    """(h, w) of ``imgsz``: one size for both sides, or [h, w]."""
    sizes = [imgsz] * 2 if isinstance(imgsz, int) else imgsz
    if not isinstance(sizes, (list, tuple)) or len(sizes) not in (1, 2) or \
            not all(isinstance(s, int) for s in sizes):
        raise WeightsError(f"{source}: Ultralytics 'imgsz' must be a size or [h, w], got "
                           f"{written!r}")
    return sizes[0], sizes[-1]


def _ultralytics_preprocess(task: str, h: int, w: int, written: str,
                            source: str) -> PreprocessConfig:
    """Ultralytics' own: inputs in [0, 1] (no mean, no std), letterboxed to (h, w) for a
    detector, resized and cropped to it for a classifier."""
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    try:
        if task == "detect":
            return PreprocessConfig(resize_size=(h, w), crop_size=None, mean=mean, std=std)
        return PreprocessConfig(resize_size=(min(h, w),), crop_size=(h, w), mean=mean, std=std)
    except TorchinferError as exc:
        raise WeightsError(f"{source}: Ultralytics 'imgsz' {written!r}: {exc}") from exc
