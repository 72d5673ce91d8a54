"""ONNX export that proves itself: the file computes what the PyTorch model computes on real
photographs, carries its preprocessing and labels, and a broken export is caught and named.

Fast by default (three classifiers, one segmenter, broken models, fp16, metadata, the ONNX
Runtime predictor); ``-m slow`` adds every torchvision classifier and two more segmenters.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.functional as TF
from torch import nn

import torchinfer as ti
from torchinfer.errors import DeviceError, MissingExtraError, TorchinferError
from torchinfer.models import LoadedModel, load_model
from torchinfer.tasks import ClassificationPredictor
from torchinfer.testing import calibrate

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from torchinfer.exporters.onnx import (  # noqa: E402
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    ExportError,
    ExportReport,
    ExportVerificationError,
    export_onnx,
)
from torchinfer.models.onnx import OrtModule, load_onnx_model  # noqa: E402
from torchinfer.models.onnx_session import make_session  # noqa: E402

FAST_CLASSIFIERS = ("mobilenet_v3_small", "resnet18", "efficientnet_b0")


@pytest.fixture(scope="module")
def exported(calibrated, tmp_path_factory):
    """arch -> (LoadedModel, weights path, ONNX path, report): each exported once per module."""
    folder = tmp_path_factory.mktemp("onnx")
    cache: dict[str, tuple[LoadedModel, Path, Path, ExportReport]] = {}

    def get(arch: str) -> tuple[LoadedModel, Path, Path, ExportReport]:
        if arch not in cache:
            _, weights = calibrated(arch)
            loaded = load_model(arch, weights)
            path = folder / f"{arch}.onnx"
            cache[arch] = (loaded, weights, path, export_onnx(loaded, path))
        return cache[arch]

    return get


def _metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


# --- exports that must verify -----------------------------------------------------------------

@pytest.mark.parametrize("arch", FAST_CLASSIFIERS)
def test_classifier_export_verifies_on_photographs(arch, exported):
    loaded, _, path, report = exported(arch)
    assert report.passed and report.verified, report.summary()
    assert report.path == str(path)
    assert [p.name for p in path.parent.iterdir() if p.stem.startswith(arch)] == [path.name]
    assert not list(path.parent.glob(".torchinfer-export-*"))  # the staging folder is gone
    assert report.inputs == 8  # the scikit-image photographs
    assert [(c.output, c.batch_size) for c in report.checks] == [("logits", 1), ("logits", 4)]
    for check in report.checks:
        assert check.within_tolerance and check.error is None
        # atol in units of the logits' spread (std ~3 after calibration): about 0.015
        assert FP32_TOLERANCE.atol_per_std and 1e-3 < check.atol < 0.05
        assert check.max_abs_error < check.atol + FP32_TOLERANCE.rtol * 30
        assert check.agreement_kind == "top-1" and check.decisions == 8
        assert check.agreement == 1.0
    assert report.input_shape == ("batch", 3, *loaded.preprocess.crop_size)
    assert report.precision == "fp32" and report.opset >= 11
    # the export must leave the caller's model as it found it (eval mode, fp32)
    assert not loaded.module.training
    assert next(loaded.module.parameters()).dtype == torch.float32
    assert "PASSED" in report.summary()
    json.dumps(report.to_dict())  # JSON-ready


def test_segmenter_export_verifies_with_dynamic_size(tmp_path, photographs):
    """torchvision's segmentation preprocessing resizes the short side without cropping, so the
    file takes any height and width; verified on photographs of different aspect ratios."""
    torch.manual_seed(0)
    loaded = load_model("lraspp_mobilenet_v3_large")
    calibrate(loaded.module, list(photographs.values()), crops_per_image=2)
    images = [photographs[n] for n in ("chelsea.png", "astronaut.png", "coffee.png")]
    path = tmp_path / "lraspp.onnx"
    report = export_onnx(loaded, path, verify_inputs=images)
    assert report.passed, report.summary()
    assert report.input_shape == ("batch", 3, "height", "width")
    assert [(c.output, c.batch_size) for c in report.checks] == [("out", 1), ("out", 4)]
    # one decision per pixel of each image at its own size (short side 520)
    sizes = [TF.resize(img, [520]).size for img in images]
    assert len(set(sizes)) == 3
    assert report.checks[0].agreement_kind == "pixel"
    assert report.checks[0].decisions == sum(w * h for w, h in sizes)
    # batch 4: the three photographs and the first again, cropped to their common 520 x 520
    assert report.checks[1].decisions == 4 * 520 * 520
    assert all(c.agreement > 0.999 for c in report.checks)
    meta = _metadata(path)
    assert meta["task"] == "segment" and "input_size" not in meta  # free height and width
    assert json.loads(meta["preprocess"])["crop_size"] is None
    module = load_onnx_model(path, device="cpu").module
    out = module(torch.randn(2, 3, 200, 264))
    assert out.shape == (2, 21, 200, 264) and out.dtype == torch.float32
    # predict on the file gives the masks predict on the .pth gives
    torch.save(loaded.module.state_dict(), tmp_path / "lraspp.pth")
    on_pth = ti.load("segment", "lraspp_mobilenet_v3_large", tmp_path / "lraspp.pth",
                     device="cpu")(images)
    on_onnx = ti.load("segment", str(path), device="cpu")(images)
    for a, b in zip(on_pth, on_onnx):
        assert a.mask.shape == b.mask.shape and (a.mask == b.mask).mean() > 0.999


# --- exports that must fail -------------------------------------------------------------------

class FrozenScale(nn.Module):
    """Scales its logits by the input's largest value. ``.item()`` turns that into a Python
    float, which the tracer records as a constant: the dummy input's value, for every input."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x)) * x.abs().amax().item()


