"""Evaluation: run a predictor over a labelled dataset and score it.

Each evaluator takes a predictor made by ``torchinfer.load`` (any model torchinfer can run:
a torchvision name with weights, a factory, a ``.safetensors`` file, an ``.onnx`` file run by
ONNX Runtime...) and feeds it the dataset through ``predictor.stream``, so the model sees
exactly the preprocessing and postprocessing ``torchinfer predict`` gives it. An image that
cannot be processed is recorded in the report's ``failures`` and left out of the metrics; the
evaluation goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np
from PIL import Image

from ..errors import OptionError
from ..results import Result
from ..runner.sources import LIST_FILE_EXTENSIONS
from .coco import CategoryMap, CocoRecords, detection_records, map_categories
from .datasets import (
    IGNORE_INDEX,
    CocoDataset,
    DatasetError,
    ImageFolder,
    VocSegmentation,
    normalise_name,
    read_coco,
    read_image_folder,
    read_voc_segmentation,
    resolve_coco_paths,
)
from .detection_scores import category_rows, score_detections
from .metrics import add_to_confusion, ratio, segmentation_scores, topk_correct
from .report import ClassificationReport, DetectionReport, SegmentationReport

Progress = Callable[[int, int], None]  # (done, total)

TOP_K = 5
MAX_MISCLASSIFIED = 100
EVAL_CONF = 0.001  # the customary detection-evaluation threshold: let the PR curve run out
EVAL_MAX_DET = 100  # COCO scores at most 100 detections per image
EVAL_IOU = 0.6  # NMS IoU for raw-tensor (YOLO) models during evaluation, as YOLOv5's val.py

# The predictor options each evaluation is customarily run with (``torchinfer.load`` them in;
# what the caller passes wins): every class ranked for top-5, every box down to a low score.
CLASSIFICATION_OPTIONS: Mapping[str, Any] = MappingProxyType({"top_k": TOP_K})
SEGMENTATION_OPTIONS: Mapping[str, Any] = MappingProxyType({})
DETECTION_OPTIONS: Mapping[str, Any] = MappingProxyType(
    {"conf": EVAL_CONF, "max_det": EVAL_MAX_DET, "iou": EVAL_IOU})


class EvaluatedPredictor(Protocol):
    """What an evaluator uses of a predictor (the task predictors of ``torchinfer.tasks``):
    a Protocol rather than their base class, so evaluation does not depend on tasks."""

    model: Any  # a LoadedModel: name, weights, labels, preprocess
    device: Any
    batch_size: int

    def stream(self, source: Any, *, batch_size: int | None = None) -> Iterator[Any]: ...

    def failed(self, source: str, reason: str) -> Any: ...


def predict_paths(predictor: EvaluatedPredictor, paths: Sequence[str], *, batch_size: int | None,
                  progress: Progress | None) -> Iterator[tuple[int, Result]]:
    """(position, result) for every path, in order. Files that are missing (or would be read
    as a list of paths) become failed results without reaching the predictor, so its stream
    gets exactly one input per result."""
    runnable = [i for i, p in enumerate(paths)
                if Path(p).is_file() and Path(p).suffix.lower() not in LIST_FILE_EXTENSIONS]
    stream = predictor.stream([paths[i] for i in runnable], batch_size=batch_size)
    ok = set(runnable)
    for i, path in enumerate(paths):
        if i in ok:
            result = next(stream)
            if result.source != path:  # cannot happen unless the stream's contract changed
                raise RuntimeError(f"result for {result.source} where {path} was expected")
        else:
            reason = "not an image file" if Path(path).is_file() else "file not found"
            result = predictor.failed(path, reason)
        if progress is not None:
            progress(i + 1, len(paths))
        yield i, result


def failure_record(result: Result) -> dict[str, str]:
    return {"source": result.source, "error": result.error or ""}


def limited(items: Sequence[Any], limit: int | None) -> Sequence[Any]:
    if limit is not None and limit < 1:
        raise OptionError(f"limit must be >= 1, got {limit}")
    return items[:limit] if limit is not None else items


# --- classification ---------------------------------------------------------------------------


def _class_targets(classes: Sequence[str], labels: Sequence[str] | None,
                   root: Path) -> dict[str, frozenset[int]]:
    """Folder name -> the model class indices of that name (exact match first, then loose:
    see ``normalise_name``). A model without class names takes folders named 0, 1, 2..."""
    if labels is None:
        bad = [c for c in classes if not c.isdigit()]
        if bad:
            raise DatasetError(f"{root}: the model has no class names, so class folders must be "
                               f"class indices (0, 1, ...); got {', '.join(bad[:5])}: pass "
                               "--labels with the model's class names")
        return {c: frozenset({int(c)}) for c in classes}
    exact: dict[str, set[int]] = {}
    loose: dict[str, set[int]] = {}
    for i, label in enumerate(labels):
        exact.setdefault(label, set()).add(i)
        loose.setdefault(normalise_name(label), set()).add(i)
    targets, unknown = {}, []
    for name in classes:
        found = exact.get(name) or loose.get(normalise_name(name))
        if found:
            targets[name] = frozenset(found)
        else:
            unknown.append(name)
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:8]) + (" ..." if len(unknown) > 8 else "")
        raise DatasetError(f"{root}: {len(unknown)} class folder(s) match no class of the model "
                           f"({len(labels)} classes, e.g. {', '.join(map(repr, labels[:5]))}): "
                           f"{shown}; folder names must be the model's class names (--labels)")
    owners: dict[int, str] = {}
    for name, indices in targets.items():
        for i in indices:
            if i in owners:
                raise DatasetError(f"{root}: folders {owners[i]!r} and {name!r} both match model "
                                   f"class {i} ({labels[i]!r})")
            owners[i] = name
    return targets


def evaluate_classification(predictor: EvaluatedPredictor, root: str | Path | ImageFolder, *,
                            limit: int | None = None, batch_size: int | None = None,
                            progress: Progress | None = None) -> ClassificationReport:
    """Top-1 and top-5 accuracy, per-class accuracy and the confusion matrix of ``predictor``
    on an ImageFolder (``root/<class name>/<images>``).

    Folders are matched to the model's classes by NAME (``predictor.model.labels``), so the
    folder order does not matter; a folder that matches no class is an error. Top-5 becomes
    top-k with k = the number of classes when the model has fewer than 5. ``limit`` evaluates
    the first N images (sorted by class folder, then path).
    """
    start = time.perf_counter()
    data = root if isinstance(root, ImageFolder) else read_image_folder(root)
    samples = limited(data.samples, limit)
    targets = _class_targets(data.classes, predictor.model.labels, data.root)
    owner = {i: name for name, idx in targets.items() for i in idx}
    position = {name: j for j, name in enumerate(data.classes)}
    n = len(data.classes)
    confusion = np.zeros((n, n + 1), dtype=np.int64)
    per_class = {name: {"images": 0, "failed": 0, "top1_correct": 0, "topk_correct": 0}
                 for name in data.classes}
    failures, misclassified = [], []
    correct1 = correctk = scored = 0
    k = TOP_K
    saved_top_k = getattr(predictor, "top_k", None)
    if saved_top_k is not None and saved_top_k < TOP_K:
        predictor.top_k = TOP_K  # type: ignore[attr-defined]
    try:
        for i, result in predict_paths(predictor, [p for p, _ in samples], batch_size=batch_size,
                                  progress=progress):
            name = samples[i][1]
            per_class[name]["images"] += 1
            if not result.ok:
                failures.append(failure_record(result))
                per_class[name]["failed"] += 1
                continue
            ranked = [c.index for c in result.topk]
            k = min(TOP_K, len(ranked))  # the predictor ranks min(top_k, classes)
            truth = targets[name]
            hit1 = ranked[0] in truth
            hitk = topk_correct(truth, ranked, k)
            scored += 1
            correct1 += hit1
            correctk += hitk
            per_class[name]["top1_correct"] += hit1
            per_class[name]["topk_correct"] += hitk
            predicted = owner.get(ranked[0])
            confusion[position[name], position[predicted] if predicted is not None else n] += 1
            if not hit1 and len(misclassified) < MAX_MISCLASSIFIED:
                misclassified.append({"source": result.source, "truth": name,
                                      "predicted": result.top1.label,
                                      "score": round(result.top1.score, 6)})
    finally:
        if saved_top_k is not None:
            predictor.top_k = saved_top_k  # type: ignore[attr-defined]

    classes = []
    for name in data.classes:
        c = per_class[name]
        evaluated = c["images"] - c["failed"]
        classes.append({"name": name, "model_index": min(targets[name]), "images": c["images"],
                        "evaluated": evaluated, "top1_correct": c["top1_correct"],
                        "accuracy": ratio(c["top1_correct"], evaluated),
                        "top5_accuracy": ratio(c["topk_correct"], evaluated)})
    accuracies = [c["accuracy"] for c in classes if c["accuracy"] is not None]
    warnings = [f"class folder {c['name']!r} has no images" for c in classes if not c["images"]
                and limit is None]
    return ClassificationReport(
        data=str(data.root), model=predictor.model.name, weights=predictor.model.weights,
        images=len(samples), failures=failures, warnings=warnings,
        seconds=time.perf_counter() - start, options=predictor_options(predictor),
        top1=ratio(correct1, scored), top5=ratio(correctk, scored), top5_k=k,
        mean_class_accuracy=float(np.mean(accuracies)) if accuracies else None,
        classes=classes, confusion=confusion.tolist(), misclassified=misclassified)


# --- segmentation -----------------------------------------------------------------------------


def read_mask(path: str | Path) -> np.ndarray:
    """Class indices from a palette (``P``) or grayscale PNG; raises ValueError for a colour
    image (class colours are not class indices) or an unreadable file."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
                raise ValueError(f"mask is a {img.mode} image: expected class indices "
                                 "(a palette or grayscale PNG)")
            return np.asarray(img).astype(np.int64)
    except FileNotFoundError:
        raise ValueError("mask not found") from None
    except OSError as exc:
        raise ValueError(f"cannot read mask ({exc})") from None


