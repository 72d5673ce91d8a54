"""Detection as a task: which of the detectors runs a model, and a result's row."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..draw import draw_detections
from ..evaluation import DETECTION_OPTIONS, evaluate_detection, read_detection_data
from ..models import LoadedModel, PreprocessConfig
from ..results import Detections
from .base import Predictor
from .detect import AUTO, DetectionPredictor
from .detect_sets import SetDetectionPredictor
from .detect_torchvision import TorchvisionDetectionPredictor
from .detect_yolo import YoloDetectionPredictor
from .spec import TaskImplementation


def choose(model: LoadedModel, options: Mapping[str, Any]) -> type[Predictor]:
    return DetectionPredictor.kind_for(model, decoder=options.get("decoder", AUTO))


def describe(result: Detections) -> tuple[str, ...]:
    best = ", ".join(f"{result.labels[i]} {result.scores[i]:.2f}" for i in range(min(3, len(result))))
    return str(len(result)), best


TASK = TaskImplementation(
    result=Detections,
    predictors=(TorchvisionDetectionPredictor, YoloDetectionPredictor, SetDetectionPredictor),
    choose=choose,
    # YOLO-style raw detectors: a 640x640 letterbox, inputs in [0, 1] (no mean/std);
    # torchvision detectors normalise inside and ignore the size
    preprocess=PreprocessConfig(resize_size=(640, 640), crop_size=None, mean=(0.0, 0.0, 0.0),
                                std=(1.0, 1.0, 1.0)),
    output_name="output0", read_dataset=read_detection_data, evaluator=evaluate_detection,
    evaluation_options=DETECTION_OPTIONS, describe=describe, draw=draw_detections)
