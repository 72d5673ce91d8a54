"""Tests for torchinfer.inspection: exact params/MACs against hand counts and
torchvision's published ``meta["num_params"]`` / ``meta["_ops"]``.

No test downloads anything: models are built by torchvision's own builders for
the published weights with the state-dict download replaced by "load nothing"
(see :func:`build_as_published`).

Conventions found while matching the published numbers:

* ``meta["_ops"]`` is labelled GFLOPS but counts multiply-accumulates (GMACs):
  it equals our ``macs``, half our ``flops`` (tested below).
* Classification: at the crop size of ``weights.transforms()`` (224, 240...
  518 for ViT-H SWAG), attention matmuls included.
* Segmentation: at ``weights.transforms().resize_size`` (520x520), with the
  auxiliary head the builder adds for published weights (``aux_loss=True``).
* Detection: the model resizes every input itself (800 px for R-CNN/RetinaNet/
  FCOS, 300/320 for SSD); the published figures hold for a *square* image of
  any size, so a small 224x224 input is used and the model runs for real on CPU
  (meta tensors cannot run NMS/nonzero).  Faster R-CNN/RetinaNet/FCOS/SSD do a
  fixed amount of work and match exactly.  Five published figures depend on how
  many boxes the *pretrained* weights produced on torchvision's measurement
  input, which cannot be reproduced without the weights; see
  ``_DATA_DEPENDENT_DETECTION``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import get_model, get_model_weights, list_models
from torchvision.models._api import WeightsEnum

from torchinfer.inspection import LayerStats, ModelReport, inspect_model

# --------------------------------------------------------------------------------------
# Building models exactly as torchvision does for published weights, offline
# --------------------------------------------------------------------------------------


class _NoWeights(dict):
    """Stands in for a downloaded state dict; load_state_dict ignores it."""


@contextlib.contextmanager
def _weights_not_loaded() -> Iterator[None]:
    """Run torchvision builders with ``weights=...`` but without the download.

    The builders change the architecture for published weights in ways a plain
    ``weights=None`` call cannot reproduce, e.g.:

    * ``num_classes = len(meta["categories"])`` everywhere;
    * ViT ``image_size`` / MaxViT ``input_size`` from ``meta["min_size"]`` (SWAG 384/518);
    * GoogLeNet / Inception v3: ``transform_input=True``, aux heads built for
      loading and then dropped (``aux1 = aux2 = None`` / ``AuxLogits = None``);
    * detection: ``FrozenBatchNorm2d`` in the backbone (its affine terms are
      buffers, not parameters) and only 3 trainable backbone stages, which the
      public kwargs cannot select; SSDlite's reduced tail;
    * segmentation: ``aux_loss=True``.

    So the real builder runs, and only fetching/loading the state dict is
    replaced: values are random, the structure is the published one.
    """
    original_get = WeightsEnum.get_state_dict
    original_load = nn.Module.load_state_dict

    def get_state_dict(self: WeightsEnum, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return _NoWeights()

    def load_state_dict(self: nn.Module, state_dict: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(state_dict, _NoWeights):
            return None
        return original_load(self, state_dict, *args, **kwargs)

    WeightsEnum.get_state_dict = get_state_dict  # type: ignore[method-assign]
    nn.Module.load_state_dict = load_state_dict  # type: ignore[method-assign]
    try:
        yield
    finally:
        WeightsEnum.get_state_dict = original_get  # type: ignore[method-assign]
        nn.Module.load_state_dict = original_load  # type: ignore[method-assign]


def build_as_published(name: str, weights: WeightsEnum, *, meta: bool = True, **overrides: Any) -> nn.Module:
    """torchvision's builder for ``weights``, without downloading them.

    ``meta=True`` builds on the meta device (instant, no memory); RegNet computes
    its stage widths with tensor ops and ``.tolist()`` while building, which
    cannot run on meta, so such builders fall back to CPU.
    """
    with _weights_not_loaded():
        if meta:
            try:
                with torch.device("meta"):
                    return get_model(name, weights=weights, **overrides)
            except (NotImplementedError, RuntimeError):
                pass
        torch.manual_seed(0)  # detection counts can depend on (random) weight values
        return get_model(name, weights=weights, **overrides)


def _crop_size(weights: WeightsEnum) -> int:
    return int(weights.transforms().crop_size[0])


def assert_matches_published(report: ModelReport, weights: WeightsEnum) -> None:
    assert report.params_total == weights.meta["num_params"]
    published = weights.meta["_ops"]
    # 0.5%, or the rounding of the 3-decimal published figure for tiny models
    # (mobilenet_v3_small: 0.0565 GMACs is published as 0.057).
    tolerance = max(0.005 * published, 0.0005 + 1e-9)
    assert abs(report.gmacs - published) <= tolerance, (
        f"{weights}: {report.gmacs:.4f} GMACs vs published {published} "
        f"({100 * (report.gmacs / published - 1):+.2f}%)"
    )


def _all_weights(module: Any) -> list[tuple[str, WeightsEnum]]:
    return [(name, w) for name in list_models(module=module) for w in get_model_weights(name)]


CLASSIFICATION_WEIGHTS = _all_weights(torchvision.models)
SEGMENTATION_WEIGHTS = _all_weights(torchvision.models.segmentation)
DETECTION_WEIGHTS = _all_weights(torchvision.models.detection)

# Counted by default (all on meta, a second or two together): small CNNs, two
# transformers with attention, and GoogLeNet whose published build differs most.
FAST_CLASSIFICATION = {
    "mobilenet_v2",
    "resnet18",
    "squeezenet1_1",
    "shufflenet_v2_x1_0",
    "efficientnet_b0",
    "googlenet",
    "vit_b_16",
    "swin_t",
}


def _params_fast_default(
    weights_list: list[tuple[str, WeightsEnum]], fast: set[str]
) -> list[Any]:
    """One case per weights; DEFAULT weights of `fast` models run by default, the rest are slow."""
    cases = []
    for name, weights in weights_list:
        is_fast = name in fast and weights == get_model_weights(name).DEFAULT
        marks = () if is_fast else (pytest.mark.slow,)
        cases.append(pytest.param(name, weights, marks=marks, id=str(weights)))
    return cases


# --------------------------------------------------------------------------------------
# The worked example and hand counts
# --------------------------------------------------------------------------------------


def test_mobilenet_v2_first_conv_matches_hand_count() -> None:
    model = torchvision.models.mobilenet_v2(weights=None)
    report = inspect_model(model, input_shape=(1, 3, 224, 224))
    row = next(r for r in report.layers if r.path == "features.0.0")
    assert row.type_name == "Conv2d"
    assert row.params == 32 * 3 * 3 * 3 == 864
    assert row.macs == 3 * 3 * 3 * 112 * 112 * 32 == 10_838_016
    assert row.flops == 2 * row.macs
    assert row.output_shape == (1, 32, 112, 112)
    assert report.counted_on == "meta"


def test_multihead_attention_macs_by_hand() -> None:
    # in-projection 3*B*L*E^2, Q@K^T and A@V 2*B*L^2*E, out-projection B*L*E^2
    batch, length, embed = 2, 10, 64
    mha = nn.MultiheadAttention(embed, num_heads=4, batch_first=True)

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = mha

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(x, x, x, need_weights=False)[0]

    report = inspect_model(SelfAttention(), input_shape=(batch, length, embed))
    expected = 4 * batch * length * embed**2 + 2 * batch * length**2 * embed
    assert report.macs == expected
    # thop misses these parameters; we count the packed in_proj and the out_proj.
    assert report.params_total == 4 * embed * embed + 4 * embed


def test_published_ops_field_counts_macs_not_flops() -> None:
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    report = inspect_model(build_as_published("resnet50", weights), input_shape=(1, 3, 224, 224))
    published = weights.meta["_ops"]  # labelled GFLOPS
    assert math.isclose(report.gmacs, published, rel_tol=0.005)
    assert not math.isclose(report.gflops, published, rel_tol=0.1)
    assert report.flops == 2 * report.macs


# --------------------------------------------------------------------------------------
# Published numbers: classification, segmentation, detection
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "weights"), _params_fast_default(CLASSIFICATION_WEIGHTS, FAST_CLASSIFICATION))
def test_classification_matches_published(name: str, weights: WeightsEnum) -> None:
    size = _crop_size(weights)
    report = inspect_model(build_as_published(name, weights), input_shape=(1, 3, size, size))
    assert report.counted_on == "meta"
    assert report.uncounted_ops == ()
    assert_matches_published(report, weights)


def test_published_build_differs_from_plain_build_for_googlenet() -> None:
    # Guards build_as_published: GoogLeNet's published build drops the aux heads
    # and normalises its input itself, which weights=None would not do.
    weights = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1
    published = build_as_published("googlenet", weights)
    assert published.aux1 is None and published.aux2 is None and published.transform_input
    with torch.device("meta"):
        plain = torchvision.models.googlenet(weights=None, init_weights=False)
    assert sum(p.numel() for p in plain.parameters()) != weights.meta["num_params"]


@pytest.mark.parametrize(("name", "weights"), [pytest.param(n, w, id=str(w)) for n, w in SEGMENTATION_WEIGHTS])
def test_segmentation_matches_published(name: str, weights: WeightsEnum) -> None:
    size = int(weights.transforms().resize_size[0])  # 520: the published figures hold at 520x520
    report = inspect_model(build_as_published(name, weights), input_shape=(1, 3, size, size))
    assert report.counted_on == "meta"
    assert_matches_published(report, weights)


# Published detection figures that depend on how many items the data-dependent
# stages handled when torchvision measured them with the *pretrained* weights:
# Mask/Keypoint R-CNN run their mask/keypoint head once per detection, and the
# MobileNet Faster R-CNNs (rpn_score_thresh=0.05) run the box head once per RPN
# proposal above threshold.  With random weights those counts differ, so the
# figure cannot be reproduced from the architecture alone.  Solving
# published = count(0 items) + n * count(per item) gives an integer n for each
# (0 proposals; 0, 100, 0 and 1 detections), and pinning n with the builders'
# own kwargs reproduces the published figure exactly.
_DATA_DEPENDENT_DETECTION: dict[str, tuple[dict[str, Any], str]] = {
    "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1": (
        {"rpn_score_thresh": 1.01},
        "published with 0 RPN proposals above rpn_score_thresh: box head never ran",
    ),
    "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1": (
        {"rpn_score_thresh": 1.01},
        "published with 0 RPN proposals above rpn_score_thresh: box head never ran",
    ),
    "MaskRCNN_ResNet50_FPN_Weights.COCO_V1": (
        {"box_score_thresh": 1.01},
        "published with 0 detections: mask head never ran",
    ),
    "MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1": (
        {"box_score_thresh": 0.0, "box_detections_per_img": 100},
        "published with 100 detections (the cap) through the mask head",
    ),
    "KeypointRCNN_ResNet50_FPN_Weights.COCO_LEGACY": (
        {"box_score_thresh": 1.01},
        "published with 0 detections: keypoint head never ran",
    ),
    "KeypointRCNN_ResNet50_FPN_Weights.COCO_V1": (
        {"box_score_thresh": 0.0, "box_detections_per_img": 1},
        "published with 1 detection through the keypoint head",
    ),
}
# Random weights happen to saturate MaskRCNN v2 at its 100-detection cap too, so
# its unpinned count matches; the other data-dependent figures do not.
_UNREPRODUCIBLE_UNPINNED = sorted(set(_DATA_DEPENDENT_DETECTION) - {"MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1"})

DETECTION_INPUT = (1, 3, 224, 224)  # resized to 800x800 (300/320 for SSD) inside the model


def _count_detection(name: str, weights: WeightsEnum, **overrides: Any) -> ModelReport:
    model = build_as_published(name, weights, meta=False, **overrides)
    return inspect_model(model, input_shape=DETECTION_INPUT)


@pytest.mark.parametrize(
    ("name", "weights"),
    [
        pytest.param(n, w, id=str(w), marks=() if n == "retinanet_resnet50_fpn" else (pytest.mark.slow,))
        for n, w in DETECTION_WEIGHTS
    ],
)
def test_detection_matches_published(name: str, weights: WeightsEnum) -> None:
    overrides, _why = _DATA_DEPENDENT_DETECTION.get(str(weights), ({}, ""))
    report = _count_detection(name, weights, **overrides)
    assert report.counted_on == "cpu"  # NMS & co. cannot run on meta
    assert report.fallback_reason
    assert_matches_published(report, weights)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "weights"),
    [
        pytest.param(
            n,
            w,
            id=str(w),
            marks=pytest.mark.xfail(
                reason=_DATA_DEPENDENT_DETECTION[str(w)][1] + "; random weights give another count",
                strict=True,  # seeded, so an unexpected match means this note is stale
            ),
        )
        for n, w in DETECTION_WEIGHTS
        if str(w) in _UNREPRODUCIBLE_UNPINNED
    ],
)
def test_detection_data_dependent_published_figure_without_pretrained_weights(name: str, weights: WeightsEnum) -> None:
    assert_matches_published(_count_detection(name, weights), weights)


def test_detection_reports_fallback_and_uncounted_roi_align() -> None:
    weights = torchvision.models.detection.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1
    report = _count_detection("fasterrcnn_mobilenet_v3_large_320_fpn", weights, rpn_score_thresh=1.01)
    assert report.counted_on == "cpu"
    assert "nonzero" in (report.fallback_reason or "")
    assert "torchvision::roi_align" in report.uncounted_ops  # said, not silently zero
    # the model resized the 224x224 input to 320x320 itself
    transform_row = next(r for r in report.layers if r.path == "transform")
    assert (1, 3, 320, 320) in transform_row.output_shapes


# --------------------------------------------------------------------------------------
# Mode, kernel path and device invariance
# --------------------------------------------------------------------------------------


def _tiny_vit() -> nn.Module:
    # torchvision's ViT uses nn.MultiheadAttention (batch_first) -> fused fast path in eval.
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
    )


def _tiny_encoder() -> nn.Module:
    # nn.TransformerEncoderLayer has its own fused fast path (_transformer_encoder_layer_fwd).
    layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)


def _counts(report: ModelReport) -> tuple[Any, ...]:
    return (
        report.macs,
        report.other_ops,
        report.activation_bytes,
        tuple((r.path, r.macs, r.other_ops, r.output_shapes) for r in report.layers),
    )


@pytest.mark.parametrize(("factory", "shape"), [(_tiny_vit, (2, 3, 32, 32)), (_tiny_encoder, (2, 7, 32))])
def test_count_is_independent_of_mode_kernel_path_and_device(factory: Any, shape: tuple[int, ...]) -> None:
    model = factory()
    reports = []
    for run_on in ("meta", "real"):
        for training in (True, False):
            model.train(training)
            reports.append(inspect_model(model, input_shape=shape, include_other_ops=True, run_on=run_on))
            with torch.inference_mode():
                reports.append(inspect_model(model, input_shape=shape, include_other_ops=True, run_on=run_on))
    assert {r.counted_on for r in reports} == {"meta", "cpu"}
    assert len({_counts(r) for r in reports}) == 1
    assert all(r.uncounted_ops == () for r in reports)

    # Not vacuous: a plain FlopCounterMode on the eval + inference_mode CPU path
    # takes the fused kernel and misses the attention entirely.
    model.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as naive:
        model(torch.rand(shape))
    assert naive.get_total_flops() // 2 < reports[0].macs


def test_vit_b_16_train_eval_inference_mode_agree() -> None:
    with torch.device("meta"):
        model = torchvision.models.vit_b_16(weights=None)
    model.train()
    train = inspect_model(model)
    model.eval()
    evaluated = inspect_model(model)
    with torch.inference_mode():
        inference = inspect_model(model)
    assert train.macs == evaluated.macs == inference.macs
    assert [r.macs for r in train.layers] == [r.macs for r in inference.layers]
    assert model.training is False  # the caller's mode is left as it was


def test_meta_and_real_cpu_agree_layer_by_layer() -> None:
    model = torchvision.models.mobilenet_v3_small(weights=None)
    meta = inspect_model(model, include_other_ops=True, run_on="meta")
    real = inspect_model(model, include_other_ops=True, run_on="real")
    assert (meta.counted_on, real.counted_on) == ("meta", "cpu")
    assert _counts(meta) == _counts(real)


def test_inspection_leaves_the_model_untouched() -> None:
    model = torchvision.models.resnet18(weights=None)
    model.train()
    model.layer1.eval()  # mixed modes must come back exactly
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    for run_on in ("meta", "real"):
        inspect_model(model, input_shape=(2, 3, 64, 64), run_on=run_on)
    assert [m.training for m in model.modules()] == modes
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics not updated
    assert all(v.device.type == "cpu" for v in after.values())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_data_dependent_model_falls_back_to_real_compute() -> None:
    class KeepPositive(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            kept = x[x.sum(dim=1) > 0]  # data-dependent shape: impossible on meta
            return self.proj(kept)

    model = KeepPositive()
    report = inspect_model(model, input_shape=(5, 8))
    assert report.counted_on == "cpu" and report.fallback_reason
    assert report.layers[0].output_shape == (5, 4)  # rand() >= 0: every row is kept
    assert report.macs == 5 * 8 * 4
    with pytest.raises(RuntimeError, match="meta"):
        inspect_model(model, input_shape=(5, 8), run_on="meta")


# --------------------------------------------------------------------------------------
# Per-layer folding, other ops, memory, output formats
# --------------------------------------------------------------------------------------


def _children(rows: tuple[LayerStats, ...], parent: LayerStats) -> list[LayerStats]:
    prefix = f"{parent.path}." if parent.path else ""
    return [r for r in rows if r.depth == parent.depth + 1 and r.path.startswith(prefix)]


@pytest.mark.parametrize("name", ["resnet18", "vit_b_16"])
def test_folding_by_depth_aggregates_children(name: str) -> None:
    with torch.device("meta"):
        model = get_model(name, weights=None)
    full = inspect_model(model)
    modules = dict(model.named_modules())
    for row in full.layers:
        children = _children(full.layers, row)
        assert row.macs == row.self_macs + sum(c.macs for c in children), row.path
        direct = sum(p.numel() for p in modules[row.path].parameters(recurse=False))
        assert row.params == direct + sum(c.params for c in children), row.path
    # MHA computes with its own weights (F.linear), so its out_proj child shows 0
    # while the MHA row carries the work itself.
    if name == "vit_b_16":
        mha = next(r for r in full.layers if r.type_name == "MultiheadAttention")
        assert mha.self_macs > 0 and mha.macs == mha.self_macs

    folded = inspect_model(model, depth=1)
    assert folded.depth == 1 and {r.depth for r in folded.layers} == {0, 1}
    top = [r for r in folded.layers if r.depth == 1]
    root = folded.layers[0]
    assert root.self_macs == 0  # torchvision models do all their MACs inside children
    assert folded.macs == sum(r.macs for r in top) == full.macs
    assert sum(r.macs_percent for r in top) == pytest.approx(100.0)
    # a folded row is the same aggregate as in the full tree
    full_by_path = {r.path: r for r in full.layers}
    assert all(r == full_by_path[r.path] for r in folded.layers)


def test_tiny_model_other_ops_and_activation_memory_by_hand() -> None:
    conv_bn_relu = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    report = inspect_model(conv_bn_relu, input_shape=(1, 3, 8, 8), include_other_ops=True)
    elements = 8 * 8 * 8
    assert report.macs == (3 * 3 * 3) * elements  # (C_in * k * k) per output element
    assert report.other_ops == 2 * elements + elements  # batch norm 2/element, ReLU 1/element
    assert report.activation_bytes == 3 * elements * 4  # three leaf outputs at fp32
    assert report.buffers_total == 8 + 8 + 1  # running mean/var, num_batches_tracked
    assert report.buffers_bytes == 16 * 4 + 8

    in_place = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
    assert inspect_model(in_place, input_shape=(1, 3, 8, 8)).activation_bytes == 2 * elements * 4


def test_include_other_ops_is_separate_from_macs() -> None:
    with torch.device("meta"):
        model = torchvision.models.efficientnet_b0(weights=None)
    plain = inspect_model(model)
    detailed = inspect_model(model, include_other_ops=True)
    assert plain.other_ops is None and all(r.other_ops is None for r in plain.layers)
    assert detailed.other_ops is not None and detailed.other_ops > 0
    assert detailed.macs == plain.macs and detailed.flops == plain.flops
    assert detailed.layers[0].other_ops == detailed.other_ops


def test_param_counts_memory_file_size_and_json(tmp_path: Any) -> None:
    model = torchvision.models.resnet18(weights=None)
    for p in model.layer1.parameters():
        p.requires_grad_(False)
    path = tmp_path / "resnet18.pt"
    torch.save(model.state_dict(), path)
    report = inspect_model(model, file_path=path, depth=2)

    frozen = sum(p.numel() for p in model.layer1.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert (report.params_total, report.params_frozen, report.params_trainable) == (total, frozen, total - frozen)
    assert (report.param_bytes_fp32, report.param_bytes_fp16, report.param_bytes_int8) == (4 * total, 2 * total, total)
    assert report.file_size_bytes == os.path.getsize(path)

    data = json.loads(json.dumps(report.to_dict()))
    assert data["macs"] == report.macs and data["flops"] == 2 * report.macs
    assert data["layers"][0]["path"] == "" and len(data["layers"]) == len(report.layers)
    assert data["input_shape"] == [1, 3, 224, 224]


def test_rich_table_lists_every_row() -> None:
    from rich.console import Console

    report = inspect_model(torchvision.models.mobilenet_v2(weights=None), depth=2, include_other_ops=True)
    table = report.to_rich_table()
    assert table.row_count == len(report.layers)
    out = io.StringIO()
    Console(file=out, width=160).print(table)
    text = out.getvalue()
    assert "features" in text and "Conv2dNormActivation" in text and "1x32x112x112" in text
    assert f"{report.macs:,}" in text


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"input_shape": (1, 3, 0, 224)}, ValueError),
        ({"input_shape": ()}, ValueError),
        ({"input_shape": "1x3x224x224"}, TypeError),
        ({"depth": -1}, ValueError),
        ({"run_on": "gpu"}, ValueError),
        ({"file_path": "/nonexistent/model.pt"}, FileNotFoundError),
    ],
)
def test_invalid_arguments_are_rejected(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        inspect_model(nn.Linear(2, 2), **kwargs)


def test_non_module_is_rejected() -> None:
    with pytest.raises(TypeError):
        inspect_model(lambda x: x)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# Speed
# --------------------------------------------------------------------------------------


def test_vit_h_14_at_518_over_a_teramac_is_counted_in_seconds() -> None:
    weights = torchvision.models.ViT_H_14_Weights.IMAGENET1K_SWAG_E2E_V1
    model = build_as_published("vit_h_14", weights)
    start = time.perf_counter()
    report = inspect_model(model, input_shape=(1, 3, 518, 518))
    elapsed = time.perf_counter() - start
    assert report.gmacs > 1000  # 1016.7 GMACs published
    assert elapsed < 10, f"{elapsed:.1f}s"


@pytest.mark.slow
def test_counting_all_classification_models_takes_under_two_minutes() -> None:
    counting = building = 0.0
    for name, weights in CLASSIFICATION_WEIGHTS:
        start = time.perf_counter()
        model = build_as_published(name, weights)  # building is not counting; RegNet builds on CPU
        building += time.perf_counter() - start
        size = _crop_size(weights)
        start = time.perf_counter()
        inspect_model(model, input_shape=(1, 3, size, size))
        counting += time.perf_counter() - start
        del model
    print(
        f"\ncounted {len(CLASSIFICATION_WEIGHTS)} classification weights in {counting:.1f}s "
        f"(building them took {building:.1f}s more)"
    )
    assert counting < 120, f"{counting:.1f}s"