def evaluate_segmentation(predictor: EvaluatedPredictor, root: str | Path | VocSegmentation, *,
                          split: str | None = None, limit: int | None = None,
                          batch_size: int | None = None,
                          progress: Progress | None = None) -> SegmentationReport:
    """mIoU, pixel accuracy and per-class IoU of ``predictor`` on a VOC-layout dataset.

    Mask value i is model output class i; 255 is ignored. Predictions are compared at the
    ORIGINAL image resolution (the predictor returns its class map at that size). ``split``
    reads ``ImageSets/Segmentation/<split>.txt``; without it every mask in
    ``SegmentationClass`` is used. A mask that does not fit its image (other size, a value that
    is no class of the model) is recorded as that image's failure.
    """
    start = time.perf_counter()
    data = root if isinstance(root, VocSegmentation) else read_voc_segmentation(root, split)
    split = data.split
    samples = limited(data.samples, limit)
    confusion: np.ndarray | None = None
    labels: tuple[str, ...] = ()
    failures: list[dict[str, str]] = []
    warnings: list[str] = []
    ignored = 0
    for i, result in predict_paths(predictor, [s[1] for s in samples], batch_size=batch_size,
                              progress=progress):
        if not result.ok:
            failures.append(failure_record(result))
            continue
        mask_path = samples[i][2]
        if confusion is None:
            labels = result.labels
            confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
            warnings += _compare_labels(data.labels, labels, data.root / "labels.txt")
        try:
            truth = read_mask(mask_path)
        except ValueError as exc:
            failures.append({"source": result.source, "error": f"{mask_path}: {exc}"})
            continue
        if truth.shape != result.mask.shape:
            failures.append({"source": result.source, "error": f"{mask_path}: mask is "
                             f"{truth.shape[1]}x{truth.shape[0]} but the image is "
                             f"{result.mask.shape[1]}x{result.mask.shape[0]}"})
            continue
        bad = truth[(truth != IGNORE_INDEX) & ((truth < 0) | (truth >= len(labels)))]
        if bad.size:
            failures.append({"source": result.source, "error": f"{mask_path}: value "
                             f"{int(bad.max())} is neither a class of the model "
                             f"(0..{len(labels) - 1}) nor {IGNORE_INDEX} (ignore)"})
            continue
        ignored += add_to_confusion(confusion, truth, result.mask)
    report = SegmentationReport(
        data=str(data.root), model=predictor.model.name, weights=predictor.model.weights,
        images=len(samples), failures=failures, warnings=warnings,
        seconds=time.perf_counter() - start,
        options={**predictor_options(predictor), **({"split": split} if split else {})},
        ignored_pixels=ignored)
    if confusion is None:
        return report
    scores = segmentation_scores(confusion)
    report.miou, report.miou_classes = scores["miou"], scores["miou_classes"]
    report.pixel_accuracy, report.mean_accuracy = scores["pixel_accuracy"], scores["mean_accuracy"]
    report.pixels = int(confusion.sum())
    report.classes = [{"index": c, "name": labels[c], "iou": scores["iou"][c],
                       "accuracy": scores["accuracy"][c], "gt_pixels": scores["gt_pixels"][c],
                       "predicted_pixels": scores["predicted_pixels"][c]}
                      for c in range(len(labels))]
    report.confusion = confusion.tolist()
    return report


