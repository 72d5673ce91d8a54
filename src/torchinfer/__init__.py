"""torchinfer: PyTorch inference as preprocess -> model -> postprocess, for every task.

    import torchinfer as ti
    clf = ti.load("classify", "mobilenet_v2", weights="mobilenet_v2-b0353104.pth")
    result = clf("cat.jpg")
    print(result.top1.label, result.top1.score)

The names below are imported on first use (PEP 562), so ``import torchinfer`` and the
command line's ``--help`` do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import errors
from ._version import __version__
from .errors import (
    DeviceError,
    InputError,
    ModelNotFoundError,
    OptionError,
    TorchinferError,
    UntrustedCodeError,
    WeightsError,
    WeightsMismatchError,
    WeightsUnavailableError,
)

# public name -> the module that defines it
_LAZY = {
    "load": "api", "load_group": "api", "inspect": "api", "export": "api",
    "evaluate": "api", "search": "retrieval", "duplicates": "retrieval",
    "ExportError": "exporters.onnx", "ExportReport": "exporters.onnx",
    "ExportVerificationError": "exporters.onnx",
    "LayerStats": "inspection", "ModelReport": "inspection",
    "LoadedModel": "models", "PreprocessConfig": "models", "list_models": "models",
    "load_model": "models", "read_weights": "models", "register_model": "models",
    "ClassArea": "results", "Classification": "results", "ClassScore": "results",
    "Detections": "results", "InstanceMask": "results", "MultiTask": "results", "Result": "results",
    "Segmentation": "results",
    "ClassificationPredictor": "tasks", "DetectionPredictor": "tasks", "Predictor": "tasks",
    "SegmentationPredictor": "tasks", "TaskImplementation": "tasks",
    "TaskManifest": "manifests", "TaskOption": "manifests", "register_task": "manifests",
}

__all__ = ["DeviceError", "InputError", "ModelNotFoundError", "OptionError", "TorchinferError",
           "UntrustedCodeError", "WeightsError", "WeightsMismatchError",
           "WeightsUnavailableError", "__version__", "errors", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'torchinfer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # what type checkers and IDEs see
    from .api import evaluate, export, inspect, load, load_group  # noqa: F401
    from .exporters.onnx import ExportError, ExportReport, ExportVerificationError  # noqa: F401
    from .inspection import LayerStats, ModelReport  # noqa: F401
    from .manifests import TaskManifest, TaskOption, register_task  # noqa: F401
    from .models import LoadedModel, PreprocessConfig, list_models, load_model, read_weights, register_model  # noqa: F401
    from .results import (  # noqa: F401
        ClassArea,
        Classification,
        ClassScore,
        Detections,
        InstanceMask,
        MultiTask,
        Result,
        Segmentation,
    )
    from .retrieval import duplicates, search  # noqa: F401
    from .tasks import (  # noqa: F401
        ClassificationPredictor,
        DetectionPredictor,
        Predictor,
        SegmentationPredictor,
        TaskImplementation,
    )
