"""The COCO scores of a detection run: boxes always, masks and keypoints where the model gives
them and the annotations have them, and the per-category table of the report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .coco import CocoRecords, CocoScores, coco_evaluate
from .keypoints import has_keypoint_truth, score_keypoints


@dataclass
class DetectionScores:
    """COCOeval's numbers for the boxes, and for the masks and keypoints when scored; what
    could not be scored is said in ``warnings``."""

    bbox: CocoScores
    segm: CocoScores | None = None
    keypoints: CocoScores | None = None
    warnings: list[str] = field(default_factory=list)


def score_detections(dataset: Mapping[str, Any], records: CocoRecords, scored: Sequence[Any],
                     category_ids: Sequence[Any], *, any_masks: bool, keypoint_count: int,
                     annotations_name: str) -> DetectionScores:
    """Score ``records`` over the ``scored`` images, in ``category_ids`` only: boxes; masks
    when the model gave any (``any_masks``); keypoints when it gave ``keypoint_count`` per
    detection."""
    scores = DetectionScores(coco_evaluate(dataset, records.bbox, iou_type="bbox",
                                           image_ids=scored, category_ids=category_ids))
    images = set(scored)
    if any_masks:
        if has_mask_truth(dataset, images):
            scores.segm = coco_evaluate(dataset, records.segm, iou_type="segm",
                                        image_ids=scored, category_ids=category_ids)
        else:
            scores.warnings.append(f"the model gives masks but {annotations_name} has no "
                                   "'segmentation' (or image height/width) for every "
                                   "annotation: mask AP not computed")
    if keypoint_count:
        if has_keypoint_truth(dataset, images, keypoint_count):
            scores.keypoints = score_keypoints(dataset, records.keypoints, scored,
                                               category_ids, keypoint_count)
        else:
            scores.warnings.append(f"the model gives {keypoint_count} keypoints but "
                                   f"{annotations_name} has no 'keypoints' of that many for "
                                   "every annotation: keypoint AP not computed")
    if scores.bbox.map is None and scored:
        scores.warnings.append("no ground-truth objects of the matched categories in the "
                               "scored images: mAP is undefined")
    return scores


def has_mask_truth(dataset: Mapping[str, Any], image_ids: set[Any]) -> bool:
    """Whether every annotation of the images has a mask, and every image its size."""
    anns = [a for a in dataset["annotations"] if a["image_id"] in image_ids]
    sized = all("height" in img and "width" in img for img in dataset["images"]
                if img["id"] in image_ids)
    return bool(anns) and sized and all(a.get("segmentation") for a in anns)


def category_rows(dataset: Mapping[str, Any], categories: Sequence[Mapping[str, Any]],
                  category_ids: Sequence[Any], scored: Sequence[Any],
                  records: CocoRecords, scores: DetectionScores) -> list[dict[str, Any]]:
    """One row per scored category: its APs, how many objects the scored images hold (crowds
    aside) and how many detections the model made of it."""
    images = set(scored)
    objects: dict[Any, int] = dict.fromkeys(category_ids, 0)
    for ann in dataset["annotations"]:
        if (ann["image_id"] in images and not ann.get("iscrowd")
                and ann["category_id"] in objects):
            objects[ann["category_id"]] += 1
    made: dict[Any, int] = dict.fromkeys(category_ids, 0)
    for rec in records.bbox:
        made[rec["category_id"]] += 1
    names = {c["id"]: str(c["name"]) for c in categories}
    rows = []
    for cid in category_ids:
        ap = scores.bbox.per_category.get(cid, {})
        row = {"category_id": cid, "name": names[cid], "ap": ap.get("ap"),
               "ap50": ap.get("ap50"), "ap75": ap.get("ap75"), "objects": objects[cid],
               "detections": made[cid]}
        if scores.segm is not None:
            row["mask_ap"] = scores.segm.per_category.get(cid, {}).get("ap")
        if scores.keypoints is not None:
            row["keypoint_ap"] = scores.keypoints.per_category.get(cid, {}).get("ap")
        rows.append(row)
    return rows
