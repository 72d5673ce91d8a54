"""Build a model by name and load its weights: the seed's "模型载入" step as one call.

    model = models.mobilenet_v2(num_classes=1000)
    model.load_state_dict(torch.load(path, map_location="cpu"), strict=True)

becomes ``load_model("mobilenet_v2", "path.pth")``, which also reads checkpoints, safetensors
and TorchScript, infers ``num_classes`` from the head, and brings the labels and preprocessing
that belong to the weights. What a name means is the model sources' to say
(``models.sources``): torchvision, timm and Hugging Face folders, files, registered names...
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import TorchinferError
from .building import Trust, finish, load_into_module
from .loaded import LoadedModel
from .sources.base import SourceRequest
from .sources.registry import find_source


def load_model(model: str | Path | nn.Module, weights: str | Path | None = None, *,
               num_classes: int | None = None, strict: bool = True, trust_pickle: bool = False,
               trust_code: bool = False, **model_kwargs: Any) -> LoadedModel:
    """Build ``model`` and load ``weights`` into it, returning it in eval mode on the CPU.

    model: a torchvision name (``mobilenet_v2``), a timm name (``timm:resnet18``), a folder
        saved by timm or transformers (or its hub id, ``timm/NAME``, ``hf-hub:ORG/NAME`` or
        ``ORG/NAME``, found in the local hub cache), a factory path (``pkg.module:factory``,
        called with ``model_kwargs``), a file holding a whole model (TorchScript, ONNX run by
        ONNX Runtime, or a pickled ``nn.Module`` with ``trust_pickle=True``), an
        ``nn.Module``, or anything a source plugin recognises.
    weights: a local file (state dict, checkpoint dict, ``.safetensors``, TorchScript) or, for
        torchvision models, ``"DEFAULT"`` / a weights name such as
        ``"MobileNet_V2_Weights.IMAGENET1K_V1"``. None keeps the random initialisation.
    num_classes: the output size; inferred from the checkpoint's head when not given.
    strict: every key must match (the default). Shape mismatches are refused either way.
    trust_pickle: allow files that hold pickled Python objects (they can run code).
    trust_code: allow a file's metadata to name an architecture that is neither torchvision's
        nor registered (``register_model``), or a Hugging Face config's ``auto_map``: building
        it imports and calls code the file chose. A factory path given here as ``model`` is the
        caller's own choice and needs no opt-in.
    """
    trust = Trust(pickle=trust_pickle, code=trust_code)
    if isinstance(model, nn.Module):
        return finish(load_into_module(model, weights, strict, trust),
                      type(model).__name__, None, weights)
    spec = str(model)
    source = find_source(spec)
    source.check_installed()
    loaded = source.load(spec, SourceRequest(weights=weights, num_classes=num_classes,
                                             strict=strict, trust=trust,
                                             model_kwargs=dict(model_kwargs)))
    return loaded if loaded.source is not None else replace(loaded, source=source.name)


def model_task(model: str | Path) -> str | None:
    """The task a model's name or files say (torchvision's names, registered models, a file's
    card, a timm or transformers config), without building it; None when they don't say."""
    try:
        source = find_source(str(model))
    except TorchinferError:
        return None  # its own error comes when it is loaded
    return source.task(str(model))


def holds_weights(model: str | Path) -> bool:
    """Whether ``model`` brings its own weights (a file, a saved folder, a bundled name)."""
    try:
        return find_source(str(model)).holds_weights(str(model))
    except TorchinferError:
        return False


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


