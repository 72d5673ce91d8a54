"""The Predictor contract: one input -> one result, a list -> a list, stream -> lazy and in
order; bad inputs recorded, not fatal; timing per stage; devices checked."""

from __future__ import annotations

import itertools
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import torchinfer as ti
from torchinfer.devices import resolve_device
from torchinfer.results import STAGES, Classification, ClassScore


@pytest.fixture(scope="module")
def clf(tiny_classifier_weights):
    _, path = tiny_classifier_weights
    return ti.load("classify", "mobilenet_v3_small", path, device="cpu", top_k=3, batch_size=4)


@pytest.fixture
def folder(tmp_path, photo_paths):
    for p in photo_paths:
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "sub").mkdir()
    shutil.copy(photo_paths[0], tmp_path / "sub" / "nested.png")
    (tmp_path / "broken.jpg").write_text("not an image")
    (tmp_path / "readme.md").write_text("ignored: not an image extension")
    return tmp_path


def test_single_input_gives_one_result(clf, photo_paths):
    result = clf(photo_paths[0])
    assert isinstance(result, Classification) and result.ok
    assert result.source == str(photo_paths[0])
    assert result.top1 == result.topk[0] and len(result.topk) == 3
    assert set(result.speed) == set(STAGES)
    assert all(result.speed[k] > 0 for k in ("preprocess", "inference", "postprocess"))
    assert result.speed["wait"] == 0.0  # decoded in turn


def test_single_bad_input_raises_naming_it(clf, tmp_path):
    with pytest.raises(ti.InputError, match=r"nope\.jpg: file not found"):
        clf(tmp_path / "nope.jpg")


def test_list_gives_list_in_order_with_failures_recorded(clf, photo_paths, tmp_path):
    inputs = [photo_paths[0], tmp_path / "nope.jpg", np.asarray(Image.open(photo_paths[1]).convert("RGB")),
              photo_paths[2], b"garbage"]
    results = clf(inputs)
    assert [r.ok for r in results] == [True, False, True, True, False]
    assert results[1].source.endswith("nope.jpg") and results[1].error == "file not found"
    assert results[4].error == "not a recognised image format"
    with pytest.raises(ti.TorchinferError, match="no prediction"):
        _ = results[1].top1
    # the same image alone or inside a batch gives the same answer
    assert results[0].top1.index == clf(photo_paths[0]).top1.index
    assert results[0].top1.score == pytest.approx(clf(photo_paths[0]).top1.score, abs=1e-5)


def test_stream_folder_recursive_sorted_with_failures(clf, folder):
    results = list(clf.stream(folder, batch_size=2))
    names = [r.source.replace(str(folder) + "/", "") for r in results]
    assert names == sorted(names[:-1]) + ["sub/nested.png"]  # os.walk: files, then subfolders
    assert "readme.md" not in names
    failed = [r for r in results if not r.ok]
    assert [f.source.endswith("broken.jpg") for f in failed] == [True]


class Endless:
    """An endless source of paths that counts how many were pulled from it."""

    def __init__(self, paths):
        self.paths, self.pulled = paths, 0

    def __iter__(self):
        for path in itertools.cycle(self.paths):
            self.pulled += 1
            yield path


def test_stream_is_lazy_and_bounded(clf, photo_paths):
    """Only the batch being run and the one being decoded are ever pulled from the source."""
    source = Endless(photo_paths)
    stream = clf.stream(iter(source), batch_size=4)
    first = list(itertools.islice(stream, 5))
    assert len(first) == 5
    assert source.pulled <= 3 * 4  # batch in flight + next batch decoding + the one being chunked
    stream.close()


def test_parallel_decode_keeps_input_order_and_bounds_memory(tiny_classifier_weights,
                                                             photo_paths, tmp_path):
    """Big and tiny images, failures mixed in: three decode threads finish batches out of
    order, results come in input order, the same as decoding in turn."""
    _, path = tiny_classifier_weights
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tiny)
    inputs = [str(p) for p in photo_paths] + [str(tiny), str(tmp_path / "broken.jpg")]
    inputs = [inputs[(i * 5) % len(inputs)] for i in range(40)]
    in_turn = ti.load("classify", "mobilenet_v3_small", path, device="cpu", decode_workers=0)
    threaded = ti.load("classify", "mobilenet_v3_small", path, device="cpu", decode_workers=3)
    a = list(in_turn.stream(inputs, batch_size=2))
    b = list(threaded.stream(inputs, batch_size=2))
    assert [r.source for r in b] == inputs
    assert [(r.ok, r.ok and r.top1.index) for r in a] == [(r.ok, r.ok and r.top1.index) for r in b]
    source = Endless(photo_paths)
    stream = threaded.stream(iter(source), batch_size=2)
    next(stream)
    # decode_workers + 1 ahead (+ 1 the model's thread may decode instead of waiting)
    assert source.pulled <= (3 + 1 + 1) * 2
    stream.close()


def test_glob_and_list_file_sources(clf, folder):
    globbed = list(clf.stream(str(folder / "*.png")))
    assert len(globbed) == 4 and all(r.ok for r in globbed)
    listing = folder / "inputs.txt"
    listing.write_text("# photos\nchelsea.png\n\nmissing.png\n")
    results = list(clf.stream(listing))
    assert [r.ok for r in results] == [True, False]


