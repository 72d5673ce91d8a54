"""The pycocotools glue: model classes to dataset categories by name, detections to COCO
result records, and COCOeval run quietly (and safely on an empty result list).

A model's class ids are positions in its label list (torchvision's COCO list keeps
"__background__" and "N/A" slots so that position = the original COCO category id, but a
dataset may number its categories any way it likes), so a prediction's ``category_id`` is
looked up by the label's NAME among the dataset's categories, never taken from the class id.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import MissingExtraError
from ..results import Detections
from .datasets import normalise_name

# Label-list padding that is no class: not reported as "a model class without a category"
PLACEHOLDER_LABELS = frozenset({"__background__", "n/a", "background", ""})

# COCOeval.summarize()'s twelve numbers, in its order
STAT_NAMES = ("map", "map50", "map75", "map_small", "map_medium", "map_large",
              "mar1", "mar10", "mar100", "mar_small", "mar_medium", "mar_large")
# its ten for keypoints (no small objects, 20 detections per image)
KEYPOINT_STAT_NAMES = ("map", "map50", "map75", "map_medium", "map_large",
                       "mar", "mar50", "mar75", "mar_medium", "mar_large")


@dataclass(frozen=True)
class CategoryMap:
    """``to_category``: model class index -> dataset category id (matched by name).
    ``model_without_category``: model class names no category matches (placeholders left out);
    their detections are dropped. ``categories_without_class``: dataset category names no
    model class matches (the model cannot find them; they are left out of the mAP)."""

    to_category: dict[int, Any]
    model_without_category: tuple[str, ...] = ()
    categories_without_class: tuple[str, ...] = ()
    ambiguous: tuple[str, ...] = ()  # names two categories share after normalising

    @property
    def category_ids(self) -> list[Any]:
        return sorted(set(self.to_category.values()))


def map_categories(model_labels: Sequence[str],
                   categories: Iterable[Mapping[str, Any]]) -> CategoryMap:
    """Match model labels to dataset categories: exactly first, then ignoring case, ``_``/``-``
    and spacing. Several model classes may map to one category (e.g. repeated names)."""
    categories = list(categories)
    exact: dict[str, Any] = {}
    loose: dict[str, Any] = {}
    ambiguous = []
    for cat in categories:
        name = str(cat["name"])
        exact.setdefault(name, cat["id"])
        key = normalise_name(name)
        if key in loose and loose[key] != cat["id"]:
            ambiguous.append(name)
            continue
        loose[key] = cat["id"]
    to_category: dict[int, Any] = {}
    without = []
    for index, label in enumerate(model_labels):
        cid = exact.get(label, loose.get(normalise_name(label)))
        if cid is not None:
            to_category[index] = cid
        elif normalise_name(label) not in PLACEHOLDER_LABELS:
            without.append(label)
    matched = set(to_category.values())
    unmatched = tuple(str(c["name"]) for c in categories if c["id"] not in matched)
    return CategoryMap(to_category, tuple(without), unmatched, tuple(ambiguous))


@dataclass
class CocoRecords:
    """Result records for one or more images: boxes always, masks when the model gives them."""

    bbox: list[dict[str, Any]] = field(default_factory=list)
    segm: list[dict[str, Any]] = field(default_factory=list)
    keypoints: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0  # detections of model classes that have no dataset category


def detection_records(dets: Detections, image_id: Any, to_category: Mapping[int, Any],
                      into: CocoRecords | None = None) -> CocoRecords:
    """COCO result records for ``dets`` with the DATASET's image id and category ids; boxes
    become x, y, width, height. Masks become compressed RLE (what pycocotools reads)."""
    out = into if into is not None else CocoRecords()
    if not to_category:
        raise ValueError("to_category is empty: no model class matches a dataset category")
    keep = np.array([int(c) in to_category for c in dets.class_ids], dtype=bool)
    out.dropped += int((~keep).sum())
    kept = dets[keep] if len(dets) else dets
    records = kept.to_coco(image_id, dict(to_category)) if len(kept) else []
    for i, rec in enumerate(records):
        points = rec.pop("keypoints", None)
        rle = rec.pop("segmentation", None)
        out.bbox.append(rec)
        if points is not None:  # x, y, score per keypoint; OKS reads x and y
            out.keypoints.append({"image_id": rec["image_id"], "category_id": rec["category_id"],
                                  "score": rec["score"], "keypoints": points})
        if rle is not None and kept.masks is not None:
            out.segm.append({"image_id": rec["image_id"], "category_id": rec["category_id"],
                             "score": rec["score"],
                             "segmentation": _compressed_rle(kept.masks[i].full(kept.image_size))})
    return out


def _compressed_rle(mask: np.ndarray) -> dict[str, Any]:
    mask_utils = _mask_utils()
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


@dataclass(frozen=True)
class CocoScores:
    """COCOeval's numbers for one IoU type. None where COCO gives -1 (nothing to score)."""

    iou_type: str
    stats: dict[str, float | None]
    per_category: dict[Any, dict[str, float | None]]  # category id -> ap, ap50, ap75

    @property
    def map(self) -> float | None:
        return self.stats["map"]

    @property
    def map50(self) -> float | None:
        return self.stats["map50"]

    @property
    def map75(self) -> float | None:
        return self.stats["map75"]

    def to_dict(self) -> dict[str, Any]:
        return {"iou_type": self.iou_type, **{k: _round(v) for k, v in self.stats.items()}}


