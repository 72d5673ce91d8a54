"""The backend interface and its registry: every backend through the interface (available or
skipped with its reason, verified, its threads set), OpenVINO against eager, bf16 measured
only where the CPU has it, an IR file by path, a third-party backend by entry point, and the
memo's cheap stamp."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import torchinfer as ti
from torchinfer.cli.app import app, run
from torchinfer.runner.streamer import size_session
from torchinfer.runtime import memo, registry, select
from torchinfer.runtime.backend import Backend, BuildRequest
from torchinfer.runtime.candidates import Candidate, build, verify
from torchinfer.runtime.select import candidate_pairs, verification_batches
from torchinfer.testing import photograph_paths

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _the_default_unpinned(monkeypatch):
    """These tests are about the default itself: the suite's pin to eager fp32 is lifted."""
    monkeypatch.delenv("TORCHINFER_BACKEND", raising=False)
    monkeypatch.delenv("TORCHINFER_PRECISION", raising=False)


@pytest.fixture
def clean_registry():
    yield
    registry.forget_plugins()


def top1(results):
    return [r.top1.index for r in results]


def _eager(path):
    return ti.load("classify", "mobilenet_v3_small", path, device="cpu", backend="torch",
                   precision="fp32")


@pytest.mark.parametrize("name", registry.BUILT_IN)
def test_each_backend_through_the_interface(name, tiny_classifier_weights):
    """Available or skipped with its reason; built for the model; verified against eager
    float32 on the photographs; its threads set as the streamer's plan says."""
    backend = registry.get_backend(name)
    if (missing := backend.unavailable()) is not None:
        pytest.skip(f"backend {name}: {missing}")
    _, path = tiny_classifier_weights
    eager = _eager(path)
    batches = verification_batches(eager)
    example = batches[0].contiguous() if backend.layout == "NCHW" else batches[0]
    assert "fp32" in backend.precisions(CPU)
    request = BuildRequest(eager.model, eager.module, "classify", "fp32", CPU, example,
                           memo.model_stamp(eager.model, "classify",
                                            memo.source_stamp("mobilenet_v3_small", path)))
    candidate = verify(build(request, name), eager.module, batches, "classify")
    assert candidate.usable, candidate.error or candidate.check.describe()
    if name != "torch":  # the reference is not compared with itself
        assert candidate.check.agreement == 1.0
    # threads: a runtime with its own pool is sized by the plan, torch keeps to one around it
    torch_threads = size_session(candidate.module, 1)
    if hasattr(candidate.module, "set_threads"):
        assert torch_threads == 1
        threads = getattr(candidate.module, "compiled_threads", lambda: candidate.module.threads)
        assert threads() == 1
    else:
        assert torch_threads == 1 and backend.layout is None


def test_openvino_fp32_answers_within_the_fp32_tolerance_of_eager(tiny_classifier_weights,
                                                                   photographs):
    pytest.importorskip("openvino")
    _, path = tiny_classifier_weights
    images = list(photographs.values())
    ov = ti.load("classify", "mobilenet_v3_small", path, device="cpu", backend="openvino",
                 precision="fp32", memo=False)
    check = ov.backend_report.chosen.check
    assert check.passed and check.max_abs_error < 1e-3 and check.agreement == 1.0
    a = np.array([[c.score for c in r.topk] for r in _eager(path)(images)])
    b = np.array([[c.score for c in r.topk] for r in ov(images)])
    assert top1(_eager(path)(images)) == top1(ov(images))
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("native", [False, True])
def test_bf16_is_a_candidate_only_where_the_cpu_runs_it(native, monkeypatch):
    monkeypatch.setattr(select, "native_bf16", lambda: native)
    pairs = candidate_pairs("auto", "auto", CPU)
    assert ("torch", "fp32") in pairs and ("torchscript", "fp32") in pairs
    bf16 = {b for b, p in pairs if p == "bf16"}
    assert bf16 == ({"torch", "torchscript"} | (
        {"openvino"} if ("openvino", "fp32") in pairs and
        "bf16" in registry.get_backend("openvino").precisions(CPU) else set())
        if native else set())
    # a pinned precision is measured across backends whatever the CPU; fp32 pinned: no bf16
    assert {p for _, p in candidate_pairs("auto", "fp32", CPU)} == {"fp32"}


