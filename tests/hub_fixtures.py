"""Hub-shaped model folders with random but picture-dependent weights, for offline tests.

The loader reads models the way people publish them: a ``timm/NAME`` repository
(``config.json`` with ``architecture`` and ``pretrained_cfg`` + ``model.safetensors``), a
transformers folder (``config.json`` with ``architectures``/``model_type``/``id2label``,
``model.safetensors``, ``preprocessor_config.json``), or either of them inside the Hugging Face
hub cache (``models--ORG--NAME/{blobs,snapshots,refs}``). Tests cannot download, so this module
*writes* such folders with timm's and transformers' own saving code, and the tests compare the
loader's answers with timm's and transformers' answers on the same files.

Random weights alone would make those comparisons meaningless: a freshly initialised network
gives tiny logits and a near-uniform softmax, so a channel swap, a wrong resize or a wrong
normalisation still "matches". Every fixture is therefore *calibrated* on real photographs:

* BatchNorm running statistics become the exact statistics of crops of photographs,
  preprocessed the way the saved preprocessing config says (so every layer sees normalised,
  picture-dependent activations). Frozen BatchNorms (DETR/RT-DETR backbones) are measured too.
* The output layers are rescaled so that on those crops every class logit has mean 0 (no
  class wins every picture) and the logits spread until the mean top-1 probability is 0.6
  (single photographs then give roughly 0.3-0.9). Detectors also get queries and box heads
  that move with the picture, and a score bias chosen so that about four detections per
  picture pass 0.5 (thresholds of 0.3-0.5 keep a few boxes).

Everything is seeded: the same call writes the same bytes (up to library versions).

Typical use in a test::

    from hub_fixtures import photos, put_in_hub_cache, save_hf_folder, save_timm_folder

    folder = save_timm_folder(tmp_path / "resnet", "resnet10t", pretrained_cfg_overrides={
        "crop_pct": 0.95, "interpolation": "bicubic"})
    snapshot = put_in_hub_cache(tmp_path / "hub", "timm/resnet10t.test", folder)
    images = photos(tmp_path / "photos")

Heavy libraries (timm, transformers) are imported inside the functions, so importing this
module is cheap and a test can ``pytest.importorskip`` what it needs.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from torchinfer.testing import load_photographs

__all__ = [
    "CALIBRATION_PHOTOS", "HF_KINDS", "LABEL_WORDS", "label_names", "photos",
    "put_in_hub_cache", "save_hf_folder", "save_timm_folder",
]

# scikit-image's photographs used to measure statistics (shipped in its wheel, no download);
# without scikit-image, torchinfer's four bundled JPEGs are used instead.
CALIBRATION_PHOTOS = ("chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg",
                      "motorcycle_left.png")

# Readable class names, so that a test failure says "cat" instead of "LABEL_3".
LABEL_WORDS = ("cat", "dog", "person", "rocket", "cup", "car", "bicycle", "bird", "tree", "sky",
               "boat", "horse", "flower", "chair", "bottle", "clock", "bus", "train", "road",
               "building", "grass", "water", "book", "laptop")


def label_names(n: int) -> list[str]:
    """``n`` distinct readable class names (``class_24`` ... past the word list)."""
    return [LABEL_WORDS[i] if i < len(LABEL_WORDS) else f"class_{i}" for i in range(n)]


# --------------------------------------------------------------------------------------------
# Photographs as files
# --------------------------------------------------------------------------------------------

# (file written, source photograph, crop box as fractions (left, top, right, bottom), size or
# None). Sizes and aspect ratios differ on purpose: a resize/crop rule that is wrong only for
# non-square, portrait or very wide pictures must show up. Formats: JPEG and PNG.
_PHOTO_FILES = (
    ("chelsea.jpg", "chelsea", (0.0, 0.0, 1.0, 1.0), None),               # 451x300 landscape
    ("astronaut.png", "astronaut", (0.0, 0.0, 1.0, 1.0), (384, 384)),     # square
    ("rocket_portrait.jpg", "rocket", (0.28, 0.0, 0.72, 1.0), None),      # 282x427 portrait
    ("coffee.png", "coffee", (0.0, 0.0, 1.0, 1.0), None),                 # 600x400 landscape
    ("motorcycle_wide.jpg", "motorcycle_left", (0.0, 0.2, 1.0, 0.75), None),  # 741x275 wide
)


def photos(folder: str | os.PathLike) -> list[Path]:
    """Write a few real photographs into ``folder`` and return their paths (sorted as listed).

    Landscape (chelsea.jpg 451x300, coffee.png 600x400), square (astronaut.png 384x384),
    portrait (rocket_portrait.jpg 282x427) and wide (motorcycle_wide.jpg 741x275), as JPEG
    (quality 92) and PNG. Without scikit-image only the photographs torchinfer bundles are
    available (chelsea, astronaut, coffee, rocket), so the wide one is left out.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sources = {Path(name).stem: img for name, img in load_photographs().items()}
    paths = []
    for out_name, stem, (left, top, right, bottom), size in _PHOTO_FILES:
        if stem not in sources:
            continue
        img = sources[stem]
        w, h = img.size
        img = img.crop((round(left * w), round(top * h), round(right * w), round(bottom * h)))
        if size is not None:
            img = img.resize(size, Image.Resampling.BICUBIC)
        path = folder / out_name
        if path.suffix == ".jpg":
            img.save(path, quality=92)
        else:
            img.save(path)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------

