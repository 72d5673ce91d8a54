"""Every way a user's weights reach us: plain, wrapped, prefixed, safetensors, TorchScript,
pickled (refused, then trusted), mismatched, missing, and torchvision's named weights offline."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import torchinfer as ti
from torchinfer.models import load_model
from torchinfer.models.hub import cache_path, resolve_named_weights


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def small(calibrated):
    """A 10-class mobilenet_v3_small whose answers depend on the picture."""
    return calibrated("mobilenet_v3_small", num_classes=10)[0].eval()


def test_plain_state_dict(small, tmp_path):
    path = tmp_path / "w.pth"
    torch.save(small.state_dict(), path)
    loaded = load_model("mobilenet_v3_small", path)
    assert same_weights(loaded.module, small)
    assert loaded.weights_format == "state_dict"
    assert not loaded.module.training


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "model", "ema"])
def test_checkpoint_dict_wrappers(small, tmp_path, key):
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 7, "optimizer": {"lr": 0.1}, key: small.state_dict()}, path)
    loaded = load_model("mobilenet_v3_small", path)
    assert same_weights(loaded.module, small)
    assert loaded.weights_format == f"checkpoint:{key}"


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "model."])
def test_wrapper_prefixes_are_stripped(small, tmp_path, prefix):
    path = tmp_path / "ddp.pth"
    torch.save({prefix + k: v for k, v in small.state_dict().items()}, path)
    assert same_weights(load_model("mobilenet_v3_small", path).module, small)


def test_safetensors_with_labels_and_preprocessing(small, tmp_path):
    path = tmp_path / "w.safetensors"
    labels = [f"shape{i}" for i in range(10)]
    preprocess = {"resize_size": [160], "crop_size": [128, 128], "mean": [0.5, 0.5, 0.5],
                  "std": [0.25, 0.25, 0.25], "interpolation": "bicubic"}
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, str(path),
              metadata={"labels": json.dumps(labels), "preprocess": json.dumps(preprocess)})
    loaded = load_model("mobilenet_v3_small", path)
    assert same_weights(loaded.module, small)
    assert loaded.labels == labels
    assert loaded.preprocess.crop_size == (128, 128)
    assert loaded.preprocess.interpolation == "bicubic"


def test_torchscript_as_weights_and_as_whole_model(small, tmp_path, photographs):
    path = tmp_path / "scripted.pt"
    torch.jit.script(small).save(str(path))
    # as weights for a named architecture
    loaded = load_model("mobilenet_v3_small", path)
    assert same_weights(loaded.module, small)
    assert loaded.weights_format == "torchscript"
    # as the whole model, by path alone
    clf = ti.load("classify", path, device="cpu")
    img = photographs["chelsea.png"]
    with torch.inference_mode():
        expected = small(clf.device_preprocess(clf.preprocess([img], ["x"]).tensor))
    assert expected.std() > 0.5  # not the near-uniform output of a random init
    result = clf(img)
    assert result.top1.index == int(expected.argmax())
    assert result.top1.score == pytest.approx(float(expected.softmax(1).max()), abs=1e-5)


def test_pickled_model_refused_without_trust(small, tmp_path):
    path = tmp_path / "full_model.pt"
    torch.save(small, path)
    with pytest.raises(ti.WeightsError, match="trust_pickle=True"):
        load_model(path)
    with pytest.raises(ti.WeightsError, match="--trust-pickle"):
        load_model("mobilenet_v3_small", path)


def test_pickled_model_accepted_with_trust(small, tmp_path):
    path = tmp_path / "full_model.pt"
    torch.save(small, path)
    whole = load_model(path, trust_pickle=True)
    assert whole.weights_format == "pickle"
    assert same_weights(whole.module, small)
    # a pickled model passed as weights for an architecture gives its state dict
    as_weights = load_model("mobilenet_v3_small", path, trust_pickle=True)
    assert same_weights(as_weights.module, small)


def test_num_classes_inferred_from_head(small, tmp_path):
    path = tmp_path / "w.pth"
    torch.save(small.state_dict(), path)
    loaded = load_model("mobilenet_v3_small", path)
    assert loaded.module.classifier[-1].out_features == 10
    assert loaded.labels is None  # ImageNet names do not apply to 10 classes


def test_num_classes_mismatch_names_the_cause(small, tmp_path):
    path = tmp_path / "w.pth"
    torch.save(small.state_dict(), path)
    with pytest.raises(ti.WeightsMismatchError) as info:
        load_model("mobilenet_v3_small", path, num_classes=1000)
    message = str(info.value)
    assert "classifier.3.weight checkpoint [10, 1024] vs model [1000, 1024]" in message
    assert "num_classes=10" in message and "2 shape mismatches" in message


def test_wrong_architecture_lists_keys_with_counts(small, tmp_path):
    path = tmp_path / "w.pth"
    torch.save(small.state_dict(), path)
    with pytest.raises(ti.WeightsMismatchError) as info:
        load_model("resnet18", path)
    message = str(info.value)
    assert "102 missing keys: conv1.weight" in message
    assert "unexpected keys: features.0.0.weight" in message
    assert "(and 97 more)" in message
    assert "different architecture" in message


def test_strict_false_allows_extra_keys_but_reports_them(small, tmp_path):
    path = tmp_path / "w.pth"
    torch.save({**small.state_dict(), "aux.weight": torch.zeros(3)}, path)
    with pytest.raises(ti.WeightsMismatchError, match="1 unexpected keys: aux.weight"):
        load_model("mobilenet_v3_small", path)
    loaded = load_model("mobilenet_v3_small", path, strict=False)
    assert loaded.key_report is not None and loaded.key_report.unexpected == ["aux.weight"]
    assert same_weights(loaded.module, small)


def test_failed_load_leaves_no_partial_model(small, tmp_path):
    """A shape mismatch is refused even with strict=False, and nothing was copied."""
    sd = small.state_dict()
    sd["classifier.3.weight"] = torch.zeros(7, 1024)
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    with pytest.raises(ti.WeightsMismatchError):
        load_model("mobilenet_v3_small", path, num_classes=10, strict=False)


def test_missing_empty_and_corrupt_files(tmp_path):
    with pytest.raises(ti.WeightsError, match="not found: .*nope.pth"):
        load_model("resnet18", tmp_path / "nope.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ti.WeightsError, match="empty"):
        load_model("resnet18", tmp_path / "empty.pth")
    (tmp_path / "junk.pth").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ti.WeightsError, match="junk.pth: not a readable PyTorch weights file"):
        load_model("resnet18", tmp_path / "junk.pth")
    (tmp_path / "bad.safetensors").write_bytes(b"{}")
    with pytest.raises(ti.WeightsError, match="bad.safetensors"):
        load_model("resnet18", tmp_path / "bad.safetensors")


def test_state_dict_alone_needs_an_architecture(small, tmp_path):
    path = tmp_path / "w.pth"
    torch.save(small.state_dict(), path)
    with pytest.raises(ti.WeightsError, match="name the architecture"):
        load_model(path)


def test_user_factory_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(textwrap.dedent("""
        from torch import nn
        def tiny_net(num_classes=3, width=8):
            return nn.Sequential(nn.Conv2d(3, width, 3), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(width, num_classes))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_model("my_models:tiny_net", width=4)
    assert loaded.module[0].out_channels == 4 and loaded.random_init
    # num_classes inferred from a checkpoint for a factory that accepts it
    torch.manual_seed(0)
    trained = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6))
    torch.save(trained.state_dict(), tmp_path / "t.pth")
    loaded = load_model("my_models:tiny_net", tmp_path / "t.pth", width=4)
    assert loaded.module[3].out_features == 6 and same_weights(loaded.module, trained)
    with pytest.raises(ti.ModelNotFoundError, match="cannot import 'nowhere'"):
        load_model("nowhere:factory")
    with pytest.raises(ti.ModelNotFoundError, match="has no attribute 'missing'"):
        load_model("my_models:missing")


