"""Models people already have: timm and transformers folders (and hub-cache ids) run by path,
checked against each library's own answer on the same files; model sources as a registry.

The models are made here with random weights calibrated on photographs (``hub_fixtures``) and
saved with timm's and transformers' own saving code; nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import torchinfer as ti
from torchinfer.cli.app import app, run
from torchinfer.errors import MissingExtraError, ModelNotFoundError, UntrustedCodeError, WeightsError
from torchinfer.models import load_model, model_task
from torchinfer.models.sources import registry as sources

timm = pytest.importorskip("timm", reason="timm is not installed: pip install 'torchinfer[timm]'")
transformers = pytest.importorskip("transformers",
                                   reason="transformers is not installed: pip install 'torchinfer[hf]'")

from hub_fixtures import photos, put_in_hub_cache, save_hf_folder, save_timm_folder  # noqa: E402

TIMM_MODELS = {  # a CNN, a ViT, a ConvNeXt; a crop_pct and interpolation of their own
    "resnet10t": {"crop_pct": 0.95, "interpolation": "bicubic"},
    "vit_tiny_patch16_224": {"interpolation": "bilinear"},
    "convnext_atto": {"crop_pct": 0.9, "crop_mode": "squash"},
}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    return photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def timm_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("timm")
    return {arch: save_timm_folder(root / arch, arch, pretrained_cfg_overrides=cfg)
            for arch, cfg in TIMM_MODELS.items()}


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {kind: save_hf_folder(root / kind, kind)
            for kind in ("vit", "convnext", "detr", "rt_detr", "segformer", "upernet")}


def torch_only(**kwargs):
    return {"backend": "torch", "precision": "fp32", **kwargs}


# --- timm ------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", list(TIMM_MODELS))
def test_a_timm_folder_gives_timms_own_answer(arch, timm_folders, pictures):
    """timm's own loop: its loading of the folder, resolve_data_config + create_transform,
    forward, softmax: the same top-1 and probabilities within 1e-4."""
    folder = timm_folders[arch]
    reference = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=reference))
    ours = ti.load("classify", str(folder), top_k=10, exact_decode=True, **torch_only())
    assert ours.model.source == "timm" and ours.model.labels == \
        json.loads((folder / "config.json").read_text()).get("label_names", ours.model.labels)
    tops = set()
    for path in pictures:
        with torch.inference_mode():
            probs = reference(transform(Image.open(path).convert("RGB"))[None]).softmax(-1)[0]
        result = ours(path)
        assert result.top1.index == int(probs.argmax())
        for score in result.topk:
            assert abs(score.score - float(probs[score.index])) < 1e-4, (path, score)
        tops.add(result.top1.index)
    assert len(tops) > 1  # the answers depend on the picture


def test_reduced_jpeg_decoding_keeps_agreeing_with_timm(timm_folders, pictures, tmp_path):
    """Big JPEGs decoded at a reduced scale (the default) give timm's top-1 on the full
    decode: the reduction keeps twice the resize target, so the resize still filters."""
    folder = timm_folders["resnet10t"]
    reference = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=reference))
    ours = ti.load("classify", str(folder), top_k=10, **torch_only())
    assert ours.reduced_decode
    for path in pictures:
        image = Image.open(path).convert("RGB")
        big = tmp_path / f"{path.stem}_big.jpg"
        image.resize((image.width * 4, image.height * 4), Image.BICUBIC).save(big, quality=92)
        with torch.inference_mode():
            probs = reference(transform(Image.open(big).convert("RGB"))[None]).softmax(-1)[0]
        result = ours(big)
        # the criterion of reduced decoding is the decision (runtime.decoding checks it on
        # photographs); probabilities move a little with the pixels (up to 0.05 here)
        assert result.top1.index == int(probs.argmax()), big
        assert max(abs(s.score - float(probs[s.index])) for s in result.topk) < 0.1


def test_a_timm_recipe_is_timms(timm_folders):
    cfg = load_model(str(timm_folders["resnet10t"])).preprocess
    assert (cfg.resize_size, cfg.crop_size, cfg.interpolation) == ((185,), (176, 176), "bicubic")
    squash = load_model(str(timm_folders["convnext_atto"])).preprocess
    assert (squash.resize_size, squash.crop_size) == ((248, 248), (224, 224))


def test_a_timm_name_builds_its_architecture_with_weights_given(timm_folders, tmp_path,
                                                                pictures):
    weights = timm_folders["resnet10t"] / "model.safetensors"
    by_name = ti.load("classify", "timm:resnet10t", weights, **torch_only())
    assert by_name.model.name == "timm:resnet10t" and by_name.model.module.num_classes == 10
    assert by_name.model.labels is None  # a head of 10, not ImageNet's: no names
    assert by_name.model.preprocess.resize_size == (201,)  # the tag's own recipe: 176 / 0.875
    with pytest.raises(ModelNotFoundError, match="not a timm model"):
        load_model("timm:resnet_that_is_not")


def test_a_hub_cache_id_runs_offline_and_names_its_commit(timm_folders, hf_folders, tmp_path,
                                                         monkeypatch, pictures):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    snapshot = put_in_hub_cache(cache, "timm/resnet10t.test", timm_folders["resnet10t"])
    put_in_hub_cache(cache, "acme/vit-tiny", hf_folders["vit"])
    for spec in ("timm/resnet10t.test", "hf-hub:timm/resnet10t.test",
                 f"hf-hub:timm/resnet10t.test@{snapshot.name}"):
        loaded = load_model(spec)
        assert loaded.source == "timm" and loaded.revision == snapshot.name
        assert loaded.name == f"hf-hub:timm/resnet10t.test@{snapshot.name}"
    from_cache = ti.load("classify", "acme/vit-tiny", **torch_only())
    from_folder = ti.load("classify", str(hf_folders["vit"]), **torch_only())
    assert from_cache(pictures[0]).topk == from_folder(pictures[0]).topk
    assert model_task("acme/vit-tiny") == "classify"


# --- transformers ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["vit", "convnext"])
def test_a_transformers_classifier_gives_the_pipelines_answer(kind, hf_folders, pictures):
    folder = hf_folders[kind]
    pipe = transformers.pipeline("image-classification", model=str(folder))
    ours = ti.load("classify", str(folder), top_k=3, exact_decode=True, **torch_only())
    for path in pictures:
        expected = pipe(str(path), top_k=3)
        got = ours(path).topk
        assert got[0].label == expected[0]["label"]
        for g, e in zip(got, expected):
            assert g.label == e["label"] and abs(g.score - e["score"]) < 1e-3


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.mark.parametrize("kind", ["detr", "rt_detr"])
def test_a_transformers_detector_gives_the_processors_boxes(kind, hf_folders, pictures):
    """Against the processor + model + post_process_object_detection (float boxes) and the
    pipeline (its labels and scores): every box matched at IoU >= 0.99."""
    folder = hf_folders[kind]
    processor = transformers.AutoImageProcessor.from_pretrained(str(folder))
    model = transformers.AutoModelForObjectDetection.from_pretrained(str(folder)).eval()
    pipe = transformers.pipeline("object-detection", model=str(folder))
    ours = ti.load("detect", str(folder), conf=0.3, exact_decode=True, **torch_only())
    found = 0
    for path in pictures:
        image = Image.open(path).convert("RGB")
        with torch.inference_mode():
            out = model(**processor(images=image, return_tensors="pt"))
        expected = processor.post_process_object_detection(
            out, threshold=0.3, target_sizes=[(image.height, image.width)])[0]
        got = ours(path)
        assert len(got) == len(expected["scores"])
        for box, score, label in zip(expected["boxes"].tolist(), expected["scores"].tolist(),
                                     expected["labels"].tolist()):
            ious = [_iou(box, b) if int(c) == label else 0.0
                    for b, c in zip(got.boxes.tolist(), got.class_ids)]
            best = int(np.argmax(ious))
            assert ious[best] >= 0.99 and abs(got.scores[best] - score) < 1e-3
        by_pipeline = sorted((d["label"], d["score"]) for d in pipe(str(path), threshold=0.3))
        mine = sorted(zip(got.labels, map(float, got.scores)))
        assert [lab for lab, _ in mine] == [lab for lab, _ in by_pipeline]
        assert all(abs(a[1] - b[1]) < 1e-3 for a, b in zip(mine, by_pipeline))
        found += len(got)
    assert found > 0


@pytest.mark.parametrize("kind", ["segformer", "upernet"])
def test_a_transformers_segmenter_gives_the_pipelines_pixels(kind, hf_folders, pictures):
    folder = hf_folders[kind]
    pipe = transformers.pipeline("image-segmentation", model=str(folder))
    ours = ti.load("segment", str(folder), exact_decode=True, **torch_only())
    names = ours.model.labels
    for path in pictures:
        expected = np.full(Image.open(path).size[::-1], -1)
        for segment in pipe(str(path)):
            expected[np.asarray(segment["mask"]) > 0] = names.index(segment["label"])
        got = ours(path).mask
        assert got.shape == expected.shape
        assert (got == expected).mean() >= 0.995, (path, (got == expected).mean())


# --- what is refused ---------------------------------------------------------------------------

def _cli(args: list[str]):
    return CliRunner().invoke(app, args)


def _refused(tmp_path, capsys, args) -> str:
    capsys.readouterr()
    code = run(["predict", "classify", *args, "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = [line for line in captured.err.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in captured.err + captured.out, captured.err
    return lines[0]


def test_refusals_are_one_line_and_exit_2(hf_folders, timm_folders, tmp_path, pictures,
                                         monkeypatch, capsys):
    photo = str(pictures[0])
    pickled = tmp_path / "pickled"
    shutil.copytree(hf_folders["vit"], pickled)
    weights = transformers.ViTForImageClassification.from_pretrained(str(pickled)).state_dict()
    (pickled / "model.safetensors").unlink()
    torch.save(weights, pickled / "pytorch_model.bin")
    assert "--trust-pickle" in _refused(tmp_path, capsys, [photo, "-m", str(pickled)])
    assert load_model(str(pickled), trust_pickle=True).source == "transformers"

    remote = tmp_path / "remote"
    shutil.copytree(hf_folders["vit"], remote)
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageClassification": "modeling_evil.EvilModel"}
    (remote / "config.json").write_text(json.dumps(config))
    (remote / "modeling_evil.py").write_text("raise SystemExit('code ran')\n")
    assert "--trust-code" in _refused(tmp_path, capsys, [photo, "-m", str(remote)])
    with pytest.raises(UntrustedCodeError):
        load_model(str(remote))

    huge = tmp_path / "huge"
    shutil.copytree(hf_folders["vit"], huge)
    config = json.loads((huge / "config.json").read_text())
    config["hidden_size"], config["intermediate_size"] = 8192, 32768
    (huge / "config.json").write_text(json.dumps(config))
    assert "refused before allocating" in _refused(tmp_path, capsys, [photo, "-m", str(huge)])
    big_image = tmp_path / "big_image"
    shutil.copytree(hf_folders["vit"], big_image)
    config = json.loads((big_image / "config.json").read_text())
    config["image_size"] = 100_000
    (big_image / "config.json").write_text(json.dumps(config))
    assert "beyond 8192 pixels" in _refused(tmp_path, capsys, [photo, "-m", str(big_image)])
    padded = tmp_path / "padded"
    shutil.copytree(timm_folders["resnet10t"], padded)
    with open(padded / "config.json", "a") as fh:
        fh.write(" " * 5 * 1024 * 1024)
    assert "a config is at most" in _refused(tmp_path, capsys, [photo, "-m", str(padded)])

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    line = _refused(tmp_path, capsys, [photo, "-m", "timm/resnet50.a1_in1k"])
    assert "hf download timm/resnet50.a1_in1k" in line and "empty-cache" in line


def test_a_missing_extra_is_named(timm_folders, hf_folders, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("timm", "transformers") else real(name, *a))
    with pytest.raises(MissingExtraError, match=r"torchinfer\[timm\]"):
        load_model(str(timm_folders["resnet10t"]))
    with pytest.raises(MissingExtraError, match=r"torchinfer\[hf\]"):
        load_model(str(hf_folders["vit"]))


def test_a_weights_file_with_a_missing_key_is_refused_unless_not_strict(hf_folders, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "missing"
    shutil.copytree(hf_folders["vit"], folder)
    tensors = load_file(folder / "model.safetensors")
    tensors.pop(next(k for k in tensors if k.startswith("classifier")))
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match="missing keys"):
        load_model(str(folder))
    assert load_model(str(folder), strict=False).task == "classify"


# --- the sources registry ----------------------------------------------------------------------

def test_every_built_in_source_is_found_by_what_it_reads(timm_folders, hf_folders, tmp_path):
    expect = {"mobilenet_v2": "torchvision", "shapes_classifier": "bundled",
              str(timm_folders["resnet10t"]): "timm", "timm:resnet18": "timm",
              str(hf_folders["detr"]): "transformers", "hf-hub:acme/absent": "hub-missing",
              "torchvision.models:resnet18": "factory"}
    for spec, name in expect.items():
        assert sources.find_source(spec).name == name, spec
    assert model_task(str(hf_folders["detr"])) == "detect"
    assert model_task(str(hf_folders["segformer"])) == "segment"


def test_a_registered_model_carries_its_recipe_and_labels(tmp_path):
    from torch import nn

    from torchinfer.models.registry import registered_model

    name = "tiny_registered_with_recipe"
    if registered_model(name) is None:
        @ti.register_model(name, task="classify", labels=["left", "right"],
                           preprocess={"resize_size": [40], "crop_size": [32, 32],
                                       "mean": [0.5] * 3, "std": [0.25] * 3})
        def tiny(num_classes: int = 2) -> nn.Module:
            return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(4, num_classes))
    loaded = load_model(name)
    assert loaded.labels == ["left", "right"] and loaded.preprocess.crop_size == (32, 32)
    assert loaded.preprocess.std == (0.25, 0.25, 0.25) and loaded.preprocess_from == "weights"
    assert load_model(name, num_classes=3).labels is None  # another head: not its names


def test_a_third_party_source_joins_through_its_entry_point(tmp_path, monkeypatch, pictures):
    """A package in a temporary folder adds ``zoo:NAME`` through ``torchinfer.sources``; the
    CLI runs it with no edit here."""
    site = tmp_path / "site"
    package = site / "zoo_source"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('''
from torch import nn
from torchinfer.models import LoadedModel, PreprocessConfig
from torchinfer.models.sources.base import ModelSource


class ZooSource(ModelSource):
    name = "zoo"

    def recognises(self, spec):
        return spec.startswith("zoo:")

    def task(self, spec):
        return "classify"

    def load(self, spec, request):
        module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
        recipe = PreprocessConfig(resize_size=(36,), crop_size=(32, 32), mean=(0.5,) * 3,
                                  std=(0.5,) * 3)
        return LoadedModel(module=module.eval(), name=spec, task="classify",
                           preprocess=recipe, labels=["dark", "light"], weights=spec)
''')
    info = site / "zoo_source-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-source\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[torchinfer.sources]\nzoo = zoo_source:ZooSource\n")
    monkeypatch.syspath_prepend(str(site))
    sources.forget_plugins()
    try:
        assert "zoo" in sources.source_names()
        out = tmp_path / "out"
        result = _cli(["predict", "classify", str(pictures[0]), "-m", "zoo:anything",
                       "--out", str(out), "-q"])
        assert result.exit_code == 0, result.output
        record = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
        assert record["top1"]["label"] in ("dark", "light")
        summary = json.loads((out / "summary.json").read_text())
        assert summary["model_source"]["source"] == "zoo"
    finally:
        sys.modules.pop("zoo_source", None)
        sources.forget_plugins()


# --- everything downstream -----------------------------------------------------------------

def test_the_cli_runs_a_folder_with_no_flag_but_the_task(hf_folders, pictures, tmp_path):
    for task, kind in (("classify", "vit"), ("detect", "detr"), ("segment", "segformer")):
        out = tmp_path / kind
        result = _cli(["predict", task, *map(str, pictures[:2]), "-m", str(hf_folders[kind]),
                       "--out", str(out), "-q"])
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "summary.json").read_text())
        assert summary["model_source"] == {"source": "transformers",
                                           "name": str(hf_folders[kind]), "revision": None}
        assert summary["failed"] == 0 and summary["succeeded"] == 2


def test_export_onnx_verified_and_the_measured_default(hf_folders, timm_folders, tmp_path,
                                                      pictures, monkeypatch):
    pytest.importorskip("onnxruntime")
    for name, folder in (("vit", hf_folders["vit"]), ("timm", timm_folders["resnet10t"])):
        report = ti.export(str(folder), tmp_path / f"{name}.onnx")
        assert report.verified, report
        exported = ti.load("classify", str(tmp_path / f"{name}.onnx"), **torch_only())
        direct = ti.load("classify", str(folder), **torch_only())
        assert exported(pictures[0]).top1.index == direct(pictures[0]).top1.index
    # a DETR's queries are one tensor: exported, verified, and decoded from the file's card
    assert ti.export(str(hf_folders["detr"]), tmp_path / "detr.onnx").verified
    exported = ti.load("detect", str(tmp_path / "detr.onnx"), conf=0.3, **torch_only())
    direct = ti.load("detect", str(hf_folders["detr"]), conf=0.3, **torch_only())
    for path in pictures[:2]:
        a, b = exported(path), direct(path)
        assert list(a.labels) == list(b.labels) and len(a) > 0
        assert np.abs(a.boxes - b.boxes).max() < 0.05
    monkeypatch.delenv("TORCHINFER_BACKEND", raising=False)
    monkeypatch.delenv("TORCHINFER_PRECISION", raising=False)
    auto = ti.load("classify", str(hf_folders["convnext"]), memo=False)
    auto(pictures[0])
    chosen = auto.backend_report.to_dict()
    assert chosen["backend"] in ("torch", "torchscript", "onnxruntime", "openvino"), chosen


def test_inspect_and_several_models_over_one_decode(hf_folders, timm_folders, pictures):
    report = ti.inspect(str(timm_folders["resnet10t"]))
    expected = sum(p.numel() for p in load_model(str(timm_folders["resnet10t"])).module.parameters())
    assert report.params_total == expected and report.input_shape[-1] == 176
    group = ti.load_group({"kind": str(hf_folders["vit"]), "where": str(hf_folders["detr"]),
                           "parts": str(hf_folders["segformer"])})
    result = group(pictures[0])
    assert set(result.heads) == {"kind", "where", "parts"}