def _calibration_images() -> list[Image.Image]:
    return list(load_photographs(CALIBRATION_PHOTOS).values())


def _calibration_batch(size: tuple[int, int], mean: Sequence[float] | None,
                       std: Sequence[float] | None, *, crops_per_photo: int = 4,
                       seed: int = 0) -> torch.Tensor:
    """Random crops of the photographs, resized to ``size`` (h, w), scaled to [0, 1] and
    normalised with ``mean``/``std`` (none when the model's preprocessing does not normalise,
    as RT-DETR's). Crops rather than whole photographs: more varied statistics."""
    from torchvision.transforms import v2

    torch.manual_seed(seed)  # v2's random transforms draw from the global generator
    steps = [v2.PILToTensor(), v2.RandomResizedCrop(size, scale=(0.25, 1.0), antialias=True),
             v2.ToDtype(torch.float32, scale=True)]
    if mean is not None:
        steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    crop = v2.Compose(steps)
    return torch.stack([crop(img) for img in _calibration_images() for _ in range(crops_per_photo)])


def _thaw_frozen_batch_norms(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module, nn.BatchNorm2d]]:
    """Swap transformers' ``*FrozenBatchNorm2d`` (plain buffers, never updated) for real
    BatchNorm2d layers so that their statistics can be measured like the others."""
    found = [(parent, name, child) for parent in model.modules()
             for name, child in parent.named_children()
             if type(child).__name__.endswith("FrozenBatchNorm2d")]
    swapped = []
    for parent, name, frozen in found:
        bn = nn.BatchNorm2d(frozen.weight.numel(), eps=1e-5)  # their forward uses eps=1e-5
        with torch.no_grad():
            bn.weight.copy_(frozen.weight)
            bn.bias.copy_(frozen.bias)
        parent._modules[name] = bn
        swapped.append((parent, name, frozen, bn))
    return swapped


@torch.no_grad()
def _measure_batch_norms(model: nn.Module, run: Callable[[], Any]) -> None:
    """BatchNorm running statistics := the statistics of what ``run()`` feeds the model.

    Only the BatchNorm layers are put in train mode (``momentum=None``: a cumulative average,
    so the result does not depend on a momentum); dropout and detector training branches stay
    off. ``run`` makes one forward pass over the whole calibration batch, so each layer is
    normalised during measurement with exactly the statistics it keeps. BatchNorm scales that
    were initialised to ~0 (timm's zero-init last BN of residual blocks, transformers'
    N(0, 0.02) for RT-DETR) are set to 1 so that every branch contributes to the answer.
    """
    swapped = _thaw_frozen_batch_norms(model)
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:  # LayerNorm-only models (ViT, ConvNeXt): nothing to measure
        return
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        if bn.affine and float(bn.weight.abs().max()) < 0.1:
            bn.weight.fill_(1.0)
        bn.train()
    try:
        run()
    finally:
        model.eval()
        for parent, name, frozen, bn in swapped:
            frozen.weight.copy_(bn.weight)
            frozen.bias.copy_(bn.bias)
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
            parent._modules[name] = frozen