def test_unknown_model_suggests_names():
    with pytest.raises(ti.ModelNotFoundError, match="Did you mean mobilenet_v2"):
        load_model("mobilenetv2")


def test_named_weights_offline_error_names_url_and_cache_path():
    with pytest.raises(ti.WeightsUnavailableError) as info:
        load_model("mobilenet_v2", "DEFAULT")
    message = str(info.value)
    weights = resolve_named_weights("mobilenet_v2", "DEFAULT")
    assert weights.url in message
    assert str(cache_path(weights)) in message


def test_named_weights_from_local_cache(small, calibrated):
    """A file already in torch's hub cache is used, unpickled with weights_only=True, and brings
    torchvision's labels and transforms for those exact weights."""
    model, saved = calibrated("mobilenet_v2")
    weights = resolve_named_weights("mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V1")
    target = cache_path(weights)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(saved.read_bytes())
    try:
        for spec in ("MobileNet_V2_Weights.IMAGENET1K_V1", "IMAGENET1K_V1"):
            loaded = load_model("mobilenet_v2", spec)
            assert same_weights(loaded.module, model)
            assert loaded.labels == weights.meta["categories"]
            assert loaded.preprocess.resize_size == (256,)  # V1's recipe; DEFAULT (V2) uses 232
            assert loaded.weights == "MobileNet_V2_Weights.IMAGENET1K_V1"
    finally:
        target.unlink()


