"""Build models by name, load local weights safely, and carry their labels and preprocessing."""

from .config import PreprocessConfig, read_labels
from .loader import LoadedModel, load_model
from .registry import TASKS, ModelEntry, list_models, torchvision_task
from .weights import KeyReport, WeightsFile, read_weights

__all__ = ["TASKS", "KeyReport", "LoadedModel", "ModelEntry", "PreprocessConfig", "WeightsFile",
           "list_models", "load_model", "read_labels", "read_weights", "torchvision_task"]