@torch.no_grad()
def _layer_inputs(model_run: Callable[[], Any], layer: nn.Module) -> torch.Tensor:
    """What ``layer`` (a Linear or Conv2d) receives during ``model_run()``, as rows of
    features (N, in_features): every call, every position (a larger kernel's patches, as
    ``weight.view(out, -1)`` reads them; at most 65,536 of them, evenly spaced)."""
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    try:
        model_run()
    finally:
        handle.remove()
    if isinstance(layer, nn.Conv2d) and layer.kernel_size != (1, 1):
        rows = torch.cat([nn.functional.unfold(x, layer.kernel_size, layer.dilation,
                                               layer.padding, layer.stride).movedim(1, -1)
                          .reshape(-1, layer.weight[0].numel()) for x in seen])
        return rows[::max(1, len(rows) // 65_536)]
    if isinstance(layer, nn.Conv2d):
        return torch.cat([x.movedim(1, -1).reshape(-1, layer.in_channels) for x in seen])
    return torch.cat([x.reshape(-1, layer.in_features) for x in seen])


@torch.no_grad()
def _standardise_outputs(layer: nn.Module, x: torch.Tensor, mean: float | Sequence[float],
                         std: float | Sequence[float], *, seed: int = 0) -> torch.Tensor:
    """Rescale ``layer`` (Linear or Conv2d with bias) in place so that on the inputs ``x``
    every output has the given mean and standard deviation; returns the new outputs.

    The direction of each output's weights is kept (it is what makes outputs differ between
    pictures); only its length and the bias change. A zero-initialised layer (transformers
    zero-inits RT-DETR's box refinements) first gets random weights, or it could not move.
    """
    out_features = layer.weight.shape[0]
    weight = layer.weight.view(out_features, -1)
    if float(weight.abs().max()) == 0.0:
        generator = torch.Generator().manual_seed(seed)
        weight.copy_(torch.randn(weight.shape, generator=generator) / math.sqrt(weight.shape[1]))
    out = x @ weight.T + layer.bias
    mu, sd = out.mean(0), out.std(0).clamp_min(1e-6)
    target_mean = torch.as_tensor(mean, dtype=out.dtype).expand(out_features)
    scale = torch.as_tensor(std, dtype=out.dtype).expand(out_features) / sd
    weight.mul_(scale[:, None])
    layer.bias.copy_((layer.bias - mu) * scale + target_mean)
    return x @ weight.T + layer.bias


# Mean top-1 softmax probability that classifier and segmenter heads are scaled to on the
# calibration crops: individual photographs then land around 0.3-0.9, whatever the number of
# classes (a fixed logit spread would give 10 classes and 150 classes very different softmaxes).
_TOP1_PROBABILITY = 0.6


@torch.no_grad()
def _calibrate_softmax_head(layer: nn.Module, x: torch.Tensor, *,
                            top1: float = _TOP1_PROBABILITY, seed: int = 0) -> None:
    """Centre every class logit of ``layer`` on the inputs ``x`` (so no class wins every
    picture), then scale all logits together until the mean top-1 softmax probability over
    ``x``'s rows is ``top1`` (bisection on the scale; the mean top-1 rises with it)."""
    logits = _standardise_outputs(layer, x, 0.0, 1.0, seed=seed)
    logits = logits[:: max(1, len(logits) // 8192)]  # segmenters: every pixel is a row

    def confidence(scale: float) -> float:
        return float((logits * scale).softmax(-1).max(-1).values.mean())

    lo, hi = 0.0, 100.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if confidence(mid) < top1 else (lo, mid)
    layer.weight.mul_((lo + hi) / 2)
    layer.bias.mul_((lo + hi) / 2)


# --------------------------------------------------------------------------------------------
# timm
# --------------------------------------------------------------------------------------------

def save_timm_folder(folder: str | os.PathLike, architecture: str, *, num_classes: int = 10,
                     label_names: Sequence[str] | None = None,
                     pretrained_cfg_overrides: dict[str, Any] | None = None, seed: int = 0,
                     safe_serialization: bool | str = True) -> Path:
    """Build timm's ``architecture`` with calibrated random weights and save it as a
    ``timm/NAME`` hub repository holds it, with timm's own ``save_for_hf``: ``config.json``
    (``architecture``, ``num_classes``, ``num_features``, ``global_pool``, ``label_names`` when
    given, ``model_args``, ``pretrained_cfg``) and ``model.safetensors`` (``safe_serialization=
    "both"`` adds ``pytorch_model.bin``, as ``push_to_hf_hub`` does).

    ``pretrained_cfg_overrides`` changes the preprocessing recorded in ``pretrained_cfg``
    (``input_size``, ``interpolation``, ``crop_pct``, ``crop_mode``, ``mean``, ``std``, ...).
    They are applied both as timm's ``pretrained_cfg_overlay`` when building (so
    ``timm.data.resolve_data_config({}, model=model)`` sees them) and as the export's
    ``data_config`` (timm then drops the architecture's own ``test_input_size`` /
    ``test_crop_pct`` for what was overridden). An ``input_size`` override of a fixed-size model
    (ViT) builds the model at that size (``img_size``). The calibration crops are preprocessed
    with the resulting mean/std and size.

    Without overrides the config keeps what timm's default pretrained tag records (all
    bicubic, crop_mode "center"): resnet10t 176 (``test_input_size`` 224), crop_pct 0.875
    (``test_crop_pct`` 0.95), ImageNet mean/std; vit_tiny_patch16_224 224 (fixed size),
    crop_pct 0.9, mean/std 0.5; convnext_atto 224 (test 288), crop_pct 0.875 (test 0.95);
    efficientnet_b0 224, crop_pct 0.875. timm itself uses ``input_size``/``crop_pct`` unless
    asked for the test size (``resolve_data_config(..., use_test_size=True)``).
    """
    import timm
    from timm.models import save_for_hf

    folder = Path(folder)
    overrides = {k: (tuple(v) if isinstance(v, list) else v)
                 for k, v in (pretrained_cfg_overrides or {}).items()}
    if label_names is not None and len(label_names) != num_classes:
        raise ValueError(f"{len(label_names)} label names for {num_classes} classes")
    kwargs: dict[str, Any] = {}
    if "input_size" in overrides:
        default_cfg = timm.models.get_pretrained_cfg(architecture)
        if default_cfg is not None and default_cfg.fixed_input_size:
            kwargs["img_size"] = tuple(overrides["input_size"][-2:])
    torch.manual_seed(seed)
    model = timm.create_model(architecture, pretrained=False, num_classes=num_classes,
                              pretrained_cfg_overlay=overrides or None, **kwargs)
    data_cfg = timm.data.resolve_data_config({}, model=model)
    batch = _calibration_batch(tuple(data_cfg["input_size"][-2:]), data_cfg["mean"],
                               data_cfg["std"], seed=seed)
    _measure_batch_norms(model, lambda: model(batch))
    head = model.get_classifier() if num_classes else None
    if isinstance(head, (nn.Linear, nn.Conv2d)) and head.bias is not None:
        _calibrate_softmax_head(head, _layer_inputs(lambda: model(batch), head), seed=seed)
    model.eval()
    model_config = {"label_names": list(label_names)} if label_names is not None else None
    save_for_hf(model, folder, model_config=model_config, safe_serialization=safe_serialization,
                data_config=overrides or None)
    return folder


# --------------------------------------------------------------------------------------------
# transformers
# --------------------------------------------------------------------------------------------

HF_KINDS = ("vit", "convnext", "detr", "rt_detr", "segformer", "upernet", "dpt",
            "depth_anything", "glpn", "vit_model")
_DEFAULT_NUM_LABELS = {"vit": 10, "convnext": 10, "detr": 6, "rt_detr": 6, "segformer": 8,
                       "dpt": 2, "depth_anything": 2, "glpn": 2, "vit_model": 2,
                       "upernet": 8}
_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]
_DETECTION_LOGIT_STD = 2.0
# Detections per picture scoring above 0.5 on the calibration crops, on average (photographs
# then give roughly 0-6 above 0.5 and a few more above 0.3).
_BOXES_ABOVE_HALF = 4


def _tiny_resnet(config_class, out_features: list[str]):
    """A four-stage ResNet of basic blocks with 16-128 channels: real code paths, tiny cost."""
    return config_class(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                        layer_type="basic", out_features=out_features)


def _build_vit(id2label):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor
    from transformers.image_utils import PILImageResampling

    config = ViTConfig(image_size=224, patch_size=16, hidden_size=64, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=128, id2label=id2label)
    # As google/vit-base-patch16-224: squash to 224x224, bilinear, mean = std = 0.5.
    processor = ViTImageProcessor(size={"height": 224, "width": 224},
                                  resample=PILImageResampling.BILINEAR,
                                  image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return ViTForImageClassification(config), processor


def _build_vit_model(id2label):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel
    from transformers.image_utils import PILImageResampling

    # A base model with its pooler (as google/vit-base-patch16-224-in21k): what
    # pipeline("image-feature-extraction", pool=True) reads
    config = ViTConfig(image_size=224, patch_size=16, hidden_size=64, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=128)
    processor = ViTImageProcessor(size={"height": 224, "width": 224},
                                  resample=PILImageResampling.BILINEAR,
                                  image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return ViTModel(config, add_pooling_layer=True), processor


def _build_convnext(id2label):
    from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor
    from transformers.image_utils import PILImageResampling

    config = ConvNextConfig(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], id2label=id2label)
    # As facebook/convnext-tiny-224: shortest edge 224/crop_pct = 256, centre crop 224, bicubic.
    processor = ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875,
                                       resample=PILImageResampling.BICUBIC,
                                       image_mean=_IMAGENET_MEAN, image_std=_IMAGENET_STD)
    return ConvNextForImageClassification(config), processor


def _build_detr(id2label):
    from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor, ResNetConfig

    # An explicit transformers ResNet backbone config: DETR's default (timm resnet50) would be
    # big, and nothing here may try to fetch pretrained backbone weights.
    config = DetrConfig(backbone_config=_tiny_resnet(ResNetConfig, ["stage4"]), d_model=64,
                        encoder_layers=1, decoder_layers=1, encoder_ffn_dim=128,
                        decoder_ffn_dim=128, encoder_attention_heads=2, decoder_attention_heads=2,
                        num_queries=20, id2label=id2label)
    # The kind of size DETR uses (facebook/detr-resnet-50: shortest 800, longest 1333), smaller.
    processor = DetrImageProcessor(size={"shortest_edge": 320, "longest_edge": 512})
    return DetrForObjectDetection(config), processor


def _build_rt_detr(id2label):
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrImageProcessor, RTDetrResNetConfig

    backbone = _tiny_resnet(RTDetrResNetConfig, ["stage2", "stage3", "stage4"])
    config = RTDetrConfig(backbone_config=backbone, encoder_in_channels=[32, 64, 128],
                          encoder_hidden_dim=64, encoder_ffn_dim=128, encoder_attention_heads=2,
                          d_model=64, decoder_in_channels=[64, 64, 64], decoder_ffn_dim=128,
                          decoder_attention_heads=2, decoder_layers=1, num_queries=30,
                          num_denoising=0, id2label=id2label)
    # As PekingU/rtdetr_r50vd (640x640 squash, bilinear, rescale only: no mean/std), smaller.
    processor = RTDetrImageProcessor(size={"height": 320, "width": 320})
    return RTDetrForObjectDetection(config), processor


def _build_segformer(id2label):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    config = SegformerConfig(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 64, 128],
                             num_attention_heads=[1, 1, 2, 2], decoder_hidden_size=64,
                             id2label=id2label)
    # As nvidia/segformer-b0-finetuned-ade-512-512 (squash, bilinear, ImageNet mean/std,
    # do_reduce_labels, which only concerns training maps), at 256x256.
    processor = SegformerImageProcessor(size={"height": 256, "width": 256}, do_reduce_labels=True)
    return SegformerForSemanticSegmentation(config), processor


def _build_upernet(id2label):
    from transformers import ConvNextConfig, SegformerImageProcessor, UperNetConfig, UperNetForSemanticSegmentation

    backbone = ConvNextConfig(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                              out_features=["stage1", "stage2", "stage3", "stage4"])
    config = UperNetConfig(backbone_config=backbone, hidden_size=32, auxiliary_in_channels=64,
                           auxiliary_channels=16, id2label=id2label)
    # openmmlab/upernet-* repos ship a SegformerImageProcessor (512x512 there).
    processor = SegformerImageProcessor(size={"height": 256, "width": 256})
    return UperNetForSemanticSegmentation(config), processor


def _build_dpt(id2label):
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                       intermediate_size=64, image_size=384, patch_size=16,
                       backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[16, 32, 64, 64],
                       fusion_hidden_size=32)
    # As Intel/dpt-large: 384x384 squash, bicubic, mean/std 0.5 (a plain ViT DPT reads square
    # inputs only)
    processor = DPTImageProcessor(size={"height": 384, "width": 384}, keep_aspect_ratio=False,
                                  ensure_multiple_of=1, resample=3, image_mean=[0.5] * 3,
                                  image_std=[0.5] * 3)
    return DPTForDepthEstimation(config), processor


def _build_depth_anything(id2label):
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                            intermediate_size=64, image_size=140, patch_size=14,
                            out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32,
                                 neck_hidden_sizes=[16, 32, 64, 64], fusion_hidden_size=32,
                                 head_hidden_size=16, depth_estimation_type="relative")
    # As depth-anything/Depth-Anything-V2-Small-hf (518 there): the aspect ratio kept, sides
    # in multiples of 14, bicubic, ImageNet mean/std
    processor = DPTImageProcessor(size={"height": 140, "width": 140}, keep_aspect_ratio=True,
                                  ensure_multiple_of=14, resample=3, image_mean=_IMAGENET_MEAN,
                                  image_std=_IMAGENET_STD)
    return DepthAnythingForDepthEstimation(config), processor


