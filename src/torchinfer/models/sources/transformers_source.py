"""Hugging Face ``transformers`` vision models: a folder from ``save_pretrained`` (or its hub id
in the local cache), with ``config.json``, ``model.safetensors`` and
``preprocessor_config.json``.

The task comes from the config's ``architectures`` class (``*ForImageClassification``,
``*ForObjectDetection``, ``*ForSemanticSegmentation``, ``*ForDepthEstimation``, and a base
``*Model`` for embeddings), which must be one of transformers' own
classes for that task (its auto mappings): a config names a model, and only ``--trust-code``
lets its ``auto_map`` import code from the folder. The preprocessing is the folder's image
processor's (``transformers_recipe``), the labels its ``id2label``, and the module is wrapped
to return plain tensors (``transformers_modules``), so every runtime and export reads it.
"""

from __future__ import annotations

from typing import Any

import torch

from ...errors import ModelNotFoundError, WeightsError, WeightsMismatchError
from ..building import Built, finish
from ..loaded import LoadedModel
from .base import ModelSource, SourceRequest
from .hub_files import (
    HubFolder,
    config_kind,
    labels_by_index,
    local_folder,
    read_json,
    refuse_remote_code,
    weights_file,
)

# the architectures class's suffix -> torchinfer task, transformers' mapping for it, and its
# auto class (for a folder's own classes, with --trust-code)
TASK_SUFFIXES = {
    "ForImageClassification": ("classify", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
                               "AutoModelForImageClassification"),
    "ForObjectDetection": ("detect", "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES",
                           "AutoModelForObjectDetection"),
    "ForSemanticSegmentation": ("segment", "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES",
                                "AutoModelForSemanticSegmentation"),
    "ForDepthEstimation": ("depth", "MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES",
                           "AutoModelForDepthEstimation"),
    # a base model (ViTModel, Dinov2Model...): its pooled output is the image's vector
    "Model": ("embed", "MODEL_MAPPING_NAMES", "AutoModel"),
}
# image sizes a config may give (ViT's image_size...): as the recipe's own bound
MAX_IMAGE_SIDE = 8192


class TransformersSource(ModelSource):
    name = "transformers"
    requires = ("transformers", "hf")

    def recognises(self, spec: str) -> bool:
        # every model folder timm does not claim: one whose config cannot be read or names
        # no architecture is then refused by what is wrong with it
        folder = local_folder(spec)
        return folder is not None and config_kind(folder) != "timm"

    def task(self, spec: str) -> str | None:
        folder = local_folder(spec)
        if folder is None:
            return None
        try:
            return _task_of(_architecture(read_json(folder.path / "config.json", "config"),
                                          folder))[0]
        except (WeightsError, ModelNotFoundError):
            return None  # its own error comes when it is loaded

    def holds_weights(self, spec: str) -> bool:
        return True

    def load(self, spec: str, request: SourceRequest) -> LoadedModel:
        folder = local_folder(spec)
        assert folder is not None  # recognised
        if request.weights is not None:
            raise WeightsError(f"{folder.path} holds its own weights (got {request.weights})")
        return load_folder(folder, request)


def _architecture(config: dict[str, Any], folder: HubFolder) -> str:
    names = config.get("architectures")
    if not isinstance(names, list) or not names or not isinstance(names[0], str):
        raise ModelNotFoundError(f"{folder.path / 'config.json'} names no architectures class "
                                 "(e.g. ViTForImageClassification)")
    return names[0]


def _task_of(architecture: str) -> tuple[str, str, str]:
    """(torchinfer task, transformers' mapping of its models, its auto class)."""
    for suffix, found in TASK_SUFFIXES.items():
        if architecture.endswith(suffix):
            return found
    kinds = ", ".join(f"*{s}" for s in TASK_SUFFIXES)
    raise ModelNotFoundError(f"{architecture} is not a model torchinfer runs from transformers "
                             f"yet ({kinds} are)")


def load_folder(folder: HubFolder, request: SourceRequest) -> LoadedModel:
    """Check the folder's files, build the model from its safetensors, and wrap it."""
    from .transformers_modules import wrap
    from .transformers_recipe import recipe_of

    config_path = folder.path / "config.json"
    config = read_json(config_path, "config")
    processor_path = folder.path / "preprocessor_config.json"
    if not processor_path.is_file():
        raise WeightsError(f"{folder.path} has no preprocessor_config.json: the model's "
                           "preprocessing is unknown, and a guessed one gives wrong answers")
    processor_config = read_json(processor_path, "image processor config")
    refuse_remote_code(folder, {"config.json": config,
                                "preprocessor_config.json": processor_config},
                       request.trust.code)
    architecture = _architecture(config, folder)
    task = _task_of(architecture)[0]
    labels = labels_by_index(config.get("id2label"), config_path)
    _check_sizes(config, config_path)
    weights = weights_file(folder, request.trust.pickle)
    model = _build(folder, architecture, weights, request)
    processor = _processor(folder, request.trust.code)
    built = Built(wrap(model, task, processor), preprocess=recipe_of(processor, task, processor_path),
                  labels=labels)
    loaded = finish(built, folder.label, task, str(weights))
    loaded.revision = folder.revision
    return loaded