def _compare_labels(dataset: tuple[str, ...] | None, model: tuple[str, ...],
                    labels_file: Path) -> list[str]:
    if dataset is None:
        return []
    if len(dataset) > len(model):
        raise DatasetError(f"{labels_file}: {len(dataset)} classes, but the model has "
                           f"{len(model)} outputs")
    differ = [f"{i}: {d!r} vs {m!r}" for i, (d, m) in enumerate(zip(dataset, model))
              if normalise_name(d) != normalise_name(m)]
    if not differ:
        return []
    return [f"{labels_file} names {len(differ)} class(es) differently from the model (mask value "
            f"i is scored as model class i): {'; '.join(differ[:3])}"
            + (" ..." if len(differ) > 3 else "")]


# --- detection --------------------------------------------------------------------------------


def evaluate_detection(predictor: EvaluatedPredictor, data: str | Path | CocoDataset | None = None, *,
                       annotations: str | Path | None = None, images: str | Path | None = None,
                       limit: int | None = None, batch_size: int | None = None,
                       progress: Progress | None = None) -> DetectionReport:
    """COCO mAP@[.5:.95], mAP@.5, mAP@.75 and per-category AP of ``predictor`` (pycocotools'
    COCOeval; also mask AP when the model gives masks and the annotations have them).

    ``data`` is a folder holding ``annotations.json`` and ``images/`` (or the annotations file
    itself, or a CocoDataset already read); ``annotations`` / ``images`` name them explicitly.
    Model classes map to dataset categories by NAME; detections of model classes with no
    category are dropped (counted in the report), and categories no model class matches are
    left out of the mean (listed). Create the predictor with DETECTION_OPTIONS (``conf=0.001``,
    ``max_det=100``), as ``torchinfer.evaluate`` does: a higher threshold cuts the
    precision-recall curve short and underestimates mAP.
    """
    start = time.perf_counter()
    if isinstance(data, CocoDataset):
        coco = data
    else:
        coco = read_coco(*resolve_coco_paths(data, annotations, images))
    ann_path = coco.annotations_file
    cmap = _category_map(predictor.model.labels, coco)
    warnings = _detection_warnings(predictor, cmap, ann_path)
    items = limited(coco.images, limit)
    found = _detect(predictor, items, cmap, coco, batch_size=batch_size, progress=progress)
    if found.resized:
        warnings.append(f"{len(found.resized)} image(s) decode to another size than "
                        f"{ann_path.name} gives (EXIF rotation?): {'; '.join(found.resized[:3])}")
    if cmap.model_without_category and found.records.dropped:
        warnings.append(f"{found.records.dropped} detection(s) of model classes with no category "
                        f"in {ann_path.name} were dropped")
    scores = score_detections(coco.dataset, found.records, found.scored, cmap.category_ids,
                              any_masks=found.any_masks, keypoint_count=found.keypoint_count,
                              annotations_name=ann_path.name)
    warnings += scores.warnings
    return DetectionReport(
        data=str(ann_path), model=predictor.model.name, weights=predictor.model.weights,
        images=len(items), failures=found.failures, warnings=warnings,
        seconds=time.perf_counter() - start, options=predictor_options(predictor),
        bbox=scores.bbox.stats, segm=scores.segm.stats if scores.segm is not None else None,
        keypoints=scores.keypoints.stats if scores.keypoints is not None else None,
        classes=category_rows(coco.dataset, coco.categories, cmap.category_ids, found.scored,
                              found.records, scores),
        detections=len(found.records.bbox), dropped_detections=found.records.dropped,
        model_classes_without_category=list(cmap.model_without_category),
        categories_without_class=list(cmap.categories_without_class))


