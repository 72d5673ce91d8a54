"""What an evaluation returns: one typed report per task, JSON-ready with ``to_dict()``.

Every report says what was evaluated (data, model, weights), how many images were scored and
which failed (and why), and any warnings (e.g. classes that could not be matched by name).
Metrics are computed over the images that were scored; a metric that is undefined (nothing to
score) is ``None`` (``null`` in JSON), never a made-up 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


def _r(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _pct1(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


@dataclass(kw_only=True)
class EvalReport:
    task: ClassVar[str] = ""

    data: str
    model: str
    weights: str | None = None
    images: int = 0  # images in the evaluated set (after --limit)
    failures: list[dict[str, str]] = field(default_factory=list)  # {"source", "error"}
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)  # predictor settings that matter

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def evaluated(self) -> int:
        return self.images - self.failed

    def _common(self) -> dict[str, Any]:
        return {"task": self.task, "data": self.data, "model": self.model,
                "weights": self.weights, "options": self.options, "images": self.images,
                "evaluated": self.evaluated, "failed": self.failed,
                "seconds": round(self.seconds, 3),
                "images_per_second": round(self.images / self.seconds, 2) if self.seconds else None}

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def summary(self) -> list[tuple[str, str]]:
        """(metric, formatted value) rows for a table: the headline numbers."""
        raise NotImplementedError

    def per_class(self) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        """(column names, rows) of the per-class table, formatted."""
        raise NotImplementedError

    def headline(self) -> tuple[str, float | None]:
        """The one number a task is judged by, in words and as a fraction (None: undefined)."""
        raise NotImplementedError

    def _tail(self) -> dict[str, Any]:
        return {"warnings": self.warnings, "failures": self.failures}


@dataclass(kw_only=True)
class ClassificationReport(EvalReport):
    """Top-1/top-k accuracy over the scored images; ``top5_k`` is the k actually used (5, or
    the number of classes when the model has fewer). ``confusion``: rows are the dataset's
    classes (sorted folder names), columns the same classes plus "(other)" (a top-1 that is a
    model class with no folder)."""

    task: ClassVar[str] = "classify"

    top1: float | None = None
    top5: float | None = None
    top5_k: int = 5
    mean_class_accuracy: float | None = None
    classes: list[dict[str, Any]] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)
    misclassified: list[dict[str, Any]] = field(default_factory=list)  # the first 100

    def to_dict(self) -> dict[str, Any]:
        names = [c["name"] for c in self.classes]
        return {**self._common(),
                "metrics": {"top1": _r(self.top1), "top5": _r(self.top5), "top5_k": self.top5_k,
                            "mean_class_accuracy": _r(self.mean_class_accuracy)},
                "classes": [{**c, "accuracy": _r(c["accuracy"]),
                             "top5_accuracy": _r(c["top5_accuracy"])} for c in self.classes],
                "confusion_matrix": {"rows": "ground truth", "columns": "top-1 prediction",
                                     "labels": names, "column_labels": [*names, "(other)"],
                                     "matrix": self.confusion},
                "misclassified": self.misclassified, **self._tail()}

    def summary(self) -> list[tuple[str, str]]:
        return [("top-1 accuracy (%)", _pct(self.top1)),
                (f"top-{self.top5_k} accuracy (%)", _pct(self.top5)),
                ("mean class accuracy (%)", _pct(self.mean_class_accuracy))]

    def headline(self) -> tuple[str, float | None]:
        return f"top-1 {_pct1(self.top1)}", self.top1

    def per_class(self) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        rows = [(c["name"], str(c["images"]), str(c["top1_correct"]), _pct(c["accuracy"]),
                 _pct(c["top5_accuracy"])) for c in self.classes]
        return ("class", "images", "correct", "top-1 %", f"top-{self.top5_k} %"), rows


@dataclass(kw_only=True)
class SegmentationReport(EvalReport):
    """Confusion-matrix metrics over every scored pixel of every image, at the ORIGINAL image
    resolution; pixels labelled 255 are ignored. mIoU is the mean IoU over the classes present
    in the ground truth or the predictions (``miou_classes`` of them)."""

    task: ClassVar[str] = "segment"

    miou: float | None = None
    miou_classes: int = 0
    pixel_accuracy: float | None = None
    mean_accuracy: float | None = None
    pixels: int = 0
    ignored_pixels: int = 0
    classes: list[dict[str, Any]] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self._common(),
                "metrics": {"miou": _r(self.miou),
                            "miou_over": "classes present in the ground truth or the predictions",
                            "miou_classes": self.miou_classes,
                            "pixel_accuracy": _r(self.pixel_accuracy),
                            "mean_accuracy": _r(self.mean_accuracy),
                            "pixels": self.pixels, "ignored_pixels": self.ignored_pixels},
                "classes": [{**c, "iou": _r(c["iou"]), "accuracy": _r(c["accuracy"])}
                            for c in self.classes],
                "confusion_matrix": {"rows": "ground truth", "columns": "prediction",
                                     "labels": [c["name"] for c in self.classes],
                                     "matrix": self.confusion},
                **self._tail()}

    def summary(self) -> list[tuple[str, str]]:
        return [(f"mIoU (%, over {self.miou_classes} classes present)", _pct(self.miou)),
                ("pixel accuracy (%)", _pct(self.pixel_accuracy)),
                ("mean class accuracy (%)", _pct(self.mean_accuracy)),
                ("pixels scored / ignored", f"{self.pixels:,} / {self.ignored_pixels:,}")]

    def headline(self) -> tuple[str, float | None]:
        return f"mIoU {_pct1(self.miou)}", self.miou

    def per_class(self) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        rows = [(str(c["index"]), c["name"], _pct(c["iou"]), _pct(c["accuracy"]),
                 f"{c['gt_pixels']:,}", f"{c['predicted_pixels']:,}") for c in self.classes
                if c["iou"] is not None]
        return ("index", "class", "IoU %", "acc %", "GT pixels", "predicted pixels"), rows


@dataclass(kw_only=True)
class DetectionReport(EvalReport):
    """COCO metrics (pycocotools' COCOeval, 100 detections per image) over the scored images
    and the dataset categories that some model class matches by name.

    ``bbox`` (and ``segm`` when the model gives masks and the annotations have them) hold
    COCOeval's twelve numbers; ``classes``: per category, AP, AP50, AP75 (bbox), its
    ground-truth objects and the detections made for it."""

    task: ClassVar[str] = "detect"

    bbox: dict[str, float | None] = field(default_factory=dict)
    segm: dict[str, float | None] | None = None
    # COCO keypoint AP (OKS) when the model gives keypoints and the annotations have them
    keypoints: dict[str, float | None] | None = None
    classes: list[dict[str, Any]] = field(default_factory=list)
    detections: int = 0
    dropped_detections: int = 0  # of model classes that no dataset category matches
    model_classes_without_category: list[str] = field(default_factory=list)
    categories_without_class: list[str] = field(default_factory=list)

    @property
    def map(self) -> float | None:
        return self.bbox.get("map")

    @property
    def map50(self) -> float | None:
        return self.bbox.get("map50")

    @property
    def map75(self) -> float | None:
        return self.bbox.get("map75")

    def to_dict(self) -> dict[str, Any]:
        metrics: dict[str, Any] = {"bbox": {k: _r(v) for k, v in self.bbox.items()}}
        if self.segm is not None:
            metrics["segm"] = {k: _r(v) for k, v in self.segm.items()}
        if self.keypoints is not None:
            metrics["keypoints"] = {k: _r(v) for k, v in self.keypoints.items()}
        return {**self._common(), "metrics": metrics,
                "classes": [{**c, **{k: _r(c.get(k)) for k in ("ap", "ap50", "ap75", "mask_ap",
                                                               "keypoint_ap")
                                     if k in c}} for c in self.classes],
                "detections": self.detections, "dropped_detections": self.dropped_detections,
                "model_classes_without_category": self.model_classes_without_category,
                "categories_without_class": self.categories_without_class, **self._tail()}

    def summary(self) -> list[tuple[str, str]]:
        rows = [("mAP@[.5:.95] (%)", _pct(self.map)), ("mAP@.5 (%)", _pct(self.map50)),
                ("mAP@.75 (%)", _pct(self.map75)),
                ("mAR@100 (%)", _pct(self.bbox.get("mar100")))]
        if self.segm is not None:
            rows += [("mask mAP@[.5:.95] (%)", _pct(self.segm.get("map"))),
                     ("mask mAP@.5 (%)", _pct(self.segm.get("map50")))]
        rows.append(("detections (dropped: no category)",
                     f"{self.detections:,} ({self.dropped_detections:,})"))
        return rows

    def headline(self) -> tuple[str, float | None]:
        return f"mAP@.5 {_pct1(self.map50)}, mAP@[.5:.95] {_pct1(self.map)}", self.map50

    def per_class(self) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        mask = self.segm is not None
        rows = []
        for c in self.classes:
            row = (str(c["category_id"]), c["name"], _pct(c["ap"]), _pct(c["ap50"]),
                   _pct(c["ap75"]))
            if mask:
                row += (_pct(c.get("mask_ap")),)
            rows.append(row + (str(c["objects"]), str(c["detections"])))
        columns = ("id", "category", "AP %", "AP50 %", "AP75 %") + (("mask AP %",) if mask else ())
        return columns + ("objects", "detections"), rows