class FrozenBatch(nn.Module):
    """Flattens with ``int(shape[0])``: the tracer freezes the dummy's batch of 1, so batch 1
    is right and any other batch is not."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=8)
        self.fc = nn.Linear(4 * 28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.fc(y.reshape(int(y.shape[0]), -1))


def test_value_frozen_by_the_trace_fails_verification(tmp_path, photographs):
    torch.manual_seed(0)
    loaded = load_model(FrozenScale())
    path = tmp_path / "frozen.onnx"
    path.write_bytes(b"an older export that no longer matches")
    with pytest.raises(ExportVerificationError) as info:
        export_onnx(loaded, path, verify_inputs=list(photographs.values())[:3])
    err = info.value
    message = str(err)
    first = err.report.checks[0]
    assert not err.report.passed and not first.within_tolerance
    assert first.max_abs_error > 1e-3  # far beyond 1e-4, not a rounding matter
    assert str(path) in message and "FrozenScale" in message
    assert "output 'logits' at batch 1" in message
    assert f"max abs error {first.max_abs_error:.3g}" in message
    assert "worst element" in message and "top-1 agreement" in message
    # the tracer's own warning is named as the likely cause
    assert "Converting a tensor to a Python" in message
    # kept for inspection under a name nobody loads by accident; the old file is gone
    assert err.unverified_path == tmp_path / "frozen.unverified.onnx"
    assert err.unverified_path.is_file() and not path.exists()
    assert list(tmp_path.iterdir()) == [err.unverified_path]  # no staging leftovers
    assert err.report.path == str(err.unverified_path)


def test_batch_frozen_by_the_trace_fails_at_batch_4(tmp_path, photographs):
    loaded = load_model(FrozenBatch())
    with pytest.raises(ExportVerificationError) as info:
        export_onnx(loaded, tmp_path / "batch.onnx",
                    verify_inputs=list(photographs.values())[:4])
    at_1, at_4 = info.value.report.checks
    assert at_1.passed  # batch 1 is what the trace saw
    assert not at_4.passed and at_4.error is not None
    assert "output 'logits' at batch 4: onnxruntime failed on input shape (4, 3, 224, 224)" \
        in str(info.value)


def test_static_batch_is_verified_at_batch_1_only(tmp_path, photographs):
    """The same model exported without a dynamic batch axis is correct for what it accepts."""
    report = export_onnx(load_model(FrozenBatch()), tmp_path / "static.onnx", opset=17,
                         dynamic_batch=False, verify_inputs=list(photographs.values())[:2])
    assert report.passed and [c.batch_size for c in report.checks] == [1]
    assert report.input_shape == (1, 3, 224, 224) and report.opset == 17
    assert make_session(tmp_path / "static.onnx").get_inputs()[0].shape == [1, 3, 224, 224]


def test_without_verification_the_file_is_written_and_says_so(tmp_path):
    path = tmp_path / "unchecked.onnx"
    report = export_onnx(load_model(FrozenScale()), path, verify=False)
    assert path.is_file() and report.path == str(path)
    assert not report.verified and not report.passed and report.checks == ()
    assert "NOT VERIFIED" in report.summary()
    # what verification would have named as the likely cause is still reported
    assert any("Converting a tensor to a Python" in w for w in report.export_warnings)


def test_torchvision_detector_refuses_half_and_fixed_size(tmp_path):
    loaded = load_model("ssdlite320_mobilenet_v3_large")
    with pytest.raises(ExportError, match="export in fp32 at free image sizes"):
        export_onnx(loaded, tmp_path / "det.onnx", half=True)
    assert not list(tmp_path.iterdir())


# --- fp16 -------------------------------------------------------------------------------------

def test_fp16_export_verifies_with_the_stated_looser_tolerance(calibrated, tmp_path):
    _, weights = calibrated("mobilenet_v3_small")
    loaded = load_model("mobilenet_v3_small", weights)
    path = tmp_path / "half.onnx"
    try:
        report = export_onnx(loaded, path, half=True)
    except ExportVerificationError as exc:
        if any("NOT_IMPLEMENTED" in (c.error or "") for c in exc.report.checks):
            pytest.skip(f"onnxruntime on this CPU cannot run fp16: {exc.report.checks[0].error}")
        raise
    assert report.passed, report.summary()
    assert report.precision == "fp16" and report.tolerance == FP16_TOLERANCE
    assert "0.2*std(torch) + 0.05*|torch|, agreement >= 99%" in report.summary()
    assert all(c.agreement == 1.0 for c in report.checks)
    # the fp16 errors are real (so the looser tolerance is needed), yet bounded
    assert all(1e-3 < c.max_abs_error < c.atol + 0.05 * 30 for c in report.checks)
    session = make_session(path)
    assert session.get_inputs()[0].type == "tensor(float16)"
    assert _metadata(path)["precision"] == "fp16"
    # the caller's model stays float32
    assert next(loaded.module.parameters()).dtype == torch.float32
    # OrtModule feeds fp16 and hands back float32 like the model it replaces
    assert OrtModule(session)(torch.randn(1, 3, 224, 224)).dtype == torch.float32


def test_fp16_held_to_fp32_tolerance_fails(calibrated, tmp_path):
    """The tolerance is really applied to fp16: at fp32's it does not pass."""
    _, weights = calibrated("mobilenet_v3_small")
    with pytest.raises(ExportVerificationError, match=r"fp16, allowed: \|onnx - torch\| <= "
                                                      r"0\.0001 \+ 0\.001\*\|torch\|"):
        export_onnx(load_model("mobilenet_v3_small", weights), tmp_path / "half.onnx",
                    half=True, atol=1e-4, rtol=1e-3)