def _category_map(labels: Sequence[str] | None, coco: CocoDataset) -> CategoryMap:
    """The model's classes matched to the dataset's categories by name; refused when the
    model has no names or none of them matches."""
    ann_path = coco.annotations_file
    if labels is None:
        raise DatasetError(f"{ann_path}: the model has no class names to match the categories "
                           "by: pass --labels (one name per model class)")
    cmap = map_categories(labels, coco.categories)
    if not cmap.to_category:
        names = [str(c["name"]) for c in coco.categories]
        raise DatasetError(f"{ann_path}: none of the model's {len(labels)} class names matches a "
                           f"category ({', '.join(map(repr, names[:6]))}...; model: "
                           f"{', '.join(map(repr, labels[:6]))}...): pass --labels")
    return cmap


@dataclass
class _Found:
    """What the predictor found in the dataset's images, as COCO records in its categories."""

    records: CocoRecords = field(default_factory=CocoRecords)
    failures: list[dict[str, str]] = field(default_factory=list)
    scored: list[Any] = field(default_factory=list)  # the ids of the images answered
    any_masks: bool = False
    keypoint_count: int = 0  # per detection, when the model gives keypoints
    resized: list[str] = field(default_factory=list)  # decoded to another size than annotated


def _detect(predictor: EvaluatedPredictor, items: Sequence[tuple[Any, str]], cmap: CategoryMap,
            coco: CocoDataset, *, batch_size: int | None, progress: Progress | None) -> _Found:
    """Run ``predictor`` over ``items`` (image id, path) and keep its answers as records."""
    sizes = {img["id"]: (img.get("height"), img.get("width")) for img in coco.dataset["images"]}
    found = _Found()
    for i, result in predict_paths(predictor, [p for _, p in items], batch_size=batch_size,
                                   progress=progress):
        image_id = items[i][0]
        if not result.ok:
            found.failures.append(failure_record(result))
            continue
        found.scored.append(image_id)
        found.any_masks |= result.masks is not None
        if result.keypoints is not None:
            found.keypoint_count = result.keypoints.shape[1]
        h, w = sizes[image_id]
        if h is not None and w is not None and (int(h), int(w)) != tuple(result.image_size):
            found.resized.append(f"{result.source} ({result.image_size[1]}x"
                                 f"{result.image_size[0]}, annotations say {w}x{h})")
        detection_records(result, image_id, cmap.to_category, into=found.records)
    return found