def _build_glpn(id2label):
    from transformers import GLPNConfig, GLPNForDepthEstimation, GLPNImageProcessor

    config = GLPNConfig(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 64, 128],
                        num_attention_heads=[1, 1, 2, 4], decoder_hidden_size=16, max_depth=10)
    # As vinvino02/glpn-nyu: the image's own size floored to multiples of 32, bilinear,
    # rescale only
    return GLPNForDepthEstimation(config), GLPNImageProcessor(size_divisor=32)


@torch.no_grad()
def _calibrate_depth(model, batch: torch.Tensor) -> None:
    """Depth heads end in a one-channel convolution and a ReLU (GLPN: a sigmoid): random
    weights give ~0 (a constant) everywhere. The last convolution is scaled so that the maps
    vary from picture to picture and place to place (mean 2, std 0.7 before the ReLU)."""
    run = lambda: model(pixel_values=batch)  # noqa: E731
    _measure_batch_norms(model, run)
    last = [m for m in model.head.modules()
            if isinstance(m, nn.Conv2d) and m.out_channels == 1][-1]
    _standardise_outputs(last, _layer_inputs(run, last), 2.0, 0.7)


_BUILDERS = {"vit": _build_vit, "convnext": _build_convnext, "detr": _build_detr,
             "rt_detr": _build_rt_detr, "segformer": _build_segformer, "upernet": _build_upernet,
             "dpt": _build_dpt, "depth_anything": _build_depth_anything, "glpn": _build_glpn,
             "vit_model": _build_vit_model}


