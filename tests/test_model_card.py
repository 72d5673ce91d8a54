"""The ModelCard: one self-description of a model, encoded the same way in safetensors headers,
ONNX metadata and TorchScript archives; files written before it existed read the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import torchinfer as ti
from torchinfer.models import ModelCard, PreprocessConfig, read_weights
from torchinfer.models.card import TORCHSCRIPT_EXTRA_FILE

ASSETS = Path(ti.__file__).parent / "assets"
PREPROCESS = PreprocessConfig(resize_size=(160,), crop_size=(128, 144), mean=(0.5, 0.5, 0.5),
                              std=(0.25, 0.25, 0.25), interpolation="bicubic", antialias=False)
FULL = ModelCard(architecture="torchinfer.models.shapes:shapes_classifier",
                 model_kwargs={"num_classes": 4, "widths": [8, 16]}, task="classify",
                 labels=("circle", "square", "star", "triangle"), preprocess=PREPROCESS,
                 model_name="shapes", input_size=(128, 144), precision="fp16",
                 detector_format="torchvision",
                 versions={"torchinfer": "0.1.0", "torch": "2.5.0", "onnx": "1.17"},
                 extra={"trained_by": "me", "seed": "3"})


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).mean((2, 3))


# --- round trips ------------------------------------------------------------------------------

@pytest.mark.parametrize("card", [FULL, ModelCard(), ModelCard(task="segment", labels=())],
                         ids=["full", "empty", "no-labels"])
def test_every_codec_round_trips(card):
    assert ModelCard.from_safetensors_metadata(card.to_safetensors_metadata(), "m") == card
    assert ModelCard.from_onnx_metadata(card.to_onnx_metadata(), "m") == card
    assert ModelCard.from_torchscript_json(card.to_torchscript_json(), "m") == card


def test_encodings_are_strings_and_keep_the_container_key():
    for meta in (FULL.to_safetensors_metadata(), FULL.to_onnx_metadata(),
                 json.loads(FULL.to_torchscript_json())):
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
        assert meta["torchinfer_version"] == "0.1.0" and meta["torch"] == "2.5.0"
        assert meta["onnx_version"] == "1.17" and meta["trained_by"] == "me"
    assert FULL.to_safetensors_metadata()["format"] == "pt"
    assert json.loads(FULL.to_torchscript_json())["format"] == "torchscript"
    assert "format" not in FULL.to_onnx_metadata()


def test_round_trip_through_real_files(tmp_path):
    card = ModelCard(task="classify", labels=("a", "b", "c", "d"), preprocess=PREPROCESS,
                     model_name="tiny", versions={"torch": torch.__version__})
    model = _Tiny().eval()
    save_file(model.state_dict(), tmp_path / "m.safetensors",
              metadata=card.to_safetensors_metadata())
    assert read_weights(tmp_path / "m.safetensors").card == card
    torch.jit.save(torch.jit.trace(model, torch.rand(1, 3, 8, 8)), str(tmp_path / "m.pt"),
                   _extra_files={TORCHSCRIPT_EXTRA_FILE: card.to_torchscript_json()})
    assert read_weights(tmp_path / "m.pt").card == card
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from torchinfer.models.onnx import load_onnx_model

    path = _onnx_with(tmp_path / "m.onnx", card.to_onnx_metadata(), onnx)
    loaded = load_onnx_model(path, device="cpu")
    assert (loaded.name, loaded.task, loaded.labels, loaded.preprocess) == \
        ("tiny", "classify", ["a", "b", "c", "d"], PREPROCESS)


def _onnx_with(path: Path, metadata: dict[str, str], onnx) -> Path:
    torch.onnx.export(_Tiny().eval(), (torch.rand(1, 3, 8, 8),), str(path), dynamo=False,
                      input_names=["input"], output_names=["logits"])
    graph = onnx.load(str(path))
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))
    return path


# --- files written before the card --------------------------------------------------------------

@pytest.mark.parametrize("name,task,classes", [("shapes_classifier", "classify", 4),
                                               ("shapes_segmenter", "segment", 5),
                                               ("shapes_detector", "detect", 4)])
def test_bundled_safetensors_decode_to_their_card(name, task, classes):
    path = ASSETS / f"{name}.safetensors"
    with safe_open(str(path), "pt") as f:
        header = f.metadata()
    card = read_weights(path).card
    assert card.architecture == f"torchinfer.models.shapes:{name}"
    assert card.model_kwargs == {"num_classes": classes} and card.task == task
    assert len(card.labels) == classes and card.labels[-1] == "triangle"
    assert card.preprocess.to_dict() == json.loads(header["preprocess"])
    assert card.versions == {"torch": header["torch"]} and card.precision == "fp32"
    assert card.extra["trained_by"] == "scripts/train_shapes.py"
    assert {"seed", "epochs", "dataset_size", "dataset"} <= card.extra.keys()
    # written back, the header is the same but for the precision it now states
    assert card.to_safetensors_metadata() == {**header, "precision": "fp32"}


OLD_ONNX = {  # what export_onnx wrote before the card (input_size and labels could be null)
    "torchinfer_version": "0.1.0", "task": "segment", "model_name": "lraspp",
    "labels": "null", "input_size": "null", "precision": "fp32",
    "preprocess": json.dumps({"resize_size": [520], "crop_size": None,
                              "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                              "interpolation": "bilinear", "antialias": True}),
}


def test_old_onnx_metadata_decodes_to_the_same_card(tmp_path):
    card = ModelCard.from_onnx_metadata(OLD_ONNX, "old.onnx")
    assert card == ModelCard(task="segment", model_name="lraspp", versions={"torchinfer": "0.1.0"},
                             preprocess=PreprocessConfig(resize_size=(520,), crop_size=None,
                                                         mean=(0.485, 0.456, 0.406),
                                                         std=(0.229, 0.224, 0.225)))
    old_detector = {**OLD_ONNX, "task": "detect", "detector_format": "torchvision",
                    "labels": json.dumps(["bg", "person"]), "input_size": "[480, 640]"}
    card = ModelCard.from_onnx_metadata(old_detector, "old.onnx")
    assert card.detector_format == "torchvision" and card.labels == ("bg", "person")
    assert card.input_size == (480, 640)
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from torchinfer.models.onnx import load_onnx_model

    loaded = load_onnx_model(_onnx_with(tmp_path / "old.onnx", OLD_ONNX, onnx), device="cpu")
    assert (loaded.name, loaded.task, loaded.labels) == ("lraspp", "segment", None)
    assert loaded.preprocess.resize_size == (520,)


def test_old_torchscript_json_decodes():
    old = json.dumps({"torchinfer_version": "0.1.0", "task": "classify", "model_name": "m",
                      "labels": json.dumps(["a"]), "preprocess": OLD_ONNX["preprocess"],
                      "input_size": "[224, 224]", "precision": "fp32", "format": "torchscript"})
    card = ModelCard.from_torchscript_json(old, "m.pt")
    assert (card.task, card.labels, card.input_size) == ("classify", ("a",), (224, 224))
    assert card.extra == {} and ModelCard.from_torchscript_json("", "m.pt") == ModelCard()


def test_ultralytics_metadata_decodes():
    meta = {"author": "Ultralytics", "version": "8.3.0", "stride": "32", "task": "detect",
            "batch": "1", "imgsz": "[480, 640]", "names": "{0: 'person', 1: 'bicycle'}"}
    card = ModelCard.from_onnx_metadata(meta, "yolo.onnx")
    assert card.task == "detect" and card.labels == ("person", "bicycle")
    assert card.input_size == (480, 640) and card.preprocess.resize_size == (480, 640)
    assert (card.preprocess.mean, card.preprocess.std) == ((0.0,) * 3, (1.0,) * 3)
    assert card.versions == {"ultralytics": "8.3.0"}
    assert card.extra == {"author": "Ultralytics", "stride": "32", "batch": "1"}
    classify = ModelCard.from_ultralytics_metadata({**meta, "task": "classify", "imgsz": "224"},
                                                   "cls.onnx")
    assert classify.preprocess.crop_size == (224, 224) and classify.task == "classify"
    with pytest.raises(ti.TorchinferError, match=r"depth\.onnx: an Ultralytics 'depth' model"):
        ModelCard.from_onnx_metadata({**meta, "task": "depth"}, "depth.onnx")
    with pytest.raises(ti.WeightsError, match=r"bad\.onnx: Ultralytics 'names' ids"):
        ModelCard.from_onnx_metadata({**meta, "names": "{1: 'a'}"}, "bad.onnx")


# --- a bad card names the file and the field ----------------------------------------------------

@pytest.mark.parametrize("meta,message", [
    ({"labels": "[1, 2]"}, "m.safetensors: metadata 'labels' must be a list of names"),
    ({"labels": "not json"}, "m.safetensors: metadata 'labels' is not valid JSON"),
    ({"model_kwargs": "[1, 2]"}, "m.safetensors: metadata 'model_kwargs' must be a JSON object"),
    ({"model_kwargs": '{"pretrained": true}'}, "'model_kwargs' asks for pretrained"),
    ({"preprocess": '{"resize_size": [0]}'}, "m.safetensors: metadata 'preprocess' is not a "
                                             "preprocessing config"),
    ({"preprocess": "[224]"}, "metadata 'preprocess' must be a JSON object"),
    ({"input_size": "[224]"}, "m.safetensors: metadata 'input_size' must be"),
    ({"precision": "fp8"}, "m.safetensors: metadata 'precision' must be one of fp32, fp16"),
    ({"detector_format": "yolo"}, "m.safetensors: metadata 'detector_format' 'yolo'"),
])
def test_a_bad_card_names_the_file_and_field(meta, message):
    with pytest.raises(ti.WeightsError, match=_literal(message)):
        ModelCard.from_safetensors_metadata(meta, "m.safetensors")


def test_a_bad_card_in_code_names_the_field():
    with pytest.raises(ti.WeightsError, match=r"^model card: 'labels' must be"):
        ModelCard(labels=("a", 3))
    with pytest.raises(ti.WeightsError, match=r"^model card: 'extra' may not hold task"):
        ModelCard(extra={"task": "classify"})
    with pytest.raises(ti.WeightsError, match=r"^model card: 'model_kwargs' must be JSON data"):
        ModelCard(model_kwargs={"f": object()})
    with pytest.raises(ti.WeightsError, match=r"^model card: 'task' must be a non-empty string"):
        ModelCard(task=3)


def test_bad_torchscript_json_names_the_file():
    with pytest.raises(ti.WeightsError, match=r"m\.pt: unreadable torchinfer\.json"):
        ModelCard.from_torchscript_json("{", "m.pt")
    with pytest.raises(ti.WeightsError, match=r"m\.pt: torchinfer\.json must hold a JSON object"):
        ModelCard.from_torchscript_json("[1]", "m.pt")


def _literal(text: str) -> str:
    import re

    return re.escape(text)


def test_extra_cannot_shadow_a_version():
    with pytest.raises(ti.WeightsError, match="'extra' may not hold onnx_version, torch"):
        ModelCard(extra={"torch": "2", "onnx_version": "1"})


def test_the_strings_keys_are_the_cards_fields():
    from dataclasses import fields

    from torchinfer.models.card_strings import CARD_KEYS

    assert CARD_KEYS == {f.name for f in fields(ModelCard)} - {"versions", "extra", "source"}
