"""One predictor per task; ``PREDICTORS`` maps the task name to its class."""

from .base import Batch, Predictor
from .classify import ClassificationPredictor

PREDICTORS: dict[str, type[Predictor]] = {
    ClassificationPredictor.task: ClassificationPredictor,
}

__all__ = ["PREDICTORS", "Batch", "ClassificationPredictor", "Predictor"]