def _processor_input_size(processor) -> tuple[int, int]:
    """The (h, w) the calibration crops get: the size the processor produces for a square."""
    size = processor.size
    if isinstance(size, dict):
        get = size.get
    else:  # SizeDict in transformers v5
        get = lambda key: getattr(size, key, None)  # noqa: E731
    if get("height") and get("width"):
        return int(get("height")), int(get("width"))
    if not get("shortest_edge"):  # GLPN: no size, the image's own
        return 256, 256
    edge = int(get("shortest_edge"))
    return edge, edge


def _processor_norm(processor) -> tuple[list[float] | None, list[float] | None]:
    if not processor.do_normalize:
        return None, None
    return list(processor.image_mean), list(processor.image_std)


@torch.no_grad()
def _calibrate_classifier(model, batch: torch.Tensor) -> None:
    run = lambda: model(pixel_values=batch)  # noqa: E731
    _measure_batch_norms(model, run)
    _calibrate_softmax_head(model.classifier, _layer_inputs(run, model.classifier))


@torch.no_grad()
def _calibrate_segmenter(model, batch: torch.Tensor) -> None:
    run = lambda: model(pixel_values=batch)  # noqa: E731
    _measure_batch_norms(model, run)
    head = model.decode_head.classifier
    _calibrate_softmax_head(head, _layer_inputs(run, head))


