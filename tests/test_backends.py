"""Backends and precisions: each candidate computes what float32 PyTorch computes on the
photographs or is refused with what differs; ONNX Runtime exports once per model + weights;
auto keeps the fastest it measured and remembers it; bench and view. (The backend interface,
the registry, OpenVINO and bf16 by CPU: test_runtimes.py.)"""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")

import torchinfer as ti  # noqa: E402
from torchinfer.cli.app import app  # noqa: E402
from torchinfer.errors import MissingExtraError  # noqa: E402
from torchinfer.runtime import candidates as runtime  # noqa: E402
from torchinfer.runtime.backend import BackendError  # noqa: E402
from torchinfer.runtime.select import verification_batches  # noqa: E402
from torchinfer.testing import photograph_paths  # noqa: E402
from torchinfer.tools.bench import bench  # noqa: E402


@pytest.fixture(autouse=True)
def _the_default_unpinned(monkeypatch):
    """These tests are about the default itself: the suite's pin to eager fp32 is lifted."""
    monkeypatch.delenv("TORCHINFER_BACKEND", raising=False)
    monkeypatch.delenv("TORCHINFER_PRECISION", raising=False)


def top1(results):
    return [r.top1.index for r in results]


@pytest.mark.parametrize("backend", ["torchscript", "onnxruntime"])
def test_backend_gives_torch_answers_and_reports_its_check(backend, tiny_classifier_weights,
                                                          photographs):
    _, path = tiny_classifier_weights
    images = list(photographs.values())
    eager = ti.load("classify", "mobilenet_v3_small", path, device="cpu", backend="torch",
                    precision="fp32")
    other = ti.load("classify", "mobilenet_v3_small", path, device="cpu", backend=backend,
                    precision="fp32")
    report = other.backend_report
    assert report.chosen.label == f"{backend}/fp32" and report.chosen.check.passed
    assert report.chosen.check.agreement == 1.0 and report.chosen.check.decisions == 8
    assert top1(other(images)) == top1(eager(images))
    a = np.array([[c.score for c in r.topk] for r in eager(images)])
    b = np.array([[c.score for c in r.topk] for r in other(images)])
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_onnxruntime_backend_exports_once_per_weights(tiny_classifier_weights, tmp_path,
                                                      monkeypatch):
    monkeypatch.setenv("TORCHINFER_CACHE", str(tmp_path / "cache"))
    _, path = tiny_classifier_weights
    ti.load("classify", "mobilenet_v3_small", path, device="cpu", backend="onnxruntime",
            precision="fp32", memo=False)
    files = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    ti.load("classify", "mobilenet_v3_small", path, device="cpu", backend="onnxruntime",
            precision="fp32", memo=False)
    assert files[0].stat().st_mtime_ns == stamp  # reused, not exported again
    # other weights (one value changed) are another file
    state = torch.load(path, weights_only=True)
    state["classifier.3.bias"][0] += 1.0
    torch.save(state, tmp_path / "changed.pth")
    ti.load("classify", "mobilenet_v3_small", tmp_path / "changed.pth", device="cpu",
            backend="onnxruntime", precision="fp32")
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 2


