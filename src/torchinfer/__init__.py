"""torchinfer: PyTorch inference as preprocess -> model -> postprocess, for every task.

    import torchinfer as ti
    clf = ti.load("classify", "mobilenet_v2", weights="mobilenet_v2-b0353104.pth")
    result = clf("cat.jpg")
    print(result.top1.label, result.top1.score)
"""

from .api import export, inspect, load
from .errors import (
                     DeviceError,
                     InputError,
                     ModelNotFoundError,
                     TorchinferError,
                     UntrustedCodeError,
                     WeightsError,
                     WeightsMismatchError,
                     WeightsUnavailableError,
)
from .evaluation import evaluate  # ti.evaluate(task, model, data): see torchinfer.evaluation
from .export import ExportError, ExportReport, ExportVerificationError
from .inspection import LayerStats, ModelReport
from .models import LoadedModel, PreprocessConfig, list_models, load_model, read_weights, register_model
from .results import ClassArea, Classification, ClassScore, Detections, InstanceMask, Result, Segmentation
from .tasks import ClassificationPredictor, DetectionPredictor, Predictor, SegmentationPredictor

__version__ = "0.1.0"

__all__ = [
    "ExportError", "ExportReport", "ExportVerificationError", "export", "evaluate",
    "ClassArea", "Segmentation", "SegmentationPredictor", "Detections", "DetectionPredictor",
    "InstanceMask",
    "ClassScore", "Classification", "LayerStats", "ModelReport", "inspect", "ClassificationPredictor", "DeviceError", "InputError",
    "LoadedModel", "ModelNotFoundError", "Predictor", "PreprocessConfig", "Result",
    "TorchinferError", "UntrustedCodeError", "WeightsError", "WeightsMismatchError", "WeightsUnavailableError",
    "__version__", "list_models", "load", "load_model", "read_weights", "register_model",
]
