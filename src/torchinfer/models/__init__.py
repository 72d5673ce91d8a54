"""Build models by name, load local weights safely, and carry their labels and preprocessing."""

from .card import ModelCard
from .catalog import list_models
from .config import PreprocessConfig, read_labels
from .loaded import LoadedModel
from .loader import check_input_size, load_model, model_task
from .registry import ModelEntry, register_model, registered_model, torchvision_task
from .weights import KeyReport, WeightsFile, read_weights

__all__ = ["KeyReport", "LoadedModel", "ModelCard", "ModelEntry", "PreprocessConfig",
           "WeightsFile", "check_input_size", "list_models", "load_model", "model_task", "read_labels",
           "read_weights", "register_model", "registered_model", "torchvision_task"]
