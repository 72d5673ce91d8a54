"""A model file is untrusted input: whatever its metadata or pickle says, nothing in it runs
unless the user opted in (``trust_code`` / ``trust_pickle``).

Each malicious file names a callable that would create a sentinel file; the sentinel must not
appear. A positive control (the same file with ``trust_code=True``) proves the sentinel would
have caught it.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import torchinfer as ti
from torchinfer.models import load_model, register_model
from torchinfer.models.registry import registered_model

# Callables a file might name, each with JSON arguments that would create the sentinel.
ATTACKS = {
    "os:system": lambda sentinel: {"command": f"touch {sentinel}"},
    "subprocess:getoutput": lambda sentinel: {"cmd": f"touch {sentinel}"},
    "subprocess:run": lambda sentinel: {"args": ["touch", str(sentinel)]},
    "pathlib:Path.touch": lambda sentinel: {"self": str(sentinel)},
}


class _Tiny(nn.Module):
    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.fc = nn.Conv2d(3, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).mean((2, 3))


def _safetensors(path: Path, architecture: str, kwargs: dict) -> Path:
    save_file(_Tiny().state_dict(), path, metadata={
        "architecture": architecture, "model_kwargs": json.dumps(kwargs), "task": "classify",
        "labels": json.dumps(["a", "b", "c"])})
    return path


@pytest.mark.parametrize("callable_name", sorted(ATTACKS))
def test_safetensors_naming_any_callable_is_refused(tmp_path, callable_name):
    sentinel = tmp_path / "pwned"
    path = _safetensors(tmp_path / "evil.safetensors", callable_name, ATTACKS[callable_name](sentinel))
    for attempt in (lambda: load_model(path), lambda: ti.load("classify", path),
                    lambda: ti.inspect(path)):
        with pytest.raises(ti.UntrustedCodeError) as info:
            attempt()
        message = str(info.value)
        assert callable_name in message and "--trust-code" in message and "trust_code=True" in message
    assert not sentinel.exists()


def test_positive_control_trust_code_does_run_it(tmp_path):
    """With the opt-in the file's factory is imported and called: the sentinel proves it."""
    sentinel = tmp_path / "pwned"
    path = _safetensors(tmp_path / "evil.safetensors", "subprocess:run",
                        ATTACKS["subprocess:run"](sentinel))
    with pytest.raises(ti.TorchinferError):  # it runs, then is not an nn.Module
        load_model(path, trust_code=True)
    assert sentinel.exists()