@torch.no_grad()
def _calibrate_detr(model, batch: torch.Tensor, seed: int) -> None:
    """Make DETR's queries differ, then its heads.

    With transformers' init (N(0, 0.02) query embeddings and attention projections) every
    object query attends uniformly to the picture and all queries answer the same box. The
    query embeddings get unit scale and the decoder's cross-attention query/key projections a
    Xavier init of gain 2, so each query looks at its own part of the picture.

    Heads: softmax over classes + "no object" (last). Object logits: mean 0, spread 2; the
    no-object bias is then set by bisection so that ``_BOXES_ABOVE_HALF`` queries per crop
    score above 0.5. Box head: pre-sigmoid (cx, cy, w, h) with mean (0, 0, -1.3, -1.3) and
    spread (.8, .8, .4, .4): boxes spread over the picture, ~15-35 % of its sides.
    """
    generator = torch.Generator().manual_seed(seed)
    queries = model.model.query_position_embeddings.weight
    queries.copy_(torch.randn(queries.shape, generator=generator))
    for layer in model.model.decoder.layers:
        for projection in (layer.encoder_attn.q_proj, layer.encoder_attn.k_proj):
            bound = 2.0 * math.sqrt(6.0 / sum(projection.weight.shape))  # Xavier uniform, gain 2
            projection.weight.copy_(
                (torch.rand(projection.weight.shape, generator=generator) * 2 - 1) * bound)
    mask = torch.ones(batch.shape[0], *batch.shape[-2:], dtype=torch.long)
    run = lambda: model(pixel_values=batch, pixel_mask=mask)  # noqa: E731
    _measure_batch_norms(model, run)
    head = model.class_labels_classifier
    features = _layer_inputs(run, head)
    logits = _standardise_outputs(head, features, 0.0, _DETECTION_LOGIT_STD, seed=seed)

    def passing(shift: float) -> float:
        shifted = logits.clone()
        shifted[:, -1] += shift
        return float((shifted.softmax(-1)[:, :-1].max(-1).values > 0.5).float().mean())

    fraction = min(1.0, _BOXES_ABOVE_HALF / model.config.num_queries)
    lo, hi = -20.0, 20.0  # passing() falls as the no-object logit rises
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if passing(mid) > fraction else (lo, mid)
    head.bias[-1] += (lo + hi) / 2
    box = model.bbox_predictor.layers[-1]
    _standardise_outputs(box, _layer_inputs(run, box), [0.0, 0.0, -1.3, -1.3],
                         [0.8, 0.8, 0.4, 0.4], seed=seed)


