"""COCO keypoint AP (object keypoint similarity, OKS) of detections that carry keypoints.

OKS compares each predicted keypoint with its ground truth through a Gaussian whose spread
grows with the object's area and a per-keypoint sigma: COCO's published sigmas for its 17
person keypoints, and for any other keypoint set the same sigma for every keypoint, 1/K (as
Ultralytics' pose validator does). pycocotools computes it (``iouType="keypoints"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .coco import CocoScores, coco_evaluate

COCO_PERSON_KEYPOINTS = 17


def keypoint_sigmas(count: int) -> list[float] | None:
    """The OKS sigmas for ``count`` keypoints: None (pycocotools' COCO person sigmas) for
    17, else 1/count each."""
    return None if count == COCO_PERSON_KEYPOINTS else [1.0 / count] * count


def has_keypoint_truth(dataset: Mapping[str, Any], image_ids: set[Any], count: int) -> bool:
    """Whether every annotation of the scored images has ``count`` keypoints (x, y, v)."""
    anns = [a for a in dataset["annotations"] if a["image_id"] in image_ids]
    return bool(anns) and all(len(a.get("keypoints") or ()) == 3 * count for a in anns)


def score_keypoints(dataset: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
                    image_ids: Sequence[Any], category_ids: Sequence[Any],
                    count: int) -> CocoScores:
    """COCOeval's keypoint numbers (mAP over OKS 0.50:0.95 ...) of ``records``."""
    return coco_evaluate(dataset, records, iou_type="keypoints", image_ids=image_ids,
                         category_ids=category_ids, sigmas=keypoint_sigmas(count))
