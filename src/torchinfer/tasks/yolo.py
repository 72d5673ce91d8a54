"""Raw-tensor detectors (what YOLO training exports): letterbox in, decode + NMS out.

The model's output is one tensor per image holding boxes (centre x, centre y, width, height in
letterboxed pixels) and class scores, plus an objectness score in YOLOv5's layout, and after
the classes the extra rows of a segment, pose or OBB head (``extra``: mask coefficients,
keypoints, the angle; see yolo_heads.py):

    yolov5: (B, N, 5 + C + E)   x, y, w, h, objectness, C class scores   (score = obj * class)
    yolov8: (B, 4 + C + E, N)   x, y, w, h, C class scores               (also YOLO11)

Postprocessing keeps boxes above the confidence threshold, runs class-aware NMS
(torchvision.ops.batched_nms; rotated boxes: yolo_obb.py), keeps the best ``max_det`` and maps
boxes back through the letterbox to the original image, as Ultralytics' ``scale_boxes`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import batched_nms, box_convert

from ..errors import TorchinferError
from ..runner.images import full_size
from .yolo_obb import rotated_nms

DECODERS = ("yolov5", "yolov8")
# NMS IoU thresholds when none is given: Ultralytics' predict's default for its own files,
# YOLOv5's detect.py's for any other raw-tensor detector
ULTRALYTICS_IOU, DEFAULT_IOU = 0.7, 0.45
PAD_VALUE = 114  # Ultralytics' grey, so a model trained with its letterbox sees what it knows


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the square model input: scale, then pad."""

    original: tuple[int, int]  # (h, w)
    scale: float
    pad: tuple[int, int]  # (left, top) in model pixels
    resized: tuple[int, int]  # (h, w) of the image inside the letterbox, rounded

    @property
    def gains(self) -> tuple[float, float]:
        """(x, y) model pixels per original pixel: each side was rounded on its own, so the
        two differ slightly from ``scale`` (Ultralytics' ``scale_boxes`` divides by these)."""
        return self.resized[1] / self.original[1], self.resized[0] / self.original[0]

    def to_original(self, boxes: torch.Tensor) -> torch.Tensor:
        """xyxy boxes in model pixels -> original image pixels, clipped to the image."""
        out = self.points_to_original(boxes.reshape(-1, 2, 2)).reshape(boxes.shape)
        return out

    def points_to_original(self, points: torch.Tensor) -> torch.Tensor:
        """(..., 2+) points (x, y first) in model pixels -> original pixels, clipped to the
        image (Ultralytics' ``scale_coords``); columns after x, y are left as they are."""
        (left, top), (gx, gy) = self.pad, self.gains
        h, w = self.original
        out = points.clone()
        out[..., 0] = ((out[..., 0] - left) / gx).clamp(0, w)
        out[..., 1] = ((out[..., 1] - top) / gy).clamp(0, h)
        return out

    def rotated_to_original(self, xywhr: torch.Tensor) -> torch.Tensor:
        """(n, 5) rotated boxes (cx, cy, w, h, angle) in model pixels -> original pixels, not
        clipped (a rotated box may reach past the image), as Ultralytics' OBB predictor."""
        (left, top), (gx, gy) = self.pad, self.gains
        out = xywhr.clone()
        out[:, 0] = (out[:, 0] - left) / gx
        out[:, 1] = (out[:, 1] - top) / gy
        out[:, 2] /= gx
        out[:, 3] /= gy
        return out