def _detection_warnings(predictor: EvaluatedPredictor, cmap: CategoryMap, ann_path: Path
                        ) -> list[str]:
    """What the predictor's settings and the category match leave out of the scores."""
    warnings = []
    conf = getattr(predictor, "conf", None)
    if conf is not None and conf > 0.01:
        warnings.append(f"conf={conf}: detections below it are never scored, which "
                        f"underestimates mAP (evaluate with conf {EVAL_CONF})")
    max_det = getattr(predictor, "max_det", None)
    if max_det is not None and max_det < EVAL_MAX_DET:
        warnings.append(f"max_det={max_det}: COCO scores up to {EVAL_MAX_DET} detections per image")
    if cmap.model_without_category:
        shown = ", ".join(map(repr, cmap.model_without_category[:5]))
        more = " ..." if len(cmap.model_without_category) > 5 else ""
        warnings.append(f"{len(cmap.model_without_category)} model class(es) match no category "
                        f"in {ann_path.name}; their detections are dropped: {shown}{more}")
    if cmap.categories_without_class:
        shown = ", ".join(map(repr, cmap.categories_without_class[:5]))
        more = " ..." if len(cmap.categories_without_class) > 5 else ""
        warnings.append(f"{len(cmap.categories_without_class)} categor(y/ies) of "
                        f"{ann_path.name} match no model class and are left out of the mAP: "
                        f"{shown}{more}")
    if cmap.ambiguous:
        warnings.append(f"categories with the same name in {ann_path.name} (the first is used): "
                        f"{', '.join(map(repr, cmap.ambiguous[:5]))}")
    return warnings


def predictor_options(predictor: EvaluatedPredictor) -> dict[str, Any]:
    out: dict[str, Any] = {"device": str(predictor.device), "batch_size": predictor.batch_size}
    # a model that resizes and normalises inside (torchvision's detectors) is given neither
    # the preprocessing nor an NMS threshold, so they are not the settings that made its scores
    inside = getattr(predictor, "preprocesses_inside", False)
    if not inside:
        cfg = predictor.model.preprocess
        out["preprocess"] = {"resize_size": list(cfg.resize_size),
                             "crop_size": list(cfg.crop_size) if cfg.crop_size else None,
                             "mean": list(cfg.mean), "std": list(cfg.std)}
    for name in ("conf", "iou", "max_det", "decoder"):
        if hasattr(predictor, name) and not (name == "iou" and inside):
            out[name] = getattr(predictor, name)
    return out
