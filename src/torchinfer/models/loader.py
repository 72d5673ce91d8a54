"""Build a model by name and load its weights: the seed's "模型载入" step as one call.

    model = models.mobilenet_v2(num_classes=1000)
    model.load_state_dict(torch.load(path, map_location="cpu"), strict=True)

becomes ``load_model("mobilenet_v2", "path.pth")``, which also reads checkpoints, safetensors
and TorchScript, infers ``num_classes`` from the head, and brings the labels and preprocessing
that belong to the weights.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import get_model_weights
from torchvision.transforms._presets import ImageClassification, SemanticSegmentation

from ..errors import ModelNotFoundError, TorchinferError, WeightsError
from . import hub
from .bundled import bundled_path
from .config import PreprocessConfig
from .loaded import LoadedModel
from .onnx import load_onnx_model
from .registry import (
    import_factory,
    registered_model,
    resolve_architecture,
    torchvision_builder,
    torchvision_task,
    unknown_model_message,
)
from .weights import (
    KeyReport,
    WeightsFile,
    compare_keys,
    head_class_counts,
    load_into,
    read_weights,
    strip_common_prefixes,
)


def load_model(model: str | Path | nn.Module, weights: str | Path | None = None, *,
               num_classes: int | None = None, strict: bool = True, trust_pickle: bool = False,
               trust_code: bool = False, **model_kwargs: Any) -> LoadedModel:
    """Build ``model`` and load ``weights`` into it, returning it in eval mode on the CPU.

    model: a torchvision name (``mobilenet_v2``), a factory path (``pkg.module:factory``,
        called with ``model_kwargs``), a file holding a whole model (TorchScript, ONNX run by
        ONNX Runtime, or a pickled ``nn.Module`` with ``trust_pickle=True``), or an
        ``nn.Module``.
    weights: a local file (state dict, checkpoint dict, ``.safetensors``, TorchScript) or, for
        torchvision models, ``"DEFAULT"`` / a weights name such as
        ``"MobileNet_V2_Weights.IMAGENET1K_V1"``. None keeps the random initialisation.
    num_classes: the output size; inferred from the checkpoint's head when not given.
    strict: every key must match (the default). Shape mismatches are refused either way.
    trust_pickle: allow files that hold pickled Python objects (they can run code).
    trust_code: allow a file's metadata to name an architecture that is neither torchvision's
        nor registered (``register_model``): building it imports and calls code the file chose.
        A factory path given here as ``model`` is the caller's own choice and needs no opt-in.
    """
    trust = _Trust(pickle=trust_pickle, code=trust_code)
    if isinstance(model, nn.Module):
        return _finish(_load_file_into_module(model, weights, strict, trust),
                       type(model).__name__, None, weights)
    name = str(model)
    task = torchvision_task(name)
    bundled = bundled_path(name) if task is None else None
    if bundled is not None:  # a model shipped with torchinfer: its file describes it
        if weights is not None:
            raise WeightsError(f"{name} is a bundled model with its own weights (got {weights})")
        loaded = _load_whole_model_file(bundled, trust, num_classes, strict, model_kwargs)
        return replace(loaded, name=name)
    if task is not None:
        return _load_torchvision(name, task, weights, num_classes, strict, trust, model_kwargs)
    path = Path(name)
    if path.is_file() and path.suffix.lower() == ".onnx":
        if weights is not None:
            raise WeightsError(f"{name} is an ONNX file; it takes no separate weights (got {weights})")
        return load_onnx_model(path)  # onnxruntime (an optional extra) is imported when called
    if path.is_file():
        if weights is not None:
            raise WeightsError(f"{name} is a whole-model file; it takes no separate weights "
                               f"(got {weights})")
        return _load_whole_model_file(path, trust, num_classes, strict, model_kwargs)
    entry = registered_model(name)
    if entry is not None:
        built = _build_fitting(entry.factory, model_kwargs, num_classes, weights, strict, trust)
        return _finish(built, entry.name, entry.task, weights)
    if ":" in name:  # typed by the caller: their own code
        factory = import_factory(name)
        built = _build_fitting(factory, model_kwargs, num_classes, weights, strict, trust)
        return _finish(built, name, None, weights)
    raise ModelNotFoundError(unknown_model_message(name))


@dataclass(frozen=True)
class _Trust:
    """What the caller allowed files to do: unpickle objects, name code to import."""

    pickle: bool = False
    code: bool = False


@dataclass
class _Built:
    module: nn.Module
    weights_file: WeightsFile | None = None
    key_report: KeyReport | None = None
    preprocess: PreprocessConfig | None = None
    labels: list[str] | None = None
    num_classes: int | None = None  # given or inferred; None means the builder's default


def _load_torchvision(name: str, task: str, weights: str | Path | None, num_classes: int | None,
                      strict: bool, trust: _Trust, kwargs: dict[str, Any]) -> LoadedModel:
    builder = torchvision_builder(name)
    weights_str = None if weights is None else str(weights)
    if weights_str is not None and not Path(weights_str).exists() and hub.is_named_weights(weights_str):
        enum = hub.resolve_named_weights(name, weights_str)
        if num_classes is not None:
            kwargs = {**kwargs, "num_classes": num_classes}
        module = hub.build_with_named_weights(builder, enum, **kwargs)
        built = _Built(module, preprocess=_preprocess_from_weights(enum),
                       labels=list(enum.meta.get("categories") or []) or None)
        return _finish(built, name, task, f"{enum.__class__.__name__}.{enum.name}")
    if _accepts(builder, "weights_backbone", explicitly=True):
        # Segmentation/detection builders otherwise download ImageNet backbone weights, which
        # the weights we load (or the random initialisation asked for) replace anyway.
        kwargs = {"weights_backbone": None, **kwargs}
    built = _build_fitting(builder, kwargs, num_classes, weights, strict, trust)
    default = _published_weights_for_file(name, weights_str) or _default_weights(name)
    if default is not None:
        built.preprocess = built.preprocess or _preprocess_from_weights(default)
        categories = list(default.meta.get("categories") or [])
        if built.labels is None and categories and built.num_classes in (None, len(categories)):
            built.labels = categories  # the architecture's default head: its published names
    return _finish(built, name, task, weights)


def _build_fitting(builder: Callable[..., nn.Module], kwargs: dict[str, Any],
                   num_classes: int | None, weights: str | Path | None, strict: bool,
                   trust: _Trust, weights_file: WeightsFile | None = None) -> _Built:
    """Build with ``kwargs``; when weights are given and ``num_classes`` is not, read it off the
    checkpoint's output layer and rebuild if the default head has another size."""
    if num_classes is not None:
        kwargs = {**kwargs, "num_classes": num_classes}
    module = _call_builder(builder, kwargs)
    if weights is None:
        return _Built(module, num_classes=num_classes)
    wf = weights_file or read_weights(weights, trust_pickle=trust.pickle)
    state_dict = wf.tensors()
    if num_classes is None and _accepts(builder, "num_classes"):
        report = compare_keys(strip_common_prefixes(state_dict, set(module.state_dict())), module)
        heads = head_class_counts(report)
        if heads:
            num_classes = next(iter(heads))
            module = _call_builder(builder, {**kwargs, "num_classes": num_classes})
    key_report = load_into(module, state_dict, strict=strict, source=f"weights {weights}")
    return _Built(module, wf, key_report, *_config_from_card(wf), num_classes=num_classes)