def letterbox(img: Image.Image, size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize to fit ``size`` (h, w) keeping the aspect ratio, pad the rest with grey, centred,
    as Ultralytics does: its rounding (``round(pad - 0.1)`` on the top/left side) and its
    resampling, OpenCV's INTER_LINEAR (bilinear, not antialiased), which torch's uint8 bilinear
    reproduces within one level (BENCHMARKS.md) and computes 3x faster than Pillow's
    antialiased resize of a big photograph."""
    # the picture's own size, also for a reduced decode: the same geometry as a full decode,
    # and boxes mapped straight back to the file's pixels
    w, h = full_size(img)
    th, tw = size
    scale = min(th / h, tw / w)
    nw, nh = fitted_size((w, h), size)
    dw, dh = (tw - nw) / 2, (th - nh) / 2
    left, top = round(dw - 0.1), round(dh - 0.1)
    canvas = np.full((th, tw, 3), PAD_VALUE, dtype=np.uint8)
    pixels = torch.from_numpy(np.array(img))
    if (nw, nh) != img.size:
        pixels = F.interpolate(pixels.permute(2, 0, 1)[None], size=(nh, nw), mode="bilinear",
                               align_corners=False, antialias=False)[0].permute(1, 2, 0)
    canvas[top:top + nh, left:left + nw] = pixels.numpy()
    return canvas, Letterbox((h, w), scale, (left, top), (nh, nw))


def fitted_size(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """The (w, h) an image of ``size`` (w, h) takes inside the letterbox ``box`` (h, w)."""
    w, h = size
    scale = min(box[0] / h, box[1] / w)
    # at least 1: a 1,000,000 x 1 image fitted into 640 x 640 would be 0.00064 pixels high
    return max(1, round(w * scale)), max(1, round(h * scale))


def guess_decoder(raw: torch.Tensor) -> str:
    """yolov8 puts the short (4 + C) axis first, yolov5 last."""
    if raw.ndim != 3:
        raise TorchinferError(f"raw detector output has shape {tuple(raw.shape)}; expected "
                              "(B, N, 5+C) for yolov5 or (B, 4+C, N) for yolov8")
    return "yolov8" if raw.shape[1] < raw.shape[2] else "yolov5"


@dataclass(frozen=True)
class RawDetections:
    boxes: torch.Tensor  # (n, 4) xyxy in model pixels (rotated: (n, 5) cx, cy, w, h, angle)
    scores: torch.Tensor  # (n,)
    class_ids: torch.Tensor  # (n,) int64
    extra: torch.Tensor | None = None  # (n, E) the head's rows after the classes


def decode(raw: torch.Tensor, decoder: str, *, conf: float, iou: float, max_det: int,
           classes: list[int] | None = None, num_classes: int | None = None,
           rotated: bool = False) -> list[RawDetections]:
    """One RawDetections per image of the batch, best first.

    num_classes: C when rows follow the classes (``extra``); None: every row after the box
    (and objectness) is a class. rotated: the extra row is an angle and NMS is rotated
    (yolo_obb.rotated_nms), as in Ultralytics' OBB predictor."""
    if decoder not in DECODERS:
        raise TorchinferError(f"unknown decoder {decoder!r}: use one of {', '.join(DECODERS)}")
    raw = raw.float()
    first = 4 if decoder == "yolov8" else 5  # the first class row
    if decoder == "yolov8":
        raw = raw.transpose(1, 2)  # -> (B, N, 4 + C + E)
    rows = raw.shape[2]
    end = rows if num_classes is None else first + num_classes
    if end - first < 1 or end > rows:
        expected = f"{first} + C" + ("" if num_classes is None else f" (C = {num_classes}) + extra")
        raise TorchinferError(f"{decoder} output needs {expected} >= {max(first + 1, end)} "
                              f"{'rows' if decoder == 'yolov8' else 'columns'}, got {rows}")
    class_scores = raw[..., first:end]
    if decoder == "yolov5":
        class_scores = class_scores * raw[..., 4:5]
    scores, class_ids = class_scores.max(dim=2)
    out = []
    for b in range(raw.shape[0]):
        keep = scores[b] > conf
        if classes is not None:
            keep &= torch.isin(class_ids[b], torch.tensor(classes, device=raw.device))
        s, c = scores[b, keep], class_ids[b, keep]
        extra = raw[b, keep, end:] if end < rows else None
        if rotated:
            assert extra is not None  # the angle
            boxes = torch.cat([raw[b, keep, :4], extra[:, :1]], 1)
            kept = rotated_nms(boxes, s, c, iou)[:max_det]
        else:
            boxes = box_convert(raw[b, keep, :4], "cxcywh", "xyxy")
            kept = batched_nms(boxes, s, c, iou)[:max_det]  # sorted by score, class-aware
        out.append(RawDetections(boxes[kept], s[kept], c[kept],
                                 None if extra is None else extra[kept]))
    return out