def test_seed_weights_file_name_gets_its_published_preprocessing(calibrated, tmp_path):
    """The notes' file mobilenet_v2-b0353104.pth is torchvision's IMAGENET1K_V1: resize 256."""
    _, saved = calibrated("mobilenet_v2")
    seed_file = tmp_path / "mobilenet_v2-b0353104.pth"
    seed_file.write_bytes(saved.read_bytes())
    assert load_model("mobilenet_v2", seed_file).preprocess.resize_size == (256,)
    other = tmp_path / "my_finetune.pth"
    other.write_bytes(saved.read_bytes())
    assert load_model("mobilenet_v2", other).preprocess.resize_size == (232,)  # DEFAULT's


def test_unknown_weights_name_lists_choices():
    with pytest.raises(ti.WeightsError, match="IMAGENET1K_V1, IMAGENET1K_V2"):
        load_model("mobilenet_v2", "IMAGENET22K_V9")
    with pytest.raises(ti.WeightsError, match="another architecture"):
        load_model("mobilenet_v2", "ResNet18_Weights.IMAGENET1K_V1")


def test_random_init_of_segmentation_and_detection_needs_no_download():
    """Their builders default to downloading an ImageNet backbone; we ask for none."""
    for name in ("deeplabv3_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn"):
        loaded = load_model(name)
        assert loaded.random_init and loaded.task in ("segment", "detect")


def test_safetensors_that_names_its_architecture_loads_by_path_alone(tmp_path):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=3)
    meta = {"architecture": "torchvision.models:mobilenet_v3_small", "task": "classify",
            "model_kwargs": json.dumps({"num_classes": 3}), "labels": json.dumps(["a", "b", "c"]),
            "preprocess": json.dumps({"resize_size": [72], "crop_size": [64, 64],
                                      "mean": [0.5] * 3, "std": [0.2] * 3})}
    # fp16 storage (as the bundled models ship) loads into the float32 module
    save_file({k: v.half() for k, v in model.state_dict().items()}, tmp_path / "m.safetensors",
              metadata=meta)
    clf = ti.load("classify", str(tmp_path / "m.safetensors"), device="cpu")
    assert clf.model.labels == ["a", "b", "c"] and clf.model.task == "classify"
    assert clf.model.preprocess.crop_size == (64, 64)
    w = clf.model.module.classifier[3].weight
    assert w.dtype == torch.float32
    assert torch.equal(w, model.classifier[3].weight.half().float())
    with pytest.raises(ti.TorchinferError, match="is a classify model, not segment"):
        ti.load("segment", str(tmp_path / "m.safetensors"), device="cpu")