def _load_file_into_module(module: nn.Module, weights: str | Path | None, strict: bool,
                           trust: _Trust) -> _Built:
    if weights is None:
        return _Built(module)
    wf = read_weights(weights, trust_pickle=trust.pickle)
    report = load_into(module, wf.tensors(), strict=strict, source=f"weights {weights}")
    return _Built(module, wf, report, *_config_from_card(wf))


def _load_whole_model_file(path: Path, trust: _Trust, num_classes: int | None = None,
                           strict: bool = True,
                           model_kwargs: dict[str, Any] | None = None) -> LoadedModel:
    """A file holding a model (TorchScript, a trusted pickle), or weights whose metadata names
    their architecture (``architecture`` + ``model_kwargs``, as the bundled models have).

    The metadata is untrusted: the architecture must be torchvision's or registered unless the
    caller trusts code (``resolve_architecture``), its keyword arguments are JSON data, and the
    model they describe is sized on the meta device against the file's tensors before any
    memory is allocated for it."""
    wf = read_weights(path, trust_pickle=trust.pickle)
    card = wf.card
    if wf.module is None and card.architecture is not None:
        factory = resolve_architecture(card.architecture, trust_code=trust.code, source=str(path))
        kwargs = {**card.model_kwargs, **(model_kwargs or {})}  # the card refused download keys
        if _accepts(factory, "weights_backbone", explicitly=True):
            # segmentation/detection builders download a backbone by default: a file's
            # weights are loaded, never downloaded ones
            kwargs = {"weights_backbone": None, **kwargs}
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        # a torchvision builder is sized first or not built: the file chose its arguments; a
        # registered factory or one trusted by the caller is the caller's own code
        must_size = registered_model(card.architecture) is None and not trust.code
        _check_size_on_meta(factory, kwargs, wf, path, required=must_size)
        built = _build_fitting(factory, kwargs, num_classes, path, strict, trust, wf)
        return _finish(built, path.stem, card.task, str(path))
    if wf.module is None:
        raise WeightsError(f"{path} holds only weights (a state dict), not an architecture: "
                           f"name the architecture, e.g. --model mobilenet_v2 --weights {path}")
    built = _Built(wf.module, wf, None, *_config_from_card(wf))
    return _finish(built, card.model_name or path.name, card.task, str(path))


