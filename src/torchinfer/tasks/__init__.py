"""One predictor per task; ``PREDICTORS`` maps the task name to its class."""

from .base import Batch, Predictor
from .classify import ClassificationPredictor
from .segment import SegmentationPredictor

PREDICTORS: dict[str, type[Predictor]] = {
    ClassificationPredictor.task: ClassificationPredictor,
    SegmentationPredictor.task: SegmentationPredictor,
}

__all__ = ["PREDICTORS", "Batch", "ClassificationPredictor", "Predictor", "SegmentationPredictor"]