# --- metadata and running by path -------------------------------------------------------------

def test_file_carries_task_labels_and_preprocessing(exported):
    loaded, _, path, report = exported("mobilenet_v3_small")
    meta = _metadata(path)
    assert meta["torchinfer_version"] == ti.__version__
    assert meta["task"] == "classify" and meta["model_name"] == "mobilenet_v3_small"
    assert json.loads(meta["labels"]) == loaded.labels and len(loaded.labels) == 1000
    assert json.loads(meta["preprocess"]) == loaded.preprocess.to_dict()
    assert json.loads(meta["input_size"]) == [224, 224]
    assert report.metadata == meta

    again = load_onnx_model(path, device="cpu")
    assert isinstance(again.module, OrtModule)
    assert (again.name, again.task, again.labels) == ("mobilenet_v3_small", "classify",
                                                        loaded.labels)
    assert again.preprocess == loaded.preprocess
    assert again.weights == str(path) and again.weights_format == "onnx"


@pytest.mark.parametrize("arch", ("mobilenet_v3_small", "efficientnet_b0"))
def test_onnx_predictor_matches_torch_predictor(arch, exported, photo_paths):
    """Same photographs by path through both predictors: same top-1, same score. efficientnet
    brings bicubic resizing, which must travel in the file's preprocessing too."""
    _, weights, path, _ = exported(arch)
    torch_clf = ti.load("classify", arch, weights, device="cpu")
    onnx_clf = ClassificationPredictor(load_onnx_model(path, device="cpu"), device="cpu")
    assert onnx_clf.config == torch_clf.config
    for expected, got in zip(torch_clf(list(photo_paths)), onnx_clf(list(photo_paths))):
        assert got.ok and expected.ok
        assert got.top1.index == expected.top1.index and got.top1.label == expected.top1.label
        assert got.top1.score == pytest.approx(expected.top1.score, abs=1e-4)
    # the scores are informative: the photographs do not all get the same answer
    assert len({r.top1.index for r in onnx_clf(list(photo_paths))}) > 1