@torch.no_grad()
def _calibrate_rt_detr(model, batch: torch.Tensor, seed: int) -> None:
    """Sigmoid scores per (query, class). Boxes start from the encoder's anchor proposals
    (squares of 5/10/20 % of the input on the three levels); the proposal offsets
    (``enc_bbox_head``, in logit space) get mean (0, 0, 1, 1) and spread 0.5 (boxes ~12-40 %
    of the picture), the decoder's refinement (zero-initialised by transformers) spread 0.3,
    so boxes leave the anchor grid and follow the picture. Class logits: spread 2, shifted so
    that ``_BOXES_ABOVE_HALF`` (query, class) pairs per crop score above 0.5."""
    run = lambda: model(pixel_values=batch)  # noqa: E731
    _measure_batch_norms(model, run)
    decoder = model.model.decoder
    for layer, mean, spread in ((model.model.enc_bbox_head.layers[-1], [0.0, 0.0, 1.0, 1.0], 0.5),
                                (decoder.bbox_embed[-1].layers[-1], 0.0, 0.3)):
        _standardise_outputs(layer, _layer_inputs(run, layer), mean, spread, seed=seed)
    head = decoder.class_embed[-1]
    logits = _standardise_outputs(head, _layer_inputs(run, head), 0.0, _DETECTION_LOGIT_STD,
                                  seed=seed)
    fraction = _BOXES_ABOVE_HALF / (model.config.num_queries * model.config.num_labels)
    head.bias -= torch.quantile(logits.flatten(), 1.0 - min(1.0, fraction))


def save_hf_folder(folder: str | os.PathLike, kind: str, *, num_labels: int | None = None,
                   labels: Sequence[str] | None = None, seed: int = 0) -> Path:
    """Build a tiny transformers model of ``kind`` with calibrated random weights and save it
    with ``model.save_pretrained(folder)`` + ``image_processor.save_pretrained(folder)``:
    ``config.json`` (``architectures``, ``model_type``, ``id2label``/``label2id`` with readable
    names), ``model.safetensors`` and ``preprocessor_config.json``.

    ``kind`` is one of ``HF_KINDS``:

    * ``"vit"``: ViTForImageClassification (2 layers, width 64, patch 16 at 224) +
      ViTImageProcessor 224x224 squash, bilinear, mean/std 0.5.
    * ``"convnext"``: ConvNextForImageClassification (widths 16-128) + ConvNextImageProcessor
      shortest_edge 224, crop_pct 0.875 (resize to 256, centre crop 224), bicubic, ImageNet
      mean/std.
    * ``"detr"``: DetrForObjectDetection (tiny ResNet backbone, 1+1 layers, 20 queries) +
      DetrImageProcessor shortest_edge 320 / longest_edge 512, bilinear, pad, ImageNet mean/std.
    * ``"rt_detr"``: RTDetrForObjectDetection (tiny ResNet, 30 queries, 1 decoder layer) +
      RTDetrImageProcessor 320x320 squash, bilinear, rescale only (no normalisation).
    * ``"segformer"``: SegformerForSemanticSegmentation (widths 16-128) +
      SegformerImageProcessor 256x256 squash, bilinear, ImageNet mean/std.
    * ``"upernet"``: UperNetForSemanticSegmentation on a tiny ConvNext backbone +
      SegformerImageProcessor 256x256 (the processor openmmlab/upernet-* repositories use).
    * ``"dpt"``: DPTForDepthEstimation (a 4-layer ViT, width 32) + DPTImageProcessor 384x384
      squash, bicubic, mean/std 0.5.
    * ``"depth_anything"``: DepthAnythingForDepthEstimation on a 4-layer DINOv2 (patch 14) +
      DPTImageProcessor 140x140 with the aspect ratio kept in multiples of 14, bicubic,
      ImageNet mean/std.
    * ``"vit_model"``: ViTModel with its pooler (2 layers, width 64) + the ViT processor above.
    * ``"glpn"``: GLPNForDepthEstimation (widths 16-128, one block a stage, max_depth 10) +
      GLPNImageProcessor: the image's own size floored to multiples of 32, rescale only.

    ``labels`` (else ``num_labels`` readable names, default 10 for classifiers, 6 for
    detectors, 8 for segmenters) become ``id2label``.
    """
    if kind not in _BUILDERS:
        raise ValueError(f"unknown kind {kind!r}; one of {HF_KINDS}")
    if labels is None:
        labels = label_names(num_labels or _DEFAULT_NUM_LABELS[kind])
    elif num_labels is not None and num_labels != len(labels):
        raise ValueError(f"{len(labels)} labels for num_labels={num_labels}")
    id2label = {i: name for i, name in enumerate(labels)}
    folder = Path(folder)

    torch.manual_seed(seed)
    model, processor = _BUILDERS[kind](id2label)
    model.eval()
    mean, std = _processor_norm(processor)
    batch = _calibration_batch(_processor_input_size(processor), mean, std, seed=seed)
    if kind in ("vit", "convnext"):
        _calibrate_classifier(model, batch)
    elif kind in ("segformer", "upernet"):
        _calibrate_segmenter(model, batch)
    elif kind == "detr":
        _calibrate_detr(model, batch, seed)
    elif kind in ("dpt", "depth_anything", "glpn"):
        _calibrate_depth(model, batch)
    elif kind == "vit_model":
        pass  # a pooled output (tanh of a dense layer) already varies from picture to picture
    else:
        _calibrate_rt_detr(model, batch, seed)
    model.eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------------------------
