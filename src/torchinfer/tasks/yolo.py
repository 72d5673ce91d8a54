"""Raw-tensor detectors (what YOLO training exports): letterbox in, decode + NMS out.

The model's output is one tensor per image holding boxes (centre x, centre y, width, height in
letterboxed pixels) and class scores, plus an objectness score in YOLOv5's layout:

    yolov5: (B, N, 5 + C)   x, y, w, h, objectness, C class scores   (score = obj * class)
    yolov8: (B, 4 + C, N)   x, y, w, h, C class scores

Postprocessing keeps boxes above the confidence threshold, runs class-aware NMS
(torchvision.ops.batched_nms), keeps the best ``max_det`` and maps boxes back through the
letterbox to the original image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import batched_nms, box_convert

from ..errors import TorchinferError

DECODERS = ("yolov5", "yolov8")
PAD_VALUE = 114  # Ultralytics' grey, so a model trained with its letterbox sees what it knows


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the square model input: scale, then pad."""

    original: tuple[int, int]  # (h, w)
    scale: float
    pad: tuple[int, int]  # (left, top) in model pixels

    def to_original(self, boxes: torch.Tensor) -> torch.Tensor:
        """xyxy boxes in model pixels -> original image pixels, clipped to the image."""
        left, top = self.pad
        out = boxes.clone()
        out[:, [0, 2]] = (out[:, [0, 2]] - left) / self.scale
        out[:, [1, 3]] = (out[:, [1, 3]] - top) / self.scale
        h, w = self.original
        out[:, [0, 2]] = out[:, [0, 2]].clamp(0, w)
        out[:, [1, 3]] = out[:, [1, 3]].clamp(0, h)
        return out


def letterbox(img: Image.Image, size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize to fit ``size`` (h, w) keeping the aspect ratio, pad the rest with grey, centred,
    as Ultralytics does: its rounding (``round(pad - 0.1)`` on the top/left side) and its
    resampling, OpenCV's INTER_LINEAR (bilinear, not antialiased), which torch's uint8 bilinear
    reproduces within one level (BENCHMARKS.md) and computes 3x faster than Pillow's
    antialiased resize of a big photograph."""
    h, w = img.height, img.width
    th, tw = size
    scale = min(th / h, tw / w)
    # at least 1: a 1,000,000 x 1 image fitted into 640 x 640 would be 0.00064 pixels high
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    dw, dh = (tw - nw) / 2, (th - nh) / 2
    left, top = round(dw - 0.1), round(dh - 0.1)
    canvas = np.full((th, tw, 3), PAD_VALUE, dtype=np.uint8)
    pixels = torch.from_numpy(np.array(img))
    if (nw, nh) != (w, h):
        pixels = F.interpolate(pixels.permute(2, 0, 1)[None], size=(nh, nw), mode="bilinear",
                               align_corners=False, antialias=False)[0].permute(1, 2, 0)
    canvas[top:top + nh, left:left + nw] = pixels.numpy()
    return canvas, Letterbox((h, w), scale, (left, top))


def guess_decoder(raw: torch.Tensor) -> str:
    """yolov8 puts the short (4 + C) axis first, yolov5 last."""
    if raw.ndim != 3:
        raise TorchinferError(f"raw detector output has shape {tuple(raw.shape)}; expected "
                              "(B, N, 5+C) for yolov5 or (B, 4+C, N) for yolov8")
    return "yolov8" if raw.shape[1] < raw.shape[2] else "yolov5"


@dataclass(frozen=True)
class RawDetections:
    boxes: torch.Tensor  # (n, 4) xyxy in model pixels
    scores: torch.Tensor  # (n,)
    class_ids: torch.Tensor  # (n,) int64


def decode(raw: torch.Tensor, decoder: str, *, conf: float, iou: float, max_det: int,
           classes: list[int] | None = None) -> list[RawDetections]:
    """One RawDetections per image of the batch, best first."""
    if decoder not in DECODERS:
        raise TorchinferError(f"unknown decoder {decoder!r}: use one of {', '.join(DECODERS)}")
    raw = raw.float()
    if decoder == "yolov8":
        raw = raw.transpose(1, 2)  # -> (B, N, 4 + C)
        if raw.shape[2] < 5:
            raise TorchinferError(f"yolov8 output needs 4 + C >= 5 rows, got {raw.shape[2]}")
        class_scores = raw[..., 4:]
    else:
        if raw.shape[2] < 6:
            raise TorchinferError(f"yolov5 output needs 5 + C >= 6 columns, got {raw.shape[2]}")
        class_scores = raw[..., 5:] * raw[..., 4:5]
    scores, class_ids = class_scores.max(dim=2)
    out = []
    for b in range(raw.shape[0]):
        keep = scores[b] > conf
        if classes is not None:
            keep &= torch.isin(class_ids[b], torch.tensor(classes, device=raw.device))
        boxes = box_convert(raw[b, keep, :4], "cxcywh", "xyxy")
        s, c = scores[b, keep], class_ids[b, keep]
        kept = batched_nms(boxes, s, c, iou)[:max_det]  # sorted by score, class-aware
        out.append(RawDetections(boxes[kept], s[kept], c[kept]))
    return out
