"""One predictor per task (several for detection); ``task_spec(name)`` says everything about a
task: its manifest (``torchinfer.manifests``) and its implementation."""

from .base import Batch, Predictor
from .classify import ClassificationPredictor
from .detect import DetectionPredictor
from .detect_sets import SetDetectionPredictor
from .detect_torchvision import TorchvisionDetectionPredictor
from .detect_yolo import YoloDetectionPredictor
from .registry import TaskSpec, task_spec
from .segment import SegmentationPredictor
from .spec import TaskImplementation

__all__ = ["Batch", "ClassificationPredictor", "DetectionPredictor", "Predictor",
           "SegmentationPredictor", "SetDetectionPredictor", "TaskImplementation", "TaskSpec",
           "TorchvisionDetectionPredictor", "YoloDetectionPredictor", "task_spec"]