class _Wrong(nn.Module):
    """The model with its logits' classes rotated: close in values, different answers."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).roll(1, dims=1)


def test_a_candidate_that_differs_is_refused_with_what_differs(tiny_classifier_weights):
    model, path = tiny_classifier_weights
    predictor = ti.load("classify", "mobilenet_v3_small", path, device="cpu", backend="torch",
                        precision="fp32")
    batches = verification_batches(predictor)
    candidate = runtime.Candidate("torchscript", "bf16", _Wrong(predictor.module))
    runtime.verify(candidate, predictor.module, batches, "classify")
    assert not candidate.usable
    message = runtime.refusal(candidate)
    assert "does not compute what the float32 model computes" in message
    assert "top-1 agreement" in message and "agreement >= 95%" in message


def test_reduced_precision_is_verified_or_refused(tiny_classifier_weights):
    _, path = tiny_classifier_weights
    try:
        p = ti.load("classify", "mobilenet_v3_small", path, device="cpu", backend="torch",
                    precision="bf16")
    except BackendError as exc:  # calibrated random weights may flip a top-1
        assert "torch/bf16" in str(exc) and "agreement" in str(exc)
    else:
        check = p.backend_report.chosen.check
        assert check.passed and check.agreement >= 0.95
    unverified = ti.load("classify", "mobilenet_v3_small", path, device="cpu", precision="bf16",
                         backend="torchscript", verify_backend=False)
    assert unverified.backend_report.chosen.check is None
    assert "not verified" in unverified.backend_report.reason
    with pytest.raises(BackendError, match="fp16 on the CPU"):
        ti.load("classify", "mobilenet_v3_small", path, device="cpu", backend="torch",
                precision="fp16")
    with pytest.raises(BackendError, match="unknown backend"):
        ti.load("classify", "mobilenet_v3_small", path, device="cpu", backend="tensorflow")


def test_auto_keeps_the_fastest_verified_candidate(tiny_classifier_weights, photographs):
    _, path = tiny_classifier_weights
    images = list(photographs.values())
    auto = ti.load("classify", "mobilenet_v3_small", path, device="cpu", precision="fp32")
    assert auto.backend_report is None and auto.preparation is not None  # loading only loads
    results = auto(images)  # prepared before the first batch
    report = auto.backend_report
    measured = [c for c in report.candidates if c.ms_per_image is not None]
    assert {"torch", "torchscript", "onnxruntime"} <= {c.backend for c in measured}
    assert {c.precision for c in report.candidates} == {"fp32"}
    assert report.chosen.ms_per_image == min(c.ms_per_image for c in measured)
    assert report.reason.startswith("fastest on a batch of 4 photographs")
    eager = ti.load("classify", "mobilenet_v3_small", path, device="cpu", backend="torch",
                    precision="fp32")
    assert top1(results) == top1(eager(images))


def test_torchvision_detectors_stay_on_torch():
    with pytest.raises(BackendError, match="torchvision detectors take a list"):
        ti.load("detect", "ssdlite320_mobilenet_v3_large", device="cpu", backend="torchscript")


def test_raw_detector_on_onnxruntime_gives_the_same_boxes():
    from test_detect import RedBoxOracle, scene

    eager = ti.load("detect", RedBoxOracle("yolov8"), device="cpu", labels=["a", "b", "red"],
                    backend="torch", precision="fp32")
    ort = ti.load("detect", RedBoxOracle("yolov8"), device="cpu", labels=["a", "b", "red"],
                  backend="onnxruntime", precision="fp32")
    assert ort.backend_report.chosen.check.passed
    a, b = eager(scene()), ort(scene())
    assert a.labels == b.labels
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)


def test_segmenter_on_torchscript_gives_the_same_masks(calibrated, photographs):
    _, path = calibrated("lraspp_mobilenet_v3_large", num_classes=21, weights_backbone=None)
    images = list(photographs.values())[:3]
    eager = ti.load("segment", "lraspp_mobilenet_v3_large", path, device="cpu",
                    backend="torch", precision="fp32")
    ts = ti.load("segment", "lraspp_mobilenet_v3_large", path, device="cpu",
                 backend="torchscript", precision="fp32")
    check = ts.backend_report.chosen.check
    assert check.passed and check.agreement_kind == "pixel" and check.agreement > 0.999
    for a, b in zip(eager(images), ts(images)):
        assert (a.mask == b.mask).mean() > 0.999


def test_bench_measures_every_configuration_in_one_run(tiny_classifier_weights, photographs):
    _, path = tiny_classifier_weights
    report = bench("classify", "mobilenet_v3_small", path, backends=["torch", "torchscript"],
                   precisions=["fp32", "fp16"], batches=[1, 2], device="cpu", images=4, rounds=1,
                   sample=list(photographs.values())[:2])
    rows = {(r.backend, r.precision, r.batch): r for r in report.rows}
    assert set(rows) == {(b, p, n) for b in ("torch", "torchscript") for p in ("fp32", "fp16")
                         for n in (1, 2)}
    assert rows[("torch", "fp32", 1)].vs_torch_fp32 == 1.0
    ok = rows[("torchscript", "fp32", 2)]
    assert ok.images_per_second > 0 and ok.inference_ms > 0 and ok.vs_torch_fp32 > 0
    assert "fp16 on the CPU" in rows[("torch", "fp16", 1)].error
    json.dumps(report.to_dict())


def test_cli_predict_with_a_backend_records_it(tiny_classifier_weights, photo_paths, tmp_path):
    _, path = tiny_classifier_weights
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["predict", "classify", str(photo_paths[0]), "-m",
                                      "mobilenet_v3_small", "-w", str(path), "--device", "cpu",
                                      "--backend", "torchscript", "--precision", "fp32",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"]["chosen"] == "torchscript/fp32"
    assert summary["backend"]["candidates"][0]["passed"] is True


def test_view_serves_an_export_in_netron(tiny_classifier_weights, monkeypatch):
    _, path = tiny_classifier_weights
    calls = []
    fake = types.SimpleNamespace(start=lambda file, address, browse: calls.append(
        (file, address, browse)) or address)
    monkeypatch.setitem(sys.modules, "netron", fake)
    from torchinfer.tools.viewer import serve

    url = serve("mobilenet_v3_small", str(path), port=8123, browse=False)
    assert url == "http://localhost:8123"
    served, address, browse = calls[0]
    assert served.endswith(".onnx") and address == ("localhost", 8123) and browse is False
    serve("mobilenet_v3_small", str(path), port=8123, browse=False)
    assert calls[1][0] == served  # exported once
    monkeypatch.setitem(sys.modules, "netron", None)  # not installed
    with pytest.raises(MissingExtraError, match="view"):
        serve(served)


def test_verification_needs_no_test_dependency(monkeypatch, tiny_classifier_weights):
    """Without scikit-image, exports and backends verify on the photographs torchinfer ships."""
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    from torchinfer.testing import load_photographs

    assert sorted(load_photographs()) == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"]
    _, path = tiny_classifier_weights
    p = ti.load("classify", "mobilenet_v3_small", path, device="cpu", backend="torchscript",
                precision="fp32", memo=False)
    assert p.backend_report.chosen.check.decisions == 4


def test_the_default_is_measured_before_the_first_batch_and_remembered(monkeypatch, tmp_path):
    """The default (auto): loading measures nothing; the first batch measures, verifies and
    chooses; a later load of the same file recalls the choice and builds only it."""
    monkeypatch.setenv("TORCHINFER_CACHE", str(tmp_path))
    first = ti.load("classify", "shapes_classifier", device="cpu")
    assert first.backend_report is None and first.preparation is not None
    assert not (tmp_path / "memo").exists() and not (tmp_path / "onnx").exists()
    photos = [str(p) for p in photograph_paths()]
    answers = [r.top1.label for r in first(photos)]
    chosen = first.backend_report.chosen.label
    assert first.backend_report.reason.startswith("fastest on a batch of")
    assert all(c.remembered is None for c in first.backend_report.candidates)
    kept = list((tmp_path / "memo").glob("*.json"))
    assert len(kept) == 1
    memo = json.loads(kept[0].read_text())
    assert memo["choices"]["auto/auto/batch 4"]["chosen"] == chosen
    assert "x2" in memo["decode"]  # the reduced decode's verdict is kept beside it
    later = ti.load("classify", "shapes_classifier", device="cpu")
    later.prepare()
    report = later.backend_report
    assert report.chosen.label == chosen and "remembered" in report.reason
    assert [c.label for c in report.candidates] == [chosen]
    assert report.chosen.remembered and "(kept from an earlier check)" in later.decode_report.reason
    assert [r.top1.label for r in later(photos)] == answers
    # another batch size is another measurement
    other = ti.load("classify", "shapes_classifier", device="cpu", batch_size=2)
    other.prepare()
    assert "remembered" not in other.backend_report.reason


def test_no_memo_measures_again_and_keeps_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINFER_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCHINFER_NO_MEMO", "1")
    p = ti.load("classify", "shapes_classifier", device="cpu", precision="fp32",
                backend="torchscript")
    p.prepare()
    assert not (tmp_path / "memo").exists()
    monkeypatch.delenv("TORCHINFER_NO_MEMO")
    q = ti.load("classify", "shapes_classifier", device="cpu", precision="fp32",
                backend="torchscript", memo=False)
    q.prepare()
    assert not (tmp_path / "memo").exists()