def coco_evaluate(dataset: Mapping[str, Any], records: Sequence[Mapping[str, Any]], *,
                  iou_type: str = "bbox", image_ids: Sequence[Any] | None = None,
                  category_ids: Sequence[Any] | None = None,
                  sigmas: Sequence[float] | None = None) -> CocoScores:
    """Run pycocotools' COCOeval on ``records`` against the ground truth ``dataset`` (a COCO
    dict with images, annotations, categories), restricted to ``image_ids`` and
    ``category_ids`` when given. An empty ``records`` list scores 0 wherever there is ground
    truth (pycocotools' own ``loadRes`` cannot take an empty list). ``sigmas``: the OKS
    falloff per keypoint ("keypoints"; COCO's person sigmas by default)."""
    coco_cls, coco_eval_cls = _pycocotools()
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
        gt = coco_cls()
        gt.dataset = {"images": list(dataset["images"]),
                      "annotations": [dict(a) for a in dataset.get("annotations") or []],
                      "categories": list(dataset["categories"])}
        gt.createIndex()
        if records:
            dt = gt.loadRes([dict(r) for r in records])
        else:
            dt = coco_cls()
            dt.dataset = {"images": list(gt.dataset["images"]), "annotations": [],
                          "categories": copy.deepcopy(gt.dataset["categories"])}
            dt.createIndex()
        evaluator = coco_eval_cls(gt, dt, iou_type)
        if sigmas is not None:
            evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        if image_ids is not None:
            evaluator.params.imgIds = list(image_ids)
        if category_ids is not None:
            evaluator.params.catIds = list(category_ids)
        names = KEYPOINT_STAT_NAMES if iou_type == "keypoints" else STAT_NAMES
        if not evaluator.params.imgIds or not evaluator.params.catIds:
            return CocoScores(iou_type, dict.fromkeys(names), {})
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {name: _defined(v) for name, v in zip(names, evaluator.stats)}
    precision = evaluator.eval["precision"]  # (iou thresholds, recall points, K, areas, max dets)
    iou_thresholds = list(np.round(evaluator.params.iouThrs, 2))
    per_category = {}
    for k, cid in enumerate(evaluator.params.catIds):
        cid = cid.item() if isinstance(cid, np.generic) else cid  # COCOeval np.unique()s the ids
        p = precision[:, :, k, 0, -1]  # all areas, the most detections (100; keypoints 20)
        per_category[cid] = {"ap": _mean_defined(p),
                             "ap50": _mean_defined(p[iou_thresholds.index(0.5)]),
                             "ap75": _mean_defined(p[iou_thresholds.index(0.75)])}
    return CocoScores(iou_type, stats, per_category)


def _mean_defined(values: np.ndarray) -> float | None:
    values = values[values > -1]
    return float(values.mean()) if values.size else None


def _defined(value: float) -> float | None:
    return None if value < 0 else float(value)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _pycocotools() -> tuple[Any, Any]:
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:
        raise MissingExtraError("pycocotools", "eval") from exc
    return COCO, COCOeval


def _mask_utils() -> Any:
    try:
        from pycocotools import mask
    except ImportError as exc:
        raise MissingExtraError("pycocotools", "eval") from exc
    return mask
