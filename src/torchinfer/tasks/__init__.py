"""One predictor per task; ``PREDICTORS`` maps the task name to its class."""

from .base import Batch, Predictor
from .classify import ClassificationPredictor
from .detect import DetectionPredictor
from .segment import SegmentationPredictor

PREDICTORS: dict[str, type[Predictor]] = {
    ClassificationPredictor.task: ClassificationPredictor,
    SegmentationPredictor.task: SegmentationPredictor,
    DetectionPredictor.task: DetectionPredictor,
}

__all__ = ["PREDICTORS", "Batch", "ClassificationPredictor", "DetectionPredictor", "Predictor",
           "SegmentationPredictor"]
