"""One predictor per task (two for detection); ``task_spec(name)`` says everything about a task."""

from .base import Batch, Predictor
from .classify import ClassificationPredictor
from .detect import DetectionPredictor
from .detect_sets import SetDetectionPredictor
from .detect_torchvision import TorchvisionDetectionPredictor
from .detect_yolo import YoloDetectionPredictor
from .registry import TASK_NAMES, TaskSpec, task_spec
from .segment import SegmentationPredictor

__all__ = ["TASK_NAMES", "Batch", "ClassificationPredictor", "DetectionPredictor",
           "Predictor", "SegmentationPredictor", "SetDetectionPredictor", "TaskSpec", "TorchvisionDetectionPredictor",
           "YoloDetectionPredictor", "task_spec"]
