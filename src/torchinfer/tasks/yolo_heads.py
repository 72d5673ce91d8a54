"""What a YOLO model's head gives besides boxes and classes, and how its outputs are read.

Ultralytics' tasks share the detect layout and add rows after the C class scores:

    detect   (B, 4 + C, N)                                        one output
    segment  (B, 4 + C + M, N) and prototypes (B, M, H/4, W/4)    two outputs (M = 32)
    pose     (B, 4 + C + K*D, N)   keypoints x, y (, visibility)  kpt_shape [K, D]
    obb      (B, 4 + C + 1, N)     the angle of each box

YOLOv5's layout (B, N, 5 + C + extra) puts an objectness column before the classes; YOLOv5's
segment models add M mask coefficients the same way. YOLO11 exports read as YOLOv8's.

A head comes from an ONNX file's metadata (``head_from_metadata``: Ultralytics writes the
task and, for pose, ``kpt_shape`` and ``kpt_names``) or from the ``decoder`` option for files
that carry none (TorchScript, ``nn.Module``): "yolov8-seg", "yolov8-pose", "yolov8-obb",
"yolov5-seg", besides the detect decoders "yolov8" and "yolov5".
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import TorchinferError
from ..models.card_ultralytics import is_ultralytics_metadata

YOLO_TASKS = ("detect", "segment", "pose", "obb")
LAYOUTS = ("yolov8", "yolov5")
_SUFFIX = {"detect": "", "segment": "-seg", "pose": "-pose", "obb": "-obb"}
HEAD_DECODERS = ("yolov8-seg", "yolov8-pose", "yolov8-obb", "yolov5-seg")
# COCO's person keypoints: what an Ultralytics pose file means when it names none (K = 17)
COCO_KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
                  "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                  "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
# Ultralytics' COCO skeleton (ultralytics.utils.plotting), 0-based keypoint pairs
COCO_SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
                 (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4),
                 (3, 5), (4, 6))


@dataclass(frozen=True)
class YoloHead:
    """task: detect | segment | pose | obb; layout: yolov8 (also YOLO11) | yolov5;
    kpt_shape: (K, D) of a pose head (D = 2: x, y; 3: x, y, visibility), None: read from the
    output (D = 3) once the class count is known; keypoint_names: one per keypoint."""

    task: str = "detect"
    layout: str = "yolov8"
    kpt_shape: tuple[int, int] | None = None
    keypoint_names: tuple[str, ...] | None = None

    @property
    def decoder(self) -> str:
        return self.layout + _SUFFIX[self.task]

    @property
    def skeleton(self) -> tuple[tuple[int, int], ...] | None:
        """COCO's limbs for COCO's 17 person keypoints; None otherwise (points only)."""
        k = self.kpt_shape[0] if self.kpt_shape else None
        names = self.keypoint_names
        return COCO_SKELETON if k == 17 and (names is None or names == COCO_KEYPOINTS) else None


def head_from_decoder(decoder: str) -> YoloHead:
    """The head a decoder name stands for ("yolov8", "yolov5-seg", ...)."""
    for task, suffix in _SUFFIX.items():
        for layout in LAYOUTS:
            if decoder == layout + suffix and decoder in (*LAYOUTS, *HEAD_DECODERS):
                return YoloHead(task=task, layout=layout)
    raise TorchinferError(f"unknown YOLO decoder {decoder!r}: use one of "
                          f"{', '.join((*LAYOUTS, *HEAD_DECODERS))}")


def head_from_metadata(meta: Mapping[str, str], source: str) -> YoloHead | None:
    """The head an Ultralytics export's metadata describes; None for metadata that is not
    Ultralytics' (the output's shape decides). An unknown task, or a pose file without
    ``kpt_shape``, is refused naming what was expected."""
    if not is_ultralytics_metadata(meta):
        return None
    task = meta.get("task", "detect")
    if task not in YOLO_TASKS:
        raise TorchinferError(f"{source}: an Ultralytics {task!r} model; torchinfer decodes "
                              f"Ultralytics exports of task {', '.join(YOLO_TASKS)} (and "
                              "classify)")
    if task != "pose":
        return YoloHead(task=task)
    if "kpt_shape" not in meta:
        raise TorchinferError(f"{source}: an Ultralytics pose model without 'kpt_shape' in its "
                              "metadata: its keypoint rows cannot be told apart; expected "
                              "kpt_shape [K, 2] or [K, 3] (e.g. [17, 3] for COCO persons)")
    shape = _literal(meta["kpt_shape"], "kpt_shape", source)
    if not (isinstance(shape, (list, tuple)) and len(shape) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in shape)
            and shape[0] >= 1 and shape[1] in (2, 3)):
        raise TorchinferError(f"{source}: Ultralytics 'kpt_shape' must be [K, 2] or [K, 3], "
                              f"got {meta['kpt_shape']!r}")
    k = int(shape[0])
    names = _keypoint_names(meta.get("kpt_names"), k, source)
    if names is None and k == 17:
        names = COCO_KEYPOINTS
    return YoloHead(task="pose", kpt_shape=(k, int(shape[1])), keypoint_names=names)


def _literal(text: str, key: str, source: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise TorchinferError(f"{source}: Ultralytics metadata {key!r} unreadable ({exc})") from exc


def _keypoint_names(text: str | None, k: int, source: str) -> tuple[str, ...] | None:
    """Ultralytics writes ``kpt_names`` per class ({0: ['nose', ...], ...}); one list serves
    every class here, the first class's, when it has K names (else: no names)."""
    if not text:
        return None
    value = _literal(text, "kpt_names", source)
    if isinstance(value, dict) and value:
        value = value[min(value)]
    if isinstance(value, (list, tuple)) and len(value) == k:
        return tuple(str(v) for v in value)
    return None