def test_input_size_override_is_exported_and_stored(calibrated, tmp_path, photographs):
    _, weights = calibrated("mobilenet_v3_small")
    loaded = load_model("mobilenet_v3_small", weights)
    path = tmp_path / "small160.onnx"
    report = export_onnx(loaded, path, input_size=(160, 192),
                         verify_inputs=list(photographs.values())[:2])
    assert report.passed and report.input_shape == ("batch", 3, 160, 192)
    cfg = load_onnx_model(path, device="cpu").preprocess
    assert cfg.crop_size == (160, 192)
    assert cfg.resize_size == loaded.preprocess.with_overrides(input_size=(160, 192)).resize_size


def test_foreign_onnx_file_gets_defaults_and_its_static_size(tmp_path, photo_paths):
    """A file exported by someone else: no labels, no task, ImageNet preprocessing cropped to
    the graph's static input size."""
    path = tmp_path / "foreign.onnx"
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 6)).eval()
    torch.onnx.export(model, (torch.randn(1, 3, 160, 192),), str(path), dynamo=False,
                      input_names=["pixels"], output_names=["scores"],
                      dynamic_axes={"pixels": {0: "n"}, "scores": {0: "n"}})
    loaded = load_onnx_model(path, device="cpu")
    assert (loaded.name, loaded.task, loaded.labels) == ("foreign", None, None)
    default = ti.PreprocessConfig.default()
    assert loaded.preprocess.crop_size == (160, 192)
    assert (loaded.preprocess.mean, loaded.preprocess.std) == (default.mean, default.std)
    result = ClassificationPredictor(loaded, device="cpu", top_k=3)(photo_paths[0])
    assert result.top1.label == str(result.top1.index) and len(result.topk) == 3
    with torch.inference_mode():
        x = torch.randn(2, 3, 160, 192)
        np.testing.assert_allclose(loaded.module(x).numpy(), model(x).numpy(), atol=1e-5)


def test_ort_module_reads_channels_last_input_correctly(exported):
    """The predictor hands over channels_last views; numpy() of one without contiguous() would
    feed ONNX Runtime the pixels in NHWC order."""
    loaded, _, path, _ = exported("mobilenet_v3_small")
    module = load_onnx_model(path, device="cpu").module
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        expected = loaded.module(x)
    got = module(x.contiguous(memory_format=torch.channels_last))
    # (NHWC read as NCHW would be off by the logits' whole spread, not 1e-3)
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=1e-3)
    assert list(module.parameters()) == [] and module.to("cpu").eval() is module


# --- sessions ---------------------------------------------------------------------------------

