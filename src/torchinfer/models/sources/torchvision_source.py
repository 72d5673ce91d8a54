"""torchvision's models by name (``mobilenet_v2``, ``deeplabv3_resnet50``...), with a local
weights file or named published weights, and the preprocessing and labels of those weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchvision.models import get_model_weights
from torchvision.transforms._presets import ImageClassification, SemanticSegmentation

from .. import hub
from ..building import Built, Trust, accepts, build_fitting, finish
from ..config import PreprocessConfig
from ..loaded import LoadedModel
from ..registry import torchvision_builder, torchvision_task
from .base import ModelSource, SourceRequest


class TorchvisionSource(ModelSource):
    name = "torchvision"

    def recognises(self, spec: str) -> bool:
        return torchvision_task(spec) is not None

    def task(self, spec: str) -> str | None:
        return torchvision_task(spec)

    def load(self, spec: str, request: SourceRequest) -> LoadedModel:
        task = torchvision_task(spec)
        assert task is not None  # recognised
        return load_torchvision(spec, task, request.weights, request.num_classes, request.strict,
                                request.trust, dict(request.model_kwargs))


def load_torchvision(name: str, task: str, weights: str | Path | None, num_classes: int | None,
                     strict: bool, trust: Trust, kwargs: dict[str, Any]) -> LoadedModel:
    builder = torchvision_builder(name)
    weights_str = None if weights is None else str(weights)
    if weights_str is not None and not Path(weights_str).exists() and hub.is_named_weights(weights_str):
        enum = hub.resolve_named_weights(name, weights_str)
        if num_classes is not None:
            kwargs = {**kwargs, "num_classes": num_classes}
        module = hub.build_with_named_weights(builder, enum, **kwargs)
        built = Built(module, preprocess=_preprocess_from_weights(enum),
                      labels=list(enum.meta.get("categories") or []) or None)
        return finish(built, name, task, f"{enum.__class__.__name__}.{enum.name}")
    if accepts(builder, "weights_backbone", explicitly=True):
        # Segmentation/detection builders otherwise download ImageNet backbone weights, which
        # the weights we load (or the random initialisation asked for) replace anyway.
        kwargs = {"weights_backbone": None, **kwargs}
    built = build_fitting(builder, kwargs, num_classes, weights, strict, trust)
    default = _published_weights_for_file(name, weights_str) or _default_weights(name)
    if default is not None:
        built.preprocess = built.preprocess or _preprocess_from_weights(default)
        categories = list(default.meta.get("categories") or [])
        if built.labels is None and categories and built.num_classes in (None, len(categories)):
            built.labels = categories  # the architecture's default head: its published names
    return finish(built, name, task, weights)




def _published_weights_for_file(name: str, path: str | None) -> Any:
    """The torchvision weights whose published file this is (e.g. the seed's
    ``mobilenet_v2-b0353104.pth`` is IMAGENET1K_V1, resized to 256, whereas DEFAULT is V2 at
    232): a downloaded file keeps the preprocessing it was published with."""
    if path is None:
        return None
    try:
        enum_cls = get_model_weights(name)
    except ValueError:
        return None
    return next((w for w in enum_cls if hub.cache_path(w).name == Path(path).name), None)


def _default_weights(name: str) -> Any:
    try:
        return get_model_weights(name).DEFAULT
    except ValueError:
        return None


def _preprocess_from_weights(weights: Any) -> PreprocessConfig | None:
    transforms = weights.transforms()
    if isinstance(transforms, (ImageClassification, SemanticSegmentation)):
        return PreprocessConfig.from_transforms(transforms)
    return None  # detectors resize inside the model (GeneralizedRCNNTransform)