# The hub cache
# --------------------------------------------------------------------------------------------

# Files the hub stores with Git LFS (its default .gitattributes): their blob is named by the
# file's sha256 (the LFS oid, which is the etag). Other files are plain git objects whose
# blob is named by the git blob sha1, as huggingface_hub names them when it downloads.
_LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx",
                 ".ot", ".tflite", ".npz", ".npy", ".pkl", ".pickle", ".tar", ".gz", ".zip",
                 ".model", ".joblib", ".arrow", ".parquet", ".gguf")
_LFS_MIN_SIZE = 10 * 1024 * 1024


def _blob_name(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix in _LFS_SUFFIXES or len(data) >= _LFS_MIN_SIZE:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def put_in_hub_cache(cache_root: str | os.PathLike, repo_id: str, folder: str | os.PathLike, *,
                     revision: str = "main", commit: str | None = None) -> Path:
    """Lay ``folder`` out in a Hugging Face hub cache as ``huggingface_hub`` leaves a download,
    and return the snapshot folder::

        cache_root/models--ORG--NAME/blobs/<etag>              (the bytes)
        cache_root/models--ORG--NAME/snapshots/<commit>/<file> (relative symlinks to the blobs)
        cache_root/models--ORG--NAME/refs/<revision>           (the commit hash, no newline)

    Blob names are what the hub uses as etags: the sha256 of LFS files (weights:
    ``.safetensors``, ``.bin``, ...), the git blob sha1 of small text files (``config.json``).
    ``commit`` (40 hex digits) defaults to one derived from the repository name, revision and
    file contents, so equal inputs give equal caches. Subfolders are kept. Calling again for
    another revision adds a snapshot and a ref; blobs are shared.

    ``huggingface_hub.snapshot_download(repo_id, cache_dir=cache_root,
    local_files_only=True)`` and ``scan_cache_dir(cache_root)`` recognise the result, so do
    ``timm.create_model("hf-hub:ORG/NAME", pretrained=True)`` and ``transformers``
    ``from_pretrained("ORG/NAME")`` when ``HF_HUB_CACHE`` points at ``cache_root`` and
    ``HF_HUB_OFFLINE=1`` (both read by huggingface_hub at import time, so set them before it
    is imported, or pass ``cache_dir=``).
    """
    cache_root, folder = Path(cache_root), Path(folder)
    if repo_id.count("/") > 1 or not repo_id.strip("/"):
        raise ValueError(f"repo_id must be ORG/NAME (or a legacy NAME), got {repo_id!r}")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not files:
        raise ValueError(f"{folder} holds no files")
    blobs = {p: _blob_name(p) for p in files}
    if commit is None:
        digest = hashlib.sha1(f"{repo_id}@{revision}\n".encode())
        for p in files:
            digest.update(f"{p.relative_to(folder).as_posix()} {blobs[p]}\n".encode())
        commit = digest.hexdigest()
    if len(commit) != 40 or any(c not in "0123456789abcdef" for c in commit):
        raise ValueError(f"commit must be 40 lowercase hex digits, got {commit!r}")

    repo_dir = cache_root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    for p in files:
        blob = repo_dir / "blobs" / blobs[p]
        if not blob.exists():
            shutil.copyfile(p, blob)
        link = snapshot / p.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    ref = repo_dir / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    return snapshot