def test_session_options_are_deliberate(exported):
    _, _, path, _ = exported("mobilenet_v3_small")
    session = make_session(path)
    options = session.get_session_options()
    assert options.inter_op_num_threads == 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert options.intra_op_num_threads == cores  # every core this process may use
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_session_errors_name_the_problem(tmp_path, monkeypatch):
    with pytest.raises(TorchinferError, match="ONNX file not found: .*missing.onnx"):
        make_session(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf")
    with pytest.raises(TorchinferError, match=r"junk.onnx: onnxruntime cannot load it"):
        make_session(junk)
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(DeviceError, match="onnxruntime-gpu"):
            make_session(junk, device="cuda")
    with pytest.raises(DeviceError, match="unsupported onnxruntime device 'tpu'"):
        make_session(junk, device="tpu")
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # import now fails
    with pytest.raises(MissingExtraError, match=r"torchinfer\[onnx\]"):
        make_session(junk)


# --- the whole registry (slow) ----------------------------------------------------------------

def _all_classifiers() -> list[str]:
    # Every one exports with the TorchScript-based exporter and verifies (torch 2.14,
    # torchvision 0.29, onnxruntime 1.32: 80 of 80), so none is marked xfail. ViTs need the
    # export outside no_grad (see export._torch_export), inception_v3 calibration at 299.
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _calibrated_loaded(arch: str, photographs) -> LoadedModel:
    torch.manual_seed(0)
    loaded = load_model(arch)
    head = [m for m in loaded.module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    if not head.weight.any():  # ViT/Swin-style zero-initialised heads: every logit 0
        nn.init.normal_(head.weight, std=0.01)
    # crops at the model's input size: inception_v3's auxiliary head (run in train mode while
    # measuring BatchNorm statistics) needs 299, efficientnet's statistics differ at 600
    size = max(loaded.preprocess.crop_size or loaded.preprocess.resize_size)
    calibrate(loaded.module, list(photographs.values()), crops_per_image=2, size=size)
    return loaded


@pytest.mark.slow
@pytest.mark.parametrize("arch", _all_classifiers())
def test_every_torchvision_classifier_exports_and_verifies(arch, tmp_path, photographs):
    loaded = _calibrated_loaded(arch, photographs)
    report = export_onnx(loaded, tmp_path / f"{arch}.onnx",
                         verify_inputs=list(photographs.values())[:4])
    assert report.passed, report.summary()
    assert all(c.agreement == 1.0 for c in report.checks)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ("deeplabv3_mobilenet_v3_large", "fcn_resnet50"))
def test_segmenters_export_and_verify(arch, tmp_path, photographs):
    loaded = _calibrated_loaded(arch, photographs)
    images = [photographs[n] for n in ("chelsea.png", "astronaut.png")]
    report = export_onnx(loaded, tmp_path / f"{arch}.onnx", verify_inputs=images)
    assert report.passed, report.summary()
    assert all(c.agreement > 0.999 for c in report.checks)


def test_agreement_counts_a_tie_of_the_reference_as_agreeing():
    from torchinfer.verify import FP16_TOLERANCE, Comparison

    acc = Comparison("logits", FP16_TOLERANCE, "top-1").start(2)
    ref = np.array([[1.0, 1.0 + 1e-9, 0.0], [5.0, 0.0, 0.0]], dtype=np.float32)
    got = np.array([[1.0 + 2e-9, 1.0, 0.0], [0.0, 5.0, 0.0]], dtype=np.float32)
    acc.add(ref, got)
    check = acc.result()
    assert check.decisions == 2 and check.agreement == 0.5  # the tie agrees, the flip does not


# --- torchvision detectors ---------------------------------------------------------------------

@pytest.mark.parametrize("arch,kwargs", [
    ("fasterrcnn_mobilenet_v3_large_320_fpn", {"box_score_thresh": 0.0, "box_detections_per_img": 20}),
    # (random SSDlite weights score every anchor alike: nothing to compare; FCOS's do not tie)
    pytest.param("fcos_resnet50_fpn", {"score_thresh": 0.0, "detections_per_img": 20},
                 marks=pytest.mark.slow),
])
def test_torchvision_detector_exports_verifies_and_predicts_the_same(arch, kwargs, tmp_path,
                                                                      photographs):
    torch.manual_seed(0)
    loaded = load_model(arch, **kwargs)
    images = list(photographs.values())[:2]
    report = export_onnx(loaded, tmp_path / "det.onnx", verify_inputs=images)
    check = report.checks[0]
    assert report.passed and check.agreement_kind == "box" and check.decisions >= 4
    assert report.input_shape == (3, "height", "width")
    torch.save(loaded.module.state_dict(), tmp_path / "det.pth")
    # batch 1: torchvision pads a batch to its largest image, which moves detections near the
    # border of the smaller ones; the file runs each image alone
    on_pth = ti.load("detect", arch, tmp_path / "det.pth", device="cpu", conf=0.0,
                     model_kwargs=kwargs, batch_size=1)(images)
    on_onnx = ti.load("detect", str(tmp_path / "det.onnx"), device="cpu", conf=0.0)(images)
    from torchinfer.exporters.detectors import _match

    for a, b in zip(on_pth, on_onnx):  # as sets: random weights tie scores, order is free
        assert len(a) == len(b) > 0
        matched, counted, box_err, _, miss = _match([a.boxes, a.class_ids, a.scores],
                                                    [b.boxes, b.class_ids, b.scores])
        assert matched == counted > 0 and box_err < 0.05, miss


def test_a_detector_export_that_drops_boxes_fails_verification(tmp_path, photographs):
    from torchinfer.exporters.detectors import _match

    ref = [np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32), np.array([1, 2]),
           np.array([0.9, 0.8], np.float32)]
    got = [ref[0][:1], ref[1][:1], ref[2][:1]]
    matched, counted, _, _, miss = _match(ref, got)
    assert (matched, counted) == (1, 2) and "detection 1 (label 2" in miss


