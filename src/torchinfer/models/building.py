"""Building a module and loading weights into it: what the model sources share.

A source (``models.sources``) says what a ``-m`` value is; these functions do the building:
call a builder with the arguments that fit the checkpoint's head, load a weights file safely,
size a model a file describes before allocating it, and hand the result on as a
``LoadedModel``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelNotFoundError, WeightsError
from .config import PreprocessConfig
from .loaded import LoadedModel
from .registry import registered_model, resolve_architecture
from .weights import (
    KeyReport,
    WeightsFile,
    compare_keys,
    head_class_counts,
    load_into,
    read_weights,
    strip_common_prefixes,
)


@dataclass(frozen=True)
class Trust:
    """What the caller allowed files to do: unpickle objects, name code to import."""

    pickle: bool = False
    code: bool = False


@dataclass
class Built:
    module: nn.Module
    weights_file: WeightsFile | None = None
    key_report: KeyReport | None = None
    preprocess: PreprocessConfig | None = None
    labels: list[str] | None = None
    num_classes: int | None = None  # given or inferred; None means the builder's default


def build_fitting(builder: Callable[..., nn.Module], kwargs: dict[str, Any],
                   num_classes: int | None, weights: str | Path | None, strict: bool,
                   trust: Trust, weights_file: WeightsFile | None = None) -> Built:
    """Build with ``kwargs``; when weights are given and ``num_classes`` is not, read it off the
    checkpoint's output layer and rebuild if the default head has another size."""
    if num_classes is not None:
        kwargs = {**kwargs, "num_classes": num_classes}
    module = call_builder(builder, kwargs)
    if weights is None:
        return Built(module, num_classes=num_classes)
    wf = weights_file or read_weights(weights, trust_pickle=trust.pickle)
    state_dict = wf.tensors()
    if num_classes is None and accepts(builder, "num_classes"):
        report = compare_keys(strip_common_prefixes(state_dict, set(module.state_dict())), module)
        heads = head_class_counts(report)
        if heads:
            num_classes = next(iter(heads))
            module = call_builder(builder, {**kwargs, "num_classes": num_classes})
    key_report = load_into(module, state_dict, strict=strict, source=f"weights {weights}")
    return Built(module, wf, key_report, *config_from_card(wf), num_classes=num_classes)


def load_into_module(module: nn.Module, weights: str | Path | None, strict: bool,
                           trust: Trust) -> Built:
    if weights is None:
        return Built(module)
    wf = read_weights(weights, trust_pickle=trust.pickle)
    report = load_into(module, wf.tensors(), strict=strict, source=f"weights {weights}")
    return Built(module, wf, report, *config_from_card(wf))


def load_whole_model_file(path: Path, trust: Trust, num_classes: int | None = None,
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
        if accepts(factory, "weights_backbone", explicitly=True):
            # segmentation/detection builders download a backbone by default: a file's
            # weights are loaded, never downloaded ones
            kwargs = {"weights_backbone": None, **kwargs}
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        # a torchvision builder is sized first or not built: the file chose its arguments; a
        # registered factory or one trusted by the caller is the caller's own code
        must_size = registered_model(card.architecture) is None and not trust.code
        check_size_on_meta(factory, kwargs, wf, path, required=must_size)
        built = build_fitting(factory, kwargs, num_classes, path, strict, trust, wf)
        return finish(built, path.stem, card.task, str(path))
    if wf.module is None:
        raise WeightsError(f"{path} holds only weights (a state dict), not an architecture: "
                           f"name the architecture, e.g. --model mobilenet_v2 --weights {path}")
    built = Built(wf.module, wf, None, *config_from_card(wf))
    return finish(built, card.model_name or path.name, card.task, str(path))


# How far a model built from a file's metadata may outgrow the tensors the file holds (in
# elements), beyond this slack: a head or buffer the checkpoint leaves out is fine, a model a
# thousand times the file's size is a memory bomb.
META_SIZE_SLACK = 1_000_000


def check_size_on_meta(factory: Callable[..., nn.Module], kwargs: dict[str, Any],
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
    if wanted > 2 * held + META_SIZE_SLACK:
        raise WeightsError(f"{path}: its metadata describes a model of {wanted:,} elements, but "
                           f"the file holds {held:,}: refused before allocating it")


def finish(built: Built, name: str, task: str | None, weights: str | Path | None) -> LoadedModel:
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


def config_from_card(wf: WeightsFile) -> tuple[PreprocessConfig | None, list[str] | None]:
    """The preprocessing and labels the file's card carries (None where it says nothing)."""
    card = wf.card
    return card.preprocess, list(card.labels) if card.labels is not None else None


def accepts(fn: Callable[..., Any], param: str, *, explicitly: bool = False) -> bool:
    """Whether ``fn`` takes keyword ``param`` (by name, or through ``**kwargs`` unless
    ``explicitly``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    if param in params:
        return True
    return not explicitly and any(p.kind is p.VAR_KEYWORD for p in params.values())


def call_builder(builder: Callable[..., nn.Module], kwargs: dict[str, Any]) -> nn.Module:
    try:
        module = builder(**kwargs)
    except TypeError as exc:
        raise ModelNotFoundError(f"cannot build {getattr(builder, '__name__', builder)} with "
                                 f"{kwargs}: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise ModelNotFoundError(f"{getattr(builder, '__name__', builder)} returned a "
                                 f"{type(module).__name__}, not an nn.Module")
    return module