# How far a model built from a file's metadata may outgrow the tensors the file holds (in
# elements), beyond this slack: a head or buffer the checkpoint leaves out is fine, a model a
# thousand times the file's size is a memory bomb.
_META_SIZE_SLACK = 1_000_000


def _check_size_on_meta(factory: Callable[..., nn.Module], kwargs: dict[str, Any],
                        wf: WeightsFile, path: Path, *, required: bool) -> None:
    """Build on the meta device (no memory) and refuse a model far larger than the file.
    ``required``: a model that cannot be built on meta (torchvision's RegNets) is refused too,
    since its size cannot be told before the memory is taken."""
    try:
        with torch.device("meta"):
            probe = factory(**kwargs)
    except Exception as exc:  # noqa: BLE001 - any builder failure: meta cannot size it
        if required:
            raise WeightsError(f"{path}: the architecture its metadata names cannot be sized "
                               f"before it is built ({type(exc).__name__}); load it with "
                               "--trust-code (trust_code=True) if you trust the file, or name "
                               "the architecture yourself with --model") from exc
        return
    if not isinstance(probe, nn.Module):
        return
    wanted = sum(t.numel() for t in probe.state_dict().values())
    held = sum(t.numel() for t in wf.tensors().values())
    if wanted > 2 * held + _META_SIZE_SLACK:
        raise WeightsError(f"{path}: its metadata describes a model of {wanted:,} elements, but "
                           f"the file holds {held:,}: refused before allocating it")


def _finish(built: _Built, name: str, task: str | None, weights: str | Path | None) -> LoadedModel:
    module = built.module.eval()
    preprocess = built.preprocess or PreprocessConfig.default()
    preprocess_from = "weights" if built.preprocess else "default"
    # ViT-style models are built for one input size; make the crop agree with it.
    image_size = getattr(module, "image_size", None)
    if isinstance(image_size, int) and preprocess.crop_size and image_size != preprocess.crop_size[0]:
        preprocess = preprocess.with_overrides(input_size=image_size)
    report = built.key_report if built.key_report and not built.key_report.ok else None
    return LoadedModel(module=module, name=name, task=task, preprocess=preprocess,
                       labels=built.labels, weights=None if weights is None else str(weights),
                       weights_format=built.weights_file.format if built.weights_file else None,
                       key_report=report, preprocess_from=preprocess_from,
                       heads=built.weights_file.card.heads if built.weights_file else None)


def check_input_size(loaded: LoadedModel, size: tuple[int, int]) -> None:
    """Refuse an input size a model is not built for (ViT-style ``image_size``), naming how to
    build it at that size instead of failing inside its forward."""
    built_for = getattr(loaded.module, "image_size", None)
    if isinstance(built_for, int) and tuple(size) != (built_for, built_for):
        h, w = size
        how = (f"--model-kwargs image_size={h} (Python: model_kwargs={{'image_size': {h}}})"
               if h == w else "a square input size")
        raise TorchinferError(f"{loaded.name} is built for {built_for}x{built_for} inputs, not "
                              f"{h}x{w}: build it at that size with {how}")


def _config_from_card(wf: WeightsFile) -> tuple[PreprocessConfig | None, list[str] | None]:
    """The preprocessing and labels the file's card carries (None where it says nothing)."""
    card = wf.card
    return card.preprocess, list(card.labels) if card.labels is not None else None


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


def _accepts(fn: Callable[..., Any], param: str, *, explicitly: bool = False) -> bool:
    """Whether ``fn`` takes keyword ``param`` (by name, or through ``**kwargs`` unless
    ``explicitly``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    if param in params:
        return True
    return not explicitly and any(p.kind is p.VAR_KEYWORD for p in params.values())


def _call_builder(builder: Callable[..., nn.Module], kwargs: dict[str, Any]) -> nn.Module:
    try:
        module = builder(**kwargs)
    except TypeError as exc:
        raise ModelNotFoundError(f"cannot build {getattr(builder, '__name__', builder)} with "
                                 f"{kwargs}: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise ModelNotFoundError(f"{getattr(builder, '__name__', builder)} returned a "
                                 f"{type(module).__name__}, not an nn.Module")
    return module
