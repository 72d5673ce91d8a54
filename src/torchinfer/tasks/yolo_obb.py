"""Rotated boxes (Ultralytics' OBB task): NMS by probabilistic IoU, and corners.

A rotated box is (cx, cy, w, h, angle), angle in radians, clockwise on the image (y points
down), as Ultralytics' OBB head gives it (in [-pi/4, 3pi/4)).

NMS uses ProbIoU (Llerena et al. 2021, arXiv:2106.06072: each box as a 2-D Gaussian, one
minus the Hellinger distance between the two) inside Fast-NMS (Bolya et al. 2019: a box goes
when any better-scored box overlaps it past the threshold, even one that goes itself), as
Ultralytics' ``non_max_suppression(rotated=True)`` does. An exact polygon IoU would be the
better-defined overlap, but it keeps or drops other boxes near the threshold, and the point of
decoding an Ultralytics file is to give Ultralytics' answers (design notes).
"""

from __future__ import annotations

import torch

# Ultralytics' class offset: boxes of different classes are moved this far apart so that one
# NMS over all classes never lets two classes suppress each other
CLASS_OFFSET = 7680.0
EPS = 1e-7


def _covariance(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(a, b, c) of each box's Gaussian covariance [[a, c], [c, b]]: a uniform w x h
    rectangle has variances w²/12 and h²/12 along its axes, rotated by its angle."""
    a, b = boxes[:, 2].pow(2) / 12, boxes[:, 3].pow(2) / 12
    cos, sin = boxes[:, 4].cos(), boxes[:, 4].sin()
    return a * cos.pow(2) + b * sin.pow(2), a * sin.pow(2) + b * cos.pow(2), (a - b) * cos * sin


def probiou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """(n, m) ProbIoU of two sets of rotated boxes, Ultralytics' ``batch_probiou``."""
    x1, y1 = boxes1[:, 0:1], boxes1[:, 1:2]
    x2, y2 = boxes2[None, :, 0], boxes2[None, :, 1]
    a1, b1, c1 = (v[:, None] for v in _covariance(boxes1))
    a2, b2, c2 = (v[None] for v in _covariance(boxes2))
    det = (a1 + a2) * (b1 + b2) - (c1 + c2).pow(2)
    t1 = ((a1 + a2) * (y1 - y2).pow(2) + (b1 + b2) * (x1 - x2).pow(2)) / (det + EPS) * 0.25
    t2 = ((c1 + c2) * (x2 - x1) * (y1 - y2)) / (det + EPS) * 0.5
    t3 = (det / (4 * ((a1 * b1 - c1.pow(2)).clamp(0) * (a2 * b2 - c2.pow(2)).clamp(0)).sqrt()
                 + EPS) + EPS).log() * 0.5
    bhattacharyya = (t1 + t2 + t3).clamp(EPS, 100.0)
    return 1 - (1.0 - (-bhattacharyya).exp() + EPS).sqrt()


def rotated_nms(boxes: torch.Tensor, scores: torch.Tensor, class_ids: torch.Tensor,
                iou: float) -> torch.Tensor:
    """Indices of the rotated boxes kept, best first: class-aware Fast-NMS by ProbIoU."""
    if not len(boxes):
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    shifted = boxes.clone()
    shifted[:, :2] += class_ids[:, None].to(boxes.dtype) * CLASS_OFFSET
    order = scores.argsort(descending=True)
    overlaps = probiou(shifted[order], shifted[order]).triu_(diagonal=1)
    return order[(overlaps > iou).sum(0) <= 0]


def corners(xywhr: torch.Tensor) -> torch.Tensor:
    """(n, 4, 2) corners of rotated boxes, in Ultralytics' order (``xywhr2xyxyxyxy``: from
    the +w/2, +h/2 corner of the box's own frame, on round)."""
    centre = xywhr[:, None, :2]
    w, h, angle = xywhr[:, 2:3], xywhr[:, 3:4], xywhr[:, 4:5]
    cos, sin = angle.cos(), angle.sin()
    along = torch.cat([w / 2 * cos, w / 2 * sin], 1)[:, None]
    across = torch.cat([-h / 2 * sin, h / 2 * cos], 1)[:, None]
    return torch.cat([centre + along + across, centre + along - across,
                      centre - along - across, centre - along + across], 1)