def test_cli_refuses_with_one_line_and_exit_2(tmp_path):
    sentinel = tmp_path / "pwned"
    path = _safetensors(tmp_path / "evil.safetensors", "os:system", ATTACKS["os:system"](sentinel))
    for args in (["inspect", str(path)],
                 ["predict", "classify", str(path), "-m", str(path), "--out", str(tmp_path / "o")]):
        proc = subprocess.run([sys.executable, "-m", "torchinfer", *args], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "os:system" in proc.stderr and "--trust-code" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not sentinel.exists()


def test_onnx_and_torchscript_metadata_never_name_code(tmp_path):
    """Files that carry the whole graph: an ``architecture`` in their metadata is never
    imported, whatever it says."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    sentinel = tmp_path / "pwned"
    evil = {"architecture": "os:system", "model_kwargs": json.dumps({"command": f"touch {sentinel}"})}
    model = _Tiny().eval()
    onnx_path = tmp_path / "evil.onnx"
    torch.onnx.export(model, (torch.rand(1, 3, 8, 8),), onnx_path, dynamo=False,
                      input_names=["images"], output_names=["logits"])
    graph = onnx.load(str(onnx_path))
    for key, value in {**evil, "task": "classify"}.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(onnx_path))
    ts_path = tmp_path / "evil.pt"
    torch.jit.save(torch.jit.trace(model, torch.rand(1, 3, 8, 8)), str(ts_path),
                   _extra_files={"torchinfer.json": json.dumps({**evil, "task": "classify"})})
    for path in (onnx_path, ts_path):
        loaded = load_model(path)
        assert loaded.task == "classify"
        out = ti.load("classify", path, input_size=8, device="cpu")(torch.rand(3, 16, 16))
        assert out.ok
    assert not sentinel.exists()


def test_refused_pickle_names_what_it_would_call(tmp_path):
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    zipped = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "x": Evil()}, zipped)
    raw = tmp_path / "evil_raw.pt"
    raw.write_bytes(pickle.dumps(Evil(), protocol=2))
    for path in (zipped, raw):
        with pytest.raises(ti.UntrustedCodeError,
                           match=r"refused: the pickle would call posix\.system; pickled files "
                                 r"can run code.*--trust-pickle"):
            load_model("mobilenet_v3_small", path)
    assert not sentinel.exists()


def test_model_kwargs_from_a_file_are_data_only(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file(_Tiny().state_dict(), path, metadata={"architecture": "mobilenet_v3_small",
                                                   "model_kwargs": "[1, 2]"})
    with pytest.raises(ti.WeightsError, match="must be a JSON object"):
        load_model(path)
    save_file(_Tiny().state_dict(), path, metadata={"architecture": "mobilenet_v3_small",
                                                   "model_kwargs": '{"weights": "DEFAULT"}'})
    with pytest.raises(ti.WeightsError, match="asks for weights.*never downloaded"):
        load_model(path)


def test_metadata_cannot_make_a_memory_bomb(tmp_path):
    """An allow-listed builder asked for a huge head is sized on meta and refused."""
    path = tmp_path / "m.safetensors"
    save_file(_Tiny().state_dict(), path, metadata={
        "architecture": "mobilenet_v3_small", "model_kwargs": json.dumps({"num_classes": 10**9})})
    with pytest.raises(ti.WeightsError, match="refused before allocating it"):
        load_model(path)


def test_registered_models_are_trusted_by_name_and_path(tmp_path):
    @register_model("test_only_tiny_net", task="classify")
    def tiny_net(num_classes: int = 3) -> nn.Module:
        return _Tiny(num_classes)

    entry = registered_model("test_only_tiny_net")
    assert entry is not None and entry.task == "classify"
    assert registered_model(entry.import_path) is entry
    for architecture in ("test_only_tiny_net", entry.import_path):
        path = _safetensors(tmp_path / "ok.safetensors", architecture, {"num_classes": 3})
        assert ti.load("classify", path, device="cpu").model.labels == ["a", "b", "c"]
    built = load_model("test_only_tiny_net")  # typed by name
    assert built.task == "classify" and isinstance(built.module, _Tiny)
    with pytest.raises(ValueError, match="already registered"):
        register_model("test_only_tiny_net")(tiny_net)
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet50")(tiny_net)  # torchvision's names are taken too


def test_a_factory_the_user_types_stays_allowed():
    loaded = load_model("torchinfer.models.shapes:shapes_classifier")
    assert isinstance(loaded.module, nn.Module)


def test_a_file_naming_a_torchvision_detector_downloads_nothing(tmp_path, monkeypatch):
    """Segmentation and detection builders download a backbone by default: built from a file,
    they are asked for none."""
    asked = []
    monkeypatch.setattr("torchvision.models._api.WeightsEnum.get_state_dict",
                        lambda self, *a, **k: asked.append(str(self)) or {})
    path = tmp_path / "m.safetensors"
    save_file({"x": torch.zeros(1)}, path, metadata={"architecture": "lraspp_mobilenet_v3_large"})
    with pytest.raises(ti.WeightsError):  # its tensors do not fit: refused, nothing fetched
        load_model(path)
    assert asked == []


def test_an_architecture_that_cannot_be_sized_first_is_not_built(tmp_path):
    """torchvision's RegNets do not build on the meta device: from a file, without trust_code,
    they are refused before any memory is taken."""
    path = tmp_path / "m.safetensors"
    save_file({"x": torch.zeros(1)}, path, metadata={"architecture": "regnet_y_128gf"})
    with pytest.raises(ti.WeightsError, match="cannot be sized before it is built.*--trust-code"):
        load_model(path)


def test_sizes_a_file_asks_for_are_bounded(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"x": torch.zeros(1)}, path, metadata={
        "architecture": "fasterrcnn_mobilenet_v3_large_320_fpn",
        "model_kwargs": json.dumps({"min_size": 50_000, "max_size": 50_000})})
    with pytest.raises(ti.WeightsError, match="image sizes .*at most 8192"):
        load_model(path)
    save_file(_Tiny().state_dict(), path, metadata={
        "architecture": "mobilenet_v3_small",
        "preprocess": json.dumps({"resize_size": [60000, 60000], "crop_size": None,
                                  "mean": [0.5] * 3, "std": [0.2] * 3})})
    with pytest.raises(ti.TorchinferError, match="up to 8192 pixels"):
        load_model(path)