def _check_sizes(config: dict[str, Any], where: Any) -> None:
    """Image sizes a config asks the model to be built for, bounded before anything is built
    (the model's memory is then checked against the file: ``_check_against_file``)."""
    for key in ("image_size", "num_labels"):
        value = config.get(key)
        values = value if isinstance(value, list) else [value]
        for v in values:
            if v is not None and (not isinstance(v, int) or not 0 < v <= 100_000):
                raise WeightsError(f"{where}: {key} {value!r} is out of bounds")
    side = config.get("image_size")
    sides = side if isinstance(side, list) else [side]
    if any(isinstance(s, int) and s > MAX_IMAGE_SIDE for s in sides):
        raise WeightsError(f"{where}: image_size {side} is beyond {MAX_IMAGE_SIDE} pixels")


def _model_class(architecture: str, folder: HubFolder) -> Any:
    import transformers
    from transformers.models.auto import modeling_auto

    mapping_name = _task_of(architecture)[1]
    known = set(getattr(modeling_auto, mapping_name).values())
    if architecture in known:
        return getattr(transformers, architecture)
    raise ModelNotFoundError(f"{folder.path / 'config.json'} names {architecture}, which is not "
                             f"one of transformers' {mapping_name.split('_MAPPING')[0].lower()} "
                             "models")


def _build(folder: HubFolder, architecture: str, weights: Any,
           request: SourceRequest) -> torch.nn.Module:
    """The model from the folder's weights, strictly: a key missing or left over is refused
    (``strict=False`` lets them through), as for every other file here."""
    import transformers

    trust_code = request.trust.code
    auto_map = "auto_map" in read_json(folder.path / "config.json", "config")
    config = transformers.AutoConfig.from_pretrained(str(folder.path), local_files_only=True,
                                                     trust_remote_code=trust_code)
    _no_pretrained_backbone(config)
    if auto_map:  # allowed by --trust-code: the folder's own classes
        cls: Any = getattr(transformers, _task_of(architecture)[2])
    else:
        cls = _model_class(architecture, folder)
        _check_against_file(cls, config, weights, folder)
    model, info = cls.from_pretrained(
        str(folder.path), config=config, local_files_only=True, trust_remote_code=trust_code,
        use_safetensors=weights.suffix != ".bin", output_loading_info=True)
    problems = {k: list(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys",
                                                             "mismatched_keys") and v}
    if problems and request.strict:
        detail = "; ".join(f"{k.replace('_', ' ')}: {', '.join(map(str, v[:5]))}"
                           f"{'...' if len(v) > 5 else ''}" for k, v in problems.items())
        raise WeightsMismatchError(f"{weights} does not fit {architecture} ({detail}); "
                                   "strict=False (--no-strict) loads it anyway")
    return model.eval()


def _no_pretrained_backbone(config: Any) -> None:
    """DETR-style configs ask for an ImageNet backbone to be downloaded at build time
    (``use_pretrained_backbone``); the folder's weights replace it, so it is never fetched."""
    for cfg in (config, getattr(config, "backbone_config", None)):
        if cfg is not None and getattr(cfg, "use_pretrained_backbone", False):
            cfg.use_pretrained_backbone = False
    kwargs = getattr(config, "backbone_kwargs", None)
    if isinstance(kwargs, dict) and kwargs.get("pretrained"):
        kwargs["pretrained"] = False


# How far the model a config describes may outgrow the weights file (elements), beyond
# twice the file: buffers and heads the file leaves out are fine, a config that asks for a
# thousand times the file's parameters is a memory bomb refused before allocating it.
_SIZE_SLACK = 1_000_000


def _check_against_file(cls: Any, config: Any, weights: Any, folder: HubFolder) -> None:
    """Build on the meta device (no memory) and compare with the tensors the file holds."""
    if weights.suffix != ".safetensors":
        return  # a sharded index or a trusted pickle: sized by transformers as it loads
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        held = 0
        for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
            n = 1
            for d in f.get_slice(key).get_shape():
                n *= int(d)
            held += n
    with torch.device("meta"):
        probe = cls(config)
    wanted = sum(p.numel() for p in probe.parameters())
    if wanted > 2 * held + _SIZE_SLACK:
        raise WeightsError(f"{folder.path / 'config.json'} describes a model of {wanted:,} "
                           f"parameters, but {weights.name} holds {held:,}: refused before "
                           "allocating it")


def _processor(folder: HubFolder, trust_code: bool) -> Any:
    import transformers

    return transformers.AutoImageProcessor.from_pretrained(
        str(folder.path), local_files_only=True, trust_remote_code=trust_code)