# --- TorchScript and onnxsim -------------------------------------------------------------------

def test_torchscript_export_verifies_and_runs_by_path(calibrated, tmp_path, photo_paths):
    _, weights = calibrated("mobilenet_v3_small")
    report = ti.export("mobilenet_v3_small", tmp_path / "m.pt", weights, format="torchscript")
    assert report.passed and report.format == "torchscript"
    assert [(c.batch_size, c.agreement_kind) for c in report.checks] == [(1, "top-1"), (4, "top-1")]
    assert "TorchScript" in report.summary()
    on_pt = ti.load("classify", str(tmp_path / "m.pt"), device="cpu")
    assert on_pt.model.task == "classify" and on_pt.model.name == "mobilenet_v3_small"
    assert on_pt.model.labels[:2] == ["tench", "goldfish"]
    on_pth = ti.load("classify", "mobilenet_v3_small", weights, device="cpu")
    assert on_pt.model.preprocess == on_pth.model.preprocess
    assert [r.top1.index for r in on_pt(photo_paths)] == [r.top1.index for r in on_pth(photo_paths)]


def test_torchscript_export_that_froze_the_batch_fails(tmp_path, photographs):
    loaded = LoadedModel(module=FrozenBatch().eval(), name="frozen_batch", task="classify",
                         preprocess=ti.PreprocessConfig.default(), labels=None, weights=None)
    from torchinfer.exporters.torchscript import export_torchscript

    with pytest.raises(ExportVerificationError, match="TorchScript file failed on input shape"):
        export_torchscript(loaded, tmp_path / "f.pt", verify_inputs=list(photographs.values())[:4])
    assert not (tmp_path / "f.pt").exists() and (tmp_path / "f.unverified.pt").exists()


def test_simplified_onnx_is_verified(calibrated, tmp_path):
    pytest.importorskip("onnxsim")
    _, weights = calibrated("mobilenet_v3_small")
    plain = ti.export("mobilenet_v3_small", tmp_path / "plain.onnx", weights)
    simple = ti.export("mobilenet_v3_small", tmp_path / "simple.onnx", weights, simplify=True)
    assert simple.passed
    nodes = [len(onnx.load(str(tmp_path / f)).graph.node) for f in ("plain.onnx", "simple.onnx")]
    assert nodes[1] <= nodes[0]
    assert _metadata(tmp_path / "simple.onnx")["task"] == "classify"
    assert plain.passed