def test_multi_label_uses_sigmoid(tiny_classifier_weights, photo_paths):
    _, path = tiny_classifier_weights
    multi = ti.load("classify", "mobilenet_v3_small", path, device="cpu", multi_label=True, top_k=10)
    soft = ti.load("classify", "mobilenet_v3_small", path, device="cpu", top_k=10)
    m, s = multi(photo_paths[0]), soft(photo_paths[0])
    assert sum(c.score for c in s.topk) == pytest.approx(1.0, abs=1e-5)
    assert [c.index for c in m.topk] == [c.index for c in s.topk]  # same order, other scale
    assert sum(c.score for c in m.topk) != pytest.approx(1.0, abs=1e-3)


def test_labels_override_and_mismatch(tiny_classifier_weights, photo_paths, tmp_path):
    _, path = tiny_classifier_weights
    names = [f"thing{i}" for i in range(10)]
    (tmp_path / "labels.txt").write_text("\n".join(names))
    clf = ti.load("classify", "mobilenet_v3_small", path, device="cpu", labels=tmp_path / "labels.txt")
    result = clf(photo_paths[0])
    assert result.top1.label == f"thing{result.top1.index}"
    wrong = ti.load("classify", "mobilenet_v3_small", path, device="cpu", labels=["a", "b"])
    with pytest.raises(ti.TorchinferError, match="2 labels for a model with 10 outputs"):
        wrong(photo_paths[0])


def test_input_size_and_mean_override(tiny_classifier_weights):
    _, path = tiny_classifier_weights
    clf = ti.load("classify", "mobilenet_v3_small", path, device="cpu", input_size=160,
                  mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    cfg = clf.config
    assert cfg.crop_size == (160, 160) and cfg.resize_size == (round(160 * 256 / 224),)
    batch = clf.preprocess([Image.new("RGB", (300, 200))], ["x"])
    assert tuple(batch.tensor.shape) == (1, 3, 160, 160) and batch.tensor.dtype == torch.uint8
    assert torch.allclose(clf.device_preprocess(batch.tensor), torch.full((1, 3, 160, 160), -1.0))


def test_task_mismatch_is_refused_before_building():
    with pytest.raises(ti.TorchinferError, match="deeplabv3_resnet101 is a segment model"):
        ti.load("classify", "deeplabv3_resnet101")
    with pytest.raises(ti.TorchinferError, match="unknown task"):
        ti.load("colourise", "resnet18")


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ti.DeviceError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ti.DeviceError, match="CUDA is not available"):
            resolve_device("cuda:1")
    else:
        with pytest.raises(ti.DeviceError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(tiny_classifier_weights, photo_paths):
    _, path = tiny_classifier_weights
    cpu = ti.load("classify", "mobilenet_v3_small", path, device="cpu")(photo_paths[0])
    gpu = ti.load("classify", "mobilenet_v3_small", path, device="cuda")(photo_paths[0])
    assert gpu.top1.index == cpu.top1.index
    assert gpu.top1.score == pytest.approx(cpu.top1.score, abs=1e-3)


def test_result_validation_says_expected_vs_actual():
    with pytest.raises(ValueError, match=r"score must be a probability in \[0, 1\], got 1.5"):
        ClassScore(0, "a", 1.5)
    with pytest.raises(ValueError, match="topk must be sorted by score"):
        Classification(source="x", topk=(ClassScore(0, "a", 0.1), ClassScore(1, "b", 0.9)))
    with pytest.raises(ValueError, match="needs at least one class"):
        Classification(source="x")
    with pytest.raises(ValueError, match="speed keys"):
        Classification(source="x", error="e", speed={"decode": 1.0})


def test_result_to_dict_is_json(clf, photo_paths):
    import json

    d = clf(photo_paths[0]).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["top1"] == d["topk"][0] and set(d["speed"]) == set(STAGES)


def test_results_carry_extras_in_data():
    """Free-form extras, as supervision's ``data``: per result, and per detection for boxes
    (a tracker's ids follow the boxes through indexing)."""
    import json

    from torchinfer.results import Detections

    clf = Classification(source="x", topk=(ClassScore(0, "a", 0.9),),
                         data={"camera": "north", "frame": np.int64(7)})
    assert clf.to_dict()["data"] == {"camera": "north", "frame": 7}
    dets = Detections(source="x", boxes=np.array([[0, 0, 2, 2], [1, 1, 3, 3]], np.float32),
                      scores=np.array([0.9, 0.4], np.float32), class_ids=np.array([0, 1]),
                      labels=("a", "b"), image_size=(4, 4),
                      data={"tracker_id": np.array([11, 12]), "colour": ["red", "blue"]})
    kept = dets[dets.scores > 0.5]
    assert kept.data["tracker_id"].tolist() == [11] and kept.data["colour"] == ["red"]
    record = json.loads(json.dumps(dets.to_dict()))
    assert [d["data"] for d in record["detections"]] == [
        {"tracker_id": 11, "colour": "red"}, {"tracker_id": 12, "colour": "blue"}]
    with pytest.raises(ValueError, match=r"data\['tracker_id'\] must be 2 values"):
        Detections(source="x", boxes=dets.boxes, scores=dets.scores, class_ids=dets.class_ids,
                   labels=dets.labels, data={"tracker_id": [1]})
