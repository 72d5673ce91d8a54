"""timm's models: a folder as timm saves it for the hub (``config.json`` with ``architecture``
and ``pretrained_cfg``, plus ``model.safetensors``), its hub id in the local cache
(``timm/NAME``, ``hf-hub:ORG/NAME``), or an architecture by name (``timm:resnet18``, random
weights unless ``--weights`` gives a file).

The preprocessing is timm's own: ``timm.data.resolve_data_config`` on the model's
``pretrained_cfg`` (input size, interpolation, ``crop_pct``, ``crop_mode``, mean, std), turned
into the same resize and crop ``timm.data.create_transform`` makes. The architecture must be
one of timm's registry (``timm.is_model``): a config names a model, never code.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from ...errors import ModelNotFoundError, TorchinferError, WeightsError
from ..building import Built, build_fitting, check_size_on_meta, finish
from ..config import PreprocessConfig
from ..loaded import LoadedModel
from ..weights import read_weights
from .base import ModelSource, SourceRequest
from .hub_files import (
    HubFolder,
    bounded_labels,
    config_kind,
    local_folder,
    read_json,
    weights_file,
)

PREFIX = "timm:"
# create_model keywords a config may not set: they load files or fetch weights
_REFUSED_ARGS = frozenset({"pretrained", "pretrained_cfg", "pretrained_cfg_overlay",
                           "checkpoint_path", "cache_dir", "features_only", "scriptable",
                           "exportable", "no_jit"})


class TimmSource(ModelSource):
    name = "timm"
    requires = ("timm", "timm")

    def recognises(self, spec: str) -> bool:
        if spec.startswith(PREFIX):
            return True
        folder = local_folder(spec)
        return folder is not None and config_kind(folder) == "timm"

    def task(self, spec: str) -> str | None:
        return "classify"  # timm's models are image classifiers (their heads: features too)

    def holds_weights(self, spec: str) -> bool:
        return not spec.startswith(PREFIX)

    def load(self, spec: str, request: SourceRequest) -> LoadedModel:
        if spec.startswith(PREFIX):
            return _load_by_name(spec[len(PREFIX):], request)
        folder = local_folder(spec)
        assert folder is not None  # recognised
        return _load_folder(folder, request)


def _load_by_name(name: str, request: SourceRequest) -> LoadedModel:
    import timm

    architecture = name.split(".")[0]  # "resnet18.a1_in1k": the architecture and its tag
    if not timm.is_model(architecture):
        close = timm.list_models(f"*{architecture}*")[:3]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelNotFoundError(f"{name!r} is not a timm model.{hint} (timm.list_models() "
                                 "lists them)")
    kwargs = {**request.model_kwargs}
    builder = _builder(name, None)
    built = build_fitting(builder, kwargs, request.num_classes, request.weights,
                          request.strict, request.trust)
    return _finished(built, PREFIX + name, request.weights, None)


def _load_folder(folder: HubFolder, request: SourceRequest) -> LoadedModel:
    import timm

    if request.weights is not None:
        raise WeightsError(f"{folder.path} holds its own weights (got {request.weights})")
    config = read_json(folder.path / "config.json", "config")
    architecture = config.get("architecture")
    if not isinstance(architecture, str) or not timm.is_model(architecture.split(".")[0]):
        raise ModelNotFoundError(f"{folder.path / 'config.json'} names architecture "
                                 f"{architecture!r}, which is not one of timm's models")
    pretrained_cfg = config.get("pretrained_cfg")
    if not isinstance(pretrained_cfg, dict):
        raise WeightsError(f"{folder.path / 'config.json'}: pretrained_cfg must be an object")
    model_args = config.get("model_args") or {}
    if not isinstance(model_args, dict) or not all(_is_plain_data(v) for v in model_args.values()):
        raise WeightsError(f"{folder.path / 'config.json'}: model_args must be an object of "
                           "plain values")
    refused = sorted(_REFUSED_ARGS & set(model_args))
    if refused:
        raise WeightsError(f"{folder.path / 'config.json'}: model_args may not set "
                           f"{', '.join(refused)} (they load files or fetch weights)")
    num_classes = config.get("num_classes", pretrained_cfg.get("num_classes"))
    if num_classes is not None and (not isinstance(num_classes, int) or
                                    not 0 <= num_classes <= 100_000):
        raise WeightsError(f"{folder.path / 'config.json'}: num_classes must be an int in "
                           f"0..100000, got {num_classes!r}")
    labels = config.get("label_names", pretrained_cfg.get("label_names"))
    if labels is not None and (not isinstance(labels, list) or
                               not all(isinstance(x, str) for x in labels)):
        raise WeightsError(f"{folder.path / 'config.json'}: label_names must be a list of names")
    path = weights_file(folder, request.trust.pickle)
    wf = read_weights(path, trust_pickle=request.trust.pickle)
    kwargs = {**model_args, **request.model_kwargs}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    builder = _builder(architecture, {**pretrained_cfg, "architecture": architecture})
    # the config chose the arguments: sized on the meta device before memory is taken
    check_size_on_meta(builder, kwargs, wf, path, required=False)
    built = build_fitting(builder, kwargs, request.num_classes, path, request.strict,
                          request.trust, wf)
    if labels is not None:
        built.labels = bounded_labels(list(labels), folder.path / "config.json")
    return _finished(built, folder.label, str(path), folder.revision)


def _builder(name: str, pretrained_cfg: dict[str, Any] | None) -> Any:
    """timm.create_model for ``name`` that never fetches weights."""
    import timm

    def build(**kwargs: Any) -> nn.Module:
        if pretrained_cfg is not None:
            kwargs = {**kwargs, "pretrained_cfg": pretrained_cfg}
        return timm.create_model(name, pretrained=False, **kwargs)

    build.__name__ = f"timm.create_model({name!r})"
    return build


def _finished(built: Built, name: str, weights: Any, revision: str | None) -> LoadedModel:
    built.preprocess = recipe_of(built.module)
    if built.labels is None:
        built.labels = _imagenet_labels(built.module)
    loaded = finish(built, name, "classify", weights)
    loaded.preprocess_from = "weights"
    loaded.revision = revision
    return loaded


def recipe_of(module: nn.Module) -> PreprocessConfig:
    """The resize, crop and normalisation ``timm.data.create_transform`` builds for ``module``
    at evaluation (``transforms_imagenet_eval``)."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=module)
    _, h, w = (int(v) for v in cfg["input_size"])
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    mode = cfg.get("crop_mode") or "center"
    scale = (math.floor(h / crop_pct), math.floor(w / crop_pct))
    if mode == "squash":  # each side to 1/crop_pct of the target, then the centre
        resize: tuple[int, ...] = scale
    elif mode == "center" and h == w:  # the short side, keeping the aspect ratio
        resize = (scale[0],)
    else:
        raise TorchinferError(f"timm's crop_mode {mode!r} at input size {h}x{w} is not "
                              "supported yet (center at a square size, and squash, are)")
    interpolation = str(cfg.get("interpolation") or "bilinear")
    return PreprocessConfig(resize_size=resize, crop_size=(h, w),
                            mean=tuple(float(m) for m in cfg["mean"]),
                            std=tuple(float(s) for s in cfg["std"]),
                            interpolation=interpolation)


def _imagenet_labels(module: nn.Module) -> list[str] | None:
    """ImageNet's class names for a model with an ImageNet head (timm ships them)."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(module)
    return list(ImageNetInfo(subset).label_descriptions()) if subset else None


def _is_plain_data(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_plain_data(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))
