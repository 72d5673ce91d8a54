"""Metrics as plain numpy on confusion matrices: no model, no files, easy to check by hand."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .datasets import IGNORE_INDEX


def add_to_confusion(confusion: np.ndarray, truth: np.ndarray, pred: np.ndarray,
                     ignore_index: int = IGNORE_INDEX) -> int:
    """Count (truth, prediction) pixel pairs into ``confusion`` (C x C, rows = truth) in place;
    pixels labelled ``ignore_index`` are skipped. Returns how many were ignored.

    Every other truth value must be a class index below C (check before calling)."""
    c = confusion.shape[0]
    truth = truth.ravel().astype(np.int64)
    pred = pred.ravel().astype(np.int64)
    valid = truth != ignore_index
    confusion += np.bincount(truth[valid] * c + pred[valid], minlength=c * c).reshape(c, c)
    return int(valid.size - valid.sum())


def segmentation_scores(confusion: np.ndarray) -> dict[str, Any]:
    """IoU per class, mIoU, pixel accuracy and mean class accuracy from a C x C confusion
    matrix (rows = ground truth, columns = prediction).

    A class's IoU is TP / (TP + FP + FN); it is undefined (None) for a class that appears in
    neither the ground truth nor the predictions, and mIoU is the mean over the classes where it
    is defined, i.e. the classes present in the ground truth or the predictions. A class's
    accuracy (recall) TP / (TP + FN) is defined where it appears in the ground truth.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    gt = confusion.sum(1)
    pred = confusion.sum(0)
    union = gt + pred - tp
    total = confusion.sum()
    iou = [float(tp[i] / union[i]) if union[i] > 0 else None for i in range(len(tp))]
    acc = [float(tp[i] / gt[i]) if gt[i] > 0 else None for i in range(len(tp))]
    defined = [v for v in iou if v is not None]
    recalls = [v for v in acc if v is not None]
    return {"iou": iou, "accuracy": acc,
            "miou": float(np.mean(defined)) if defined else None,
            "miou_classes": len(defined),
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else None,
            "mean_accuracy": float(np.mean(recalls)) if recalls else None,
            "gt_pixels": [int(v) for v in gt], "predicted_pixels": [int(v) for v in pred]}


def topk_correct(truth: set[int] | frozenset[int], ranked: Sequence[int], k: int) -> bool:
    """Whether any of the first ``k`` ranked class indices is a true one."""
    return any(i in truth for i in ranked[:k])


def ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None
