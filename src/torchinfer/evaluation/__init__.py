"""Evaluation on labelled data: accuracy (classification), mIoU (segmentation), COCO mAP
(detection), with the model's own predictor so every model torchinfer runs is scored the same way.

    import torchinfer as ti
    report = ti.evaluate("classify", "resnet18", "data/val", weights="resnet18.pth")
    print(report.top1, report.top5)

    det = ti.load("detect", "fasterrcnn_resnet50_fpn", "frcnn.pth", conf=0.001, max_det=100)
    report = evaluate_detection(det, "data/coco-val")   # annotations.json + images/
    print(report.map, report.map50, report.to_dict()["classes"][:3])

Evaluators take a predictor, never a model name: loading is ``torchinfer.evaluate``'s job
(api.py), above this package.
"""

from .coco import CategoryMap, CocoScores, coco_evaluate, detection_records, map_categories
from .datasets import DatasetError, read_coco, read_image_folder, read_voc_segmentation, resolve_coco_paths
from .evaluators import (
    CLASSIFICATION_OPTIONS,
    DETECTION_OPTIONS,
    SEGMENTATION_OPTIONS,
    EvaluatedPredictor,
    evaluate_classification,
    evaluate_detection,
    evaluate_segmentation,
    failure_record,
    limited,
    predict_paths,
    predictor_options,
    read_mask,
)
from .metrics import add_to_confusion, segmentation_scores
from .readers import read_classification_data, read_detection_data, read_segmentation_data
from .report import ClassificationReport, DetectionReport, EvalReport, SegmentationReport

__all__ = [
    "failure_record", "limited", "predict_paths", "predictor_options",
    "CLASSIFICATION_OPTIONS", "DETECTION_OPTIONS", "SEGMENTATION_OPTIONS", "CategoryMap",
    "ClassificationReport", "CocoScores", "DatasetError", "DetectionReport", "EvalReport",
    "EvaluatedPredictor", "SegmentationReport", "add_to_confusion", "coco_evaluate",
    "detection_records", "evaluate_classification", "evaluate_detection",
    "evaluate_segmentation", "map_categories", "read_classification_data", "read_coco",
    "read_detection_data", "read_image_folder", "read_mask", "read_segmentation_data",
    "read_voc_segmentation", "resolve_coco_paths", "segmentation_scores",
]