@dataclass(frozen=True)
class HeadOutput:
    """A batch's output split for decoding: ``predictions`` in the decoder's layout,
    ``num_classes``, and the segment head's ``prototypes`` (B, M, h, w)."""

    predictions: torch.Tensor
    num_classes: int | None
    prototypes: torch.Tensor | None = None
    kpt_shape: tuple[int, int] | None = None


def split_output(raw: Any, head: YoloHead, labels: Sequence[str] | None,
                 source: str) -> HeadOutput:
    """The model's output read as ``head`` expects, or an error naming the expected shapes.

    raw: a tensor, or a tuple/list of tensors (an ONNX file's outputs in order; an
    Ultralytics torch module's ``((predictions, prototypes), ...)``)."""
    tensors = _tensors(raw)
    if not tensors or tensors[0].ndim != 3:
        got = ", ".join(str(tuple(t.shape)) for t in tensors) or type(raw).__name__
        raise TorchinferError(f"{source}: a YOLO {head.task} model's first output must be 3-d "
                              f"({_expected(head)}); got {got}")
    pred = tensors[0]
    rows = pred.shape[1] if head.layout == "yolov8" else pred.shape[2]
    first = 4 if head.layout == "yolov8" else 5
    classes = len(labels) if labels else None
    if head.task == "detect":
        return HeadOutput(pred, None)
    if head.task == "segment":
        # the last 4-d output: older Ultralytics modules return feature maps before them
        protos = next((t for t in reversed(tensors[1:]) if t.ndim == 4), None)
        if protos is None:
            check_outputs(head, [tuple(t.shape) for t in tensors], source)
        assert protos is not None  # check_outputs refused the output otherwise
        extra = protos.shape[1]
        num = _classes(rows, first, extra, classes, head, source)
        return HeadOutput(pred, num, prototypes=protos)
    if head.task == "obb":
        return HeadOutput(pred, _classes(rows, first, 1, classes, head, source))
    # pose: K*D rows after the classes
    shape = head.kpt_shape
    if shape is None:
        if classes is None:
            raise TorchinferError(f"{source}: a YOLO pose output of {rows} rows holds C classes "
                                  "and K*D keypoint values; give the labels (--labels) so the "
                                  "keypoints can be told apart")
        values = rows - first - classes
        if values < 3 or values % 3:
            raise TorchinferError(f"{source}: a YOLO pose output of {rows} rows with "
                                  f"{classes} classes leaves {values} keypoint values; "
                                  f"expected K*3 ({_expected(head)})")
        shape = (values // 3, 3)
    num = _classes(rows, first, shape[0] * shape[1], classes, head, source)
    return HeadOutput(pred, num, kpt_shape=shape)


def check_outputs(head: YoloHead, shapes: Sequence[Sequence[Any]], source: str) -> None:
    """Refuse a segment model whose outputs hold no prototypes (a 4-d output), naming the
    two outputs expected."""
    if head.task == "segment" and not any(len(s) == 4 for s in shapes[1:]):
        raise TorchinferError(
            f"{source}: a YOLO segment model gives two outputs, {_expected(head)}; this one "
            f"gives {len(shapes)} ({', '.join(str(tuple(s)) for s in shapes)}): the prototype "
            "output is missing (was it removed from the export?)")


def _tensors(raw: Any) -> list[torch.Tensor]:
    """Every tensor of a (nested) output, in order."""
    if isinstance(raw, torch.Tensor):
        return [raw]
    if isinstance(raw, (tuple, list)):
        return [t for item in raw for t in _tensors(item)]
    return []


def _classes(rows: int, first: int, extra: int, classes: int | None, head: YoloHead,
             source: str) -> int:
    num = rows - first - extra
    if num < 1 or (classes is not None and num != classes):
        have = f"{classes} labels" if classes is not None else "no labels"
        raise TorchinferError(f"{source}: a YOLO {head.task} output of {rows} rows does not fit "
                              f"{_expected(head)} with {have} and {extra} extra rows")
    return num


def _expected(head: YoloHead) -> str:
    box = "4 + C" if head.layout == "yolov8" else "5 + C"
    extra = {"detect": "", "segment": " + 32", "obb": " + 1",
             "pose": f" + {head.kpt_shape[0]}*{head.kpt_shape[1]}" if head.kpt_shape
             else " + K*3"}[head.task]
    pred = f"(B, {box}{extra}, N)" if head.layout == "yolov8" else f"(B, N, {box}{extra})"
    if head.task == "segment":
        return f"the detections {pred} and the mask prototypes (B, 32, H/4, W/4)"
    return pred