class _Rolled(nn.Module):
    """A model's logits with their classes rotated: fast, and wrong."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).roll(1, dims=1)


class _FastButWrong(Backend):
    """A backend whose bf16 is free and computes something else."""

    name = "fastbutwrong"

    def precisions(self, device):
        return ("fp32", "bf16")

    def build(self, request: BuildRequest) -> nn.Module:
        if request.precision == "bf16":
            return _Rolled(lambda x: torch.zeros(len(x), 10).index_fill_(1, torch.tensor([3]), 9.))
        return request.module


def test_a_faster_bf16_that_disagrees_is_never_chosen(tiny_classifier_weights, monkeypatch,
                                                      clean_registry):
    monkeypatch.setattr(select, "native_bf16", lambda: True)
    registry.register_backend(_FastButWrong)
    _, path = tiny_classifier_weights
    p = ti.load("classify", "mobilenet_v3_small", path, device="cpu", backend="fastbutwrong")
    p.prepare()
    report = p.backend_report
    labels = {c.label: c for c in report.candidates}
    assert set(labels) == {"fastbutwrong/fp32", "fastbutwrong/bf16"}
    assert not labels["fastbutwrong/bf16"].usable
    assert "agreement" in labels["fastbutwrong/bf16"].check.describe()
    assert report.chosen.label == "fastbutwrong/fp32"


def test_an_openvino_ir_runs_by_its_path(tmp_path, shapes_images):
    pytest.importorskip("openvino")
    xml = tmp_path / "shapes.xml"
    report = ti.export("shapes_classifier", xml, format="openvino")
    assert report.passed and report.format == "openvino" and xml.with_suffix(".bin").is_file()
    eager = ti.load("classify", "shapes_classifier", device="cpu", backend="torch",
                    precision="fp32")
    by_path = ti.load("classify", xml, device="cpu")
    assert by_path.model.labels == eager.model.labels
    assert by_path.model.preprocess == eager.model.preprocess
    got = by_path(shapes_images)
    assert by_path.backend_report.chosen.backend == "openvino"  # its own backend only
    assert top1(got) == top1(eager(shapes_images))
    # the command line, with no flags but the task
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["predict", "classify", str(photograph_paths()[0]),
                                      "-m", str(xml), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"]["chosen"].startswith("openvino/")


def test_an_ir_without_its_weights_is_one_line(tmp_path, capsys):
    pytest.importorskip("openvino")
    xml = tmp_path / "lonely.xml"
    xml.write_text("<net/>")
    code = run(["predict", "classify", str(photograph_paths()[0]), "-m", str(xml),
                "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "lonely.bin is missing" in err and len(err.strip().splitlines()) == 1


PLUGIN = '''
import torch
from torchinfer.runtime.backend import Backend


class Counted(torch.nn.Module):
    """The model as it is, counting its calls (so the test sees it ran)."""
    calls = 0

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        Counted.calls += 1
        return self.model(x)


class EchoBackend(Backend):
    name = "echo"

    def precisions(self, device):
        return ("fp32",)

    def build(self, request):
        return Counted(request.module)
'''


def test_a_third_party_backend_joins_through_its_entry_point(tmp_path, monkeypatch,
                                                            clean_registry):
    """A package in a temporary folder declares ``torchinfer.backends``; ``--backend echo``
    runs it, and ``auto`` measures it with the built-in ones, with no change here."""
    site = tmp_path / "site"
    (site / "echo_backend").mkdir(parents=True)
    (site / "echo_backend" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "echo_backend-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-backend\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[torchinfer.backends]\necho = echo_backend:EchoBackend\n")
    monkeypatch.syspath_prepend(str(site))
    registry.forget_plugins()
    assert "echo" in registry.backend_names()
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["predict", "classify", str(photograph_paths()[0]),
                                      "-m", "shapes_classifier", "--backend", "echo",
                                      "--precision", "fp32", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"]["chosen"] == "echo/fp32"
    import echo_backend

    assert echo_backend.Counted.calls > 0
    assert ("echo", "fp32") in candidate_pairs("auto", "fp32", CPU)
    with pytest.raises(registry.BackendError, match="unknown backend 'ech'.*echo"):
        registry.get_backend("ech")


def test_the_stamp_reads_two_mib_of_any_file(tmp_path, monkeypatch):
    """The memo's key never hashes every weight: of a 600 MB file it reads the first and
    the last MiB, and it changes when the file does; an IR's stamp covers its .bin."""
    big = tmp_path / "big.safetensors"
    with open(big, "wb") as f:
        f.truncate(600 * 2**20)  # sparse: no disk used
    read = []
    real_open = open

    class Counting:
        def __init__(self, *args, **kwargs):
            self.f = real_open(*args, **kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def read(self, n=-1):
            data = self.f.read(n)
            read.append(len(data))
            return data

        def seek(self, *args):
            return self.f.seek(*args)

    monkeypatch.setattr(memo, "open", Counting, raising=False)
    before = memo.file_stamp(big)
    assert sum(read) == 2 * memo.EDGE_BYTES
    with real_open(big, "r+b") as f:
        f.seek(-10, 2)
        f.write(b"changed...")
    assert memo.file_stamp(big) != before
    xml = tmp_path / "m.xml"
    xml.write_text("<net/>")
    xml.with_suffix(".bin").write_bytes(b"1")
    first = memo.source_stamp(xml, None)
    xml.with_suffix(".bin").write_bytes(b"2")
    assert memo.source_stamp(xml, None) != first
    assert memo.source_stamp("resnet18", "IMAGENET1K_V1") == "torchvision:resnet18:IMAGENET1K_V1"


def test_a_model_with_no_file_is_never_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINFER_CACHE", str(tmp_path))
    p = ti.load("classify", "mobilenet_v3_small", device="cpu", num_classes=10,
                precision="fp32", backend="torchscript")
    assert memo.source_stamp("mobilenet_v3_small", None) is None
    p.prepare()
    assert not (tmp_path / "memo").exists()


def test_the_cli_and_the_library_share_one_default(tmp_path, monkeypatch):
    """``predict`` with no flags and ``ti.load`` with no backend get the same choice, the
    second recalled from the first."""
    monkeypatch.setenv("TORCHINFER_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["predict", "classify",
                                      *map(str, photograph_paths()), "-m",
                                      "shapes_classifier", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    chosen = json.loads((out / "summary.json").read_text())["backend"]["chosen"]
    library = ti.load("classify", "shapes_classifier")
    library.prepare()
    assert library.backend_report.chosen.label == chosen
    assert "remembered" in library.backend_report.reason


def test_an_unknown_precision_or_backend_is_refused_at_once():
    for kwargs, message in (({"precision": "int4"}, "unknown precision 'int4'"),
                            ({"backend": "tensorrt"}, "unknown backend 'tensorrt'")):
        with pytest.raises(registry.BackendError, match=message):
            ti.load("classify", "shapes_classifier", **kwargs)


def test_a_remembered_refusal_is_not_built_again(tiny_classifier_weights, tmp_path,
                                                 monkeypatch, clean_registry):
    monkeypatch.setenv("TORCHINFER_CACHE", str(tmp_path))
    monkeypatch.setattr(select, "native_bf16", lambda: True)
    registry.register_backend(_FastButWrong)
    _, path = tiny_classifier_weights
    ti.load("classify", "mobilenet_v3_small", path, device="cpu",
            backend="fastbutwrong").prepare()
    built = []
    monkeypatch.setattr(_FastButWrong, "build",
                        lambda self, request: built.append(request.precision) or request.module)
    again = ti.load("classify", "mobilenet_v3_small", path, device="cpu",
                    backend="fastbutwrong", batch_size=2)  # another batch: timed again
    again.prepare()
    assert built == ["fp32"]  # bf16's refusal was remembered, not rebuilt
    refused = {c.label: c for c in again.backend_report.candidates}["fastbutwrong/bf16"]
    assert not refused.usable and refused.remembered
    assert isinstance(again.backend_report.chosen, Candidate)


def test_int8_is_a_candidate_only_with_calibration_images(tmp_path, monkeypatch):
    """OpenVINO int8 (NNCF's post-training quantisation on the user's pictures) is built only
    with a calibration folder, verified like every candidate, and its verdict names it."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    monkeypatch.setenv("TORCHINFER_CACHE", str(tmp_path / "cache"))
    assert "int8" not in {p for _, p in candidate_pairs("auto", "auto", CPU)}
    assert ("openvino", "int8") in candidate_pairs("auto", "auto", CPU, calibrated=True)
    with pytest.raises(registry.BackendError, match="int8 needs calibration images"):
        ti.load("classify", "shapes_classifier", backend="openvino", precision="int8")
    folder = tmp_path / "calibration"
    folder.mkdir()
    from torchinfer.datasets import shapes as ds

    for i in range(16):
        ds.generate_scene(ds.scene_rng(777, i), 128).image.save(folder / f"{i}.png")
    p = ti.load("classify", "shapes_classifier", calibration=folder, precision="fp32",
                backend="openvino")  # fp32 pinned: int8 not even built
    assert p.backend_report.chosen.label == "openvino/fp32"
    q = ti.load("classify", "shapes_classifier", calibration=folder)
    q.prepare()
    int8 = {c.label: c for c in q.backend_report.candidates}["openvino/int8"]
    assert int8.error is None and int8.check is not None  # quantised, then verified
    assert int8.check.agreement_kind == "top-1"
    assert list((tmp_path / "cache" / "openvino").glob("*int8*.xml"))  # kept for next time
    if not int8.check.passed:  # out-of-domain photographs may flip: then never chosen
        assert q.backend_report.chosen.label != "openvino/int8"
    with pytest.raises(registry.BackendError, match="not a folder"):
        ti.load("classify", "shapes_classifier", calibration=tmp_path / "nope").prepare()


def test_an_ir_that_differs_is_kept_aside_and_nothing_is_left_at_the_path(tmp_path,
                                                                          monkeypatch):
    pytest.importorskip("openvino")
    from torchinfer.exporters.common import ExportVerificationError
    from torchinfer.verify import Tolerance

    xml = tmp_path / "shapes.xml"
    ti.export("shapes_classifier", xml, format="openvino")  # an older, verified export
    monkeypatch.setattr("torchinfer.exporters.openvino.FP32_TOLERANCE",
                        Tolerance(atol=0.0, rtol=0.0, min_agreement=1.0))
    with pytest.raises(ExportVerificationError, match="unverified.xml"):
        ti.export("shapes_classifier", xml, format="openvino")
    assert not xml.exists() and not xml.with_suffix(".bin").exists()
    kept = tmp_path / "shapes.unverified.xml"
    assert kept.is_file() and kept.with_suffix(".bin").is_file()
