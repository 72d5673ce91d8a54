"""Multi-head models: one network, several heads, one pass; several models over one decode."""

from __future__ import annotations

import json
from collections import namedtuple

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import torchinfer as ti
from torchinfer.api import load_group
from torchinfer.cli.app import run
from torchinfer.errors import TorchinferError
from torchinfer.models import LoadedModel, PreprocessConfig
from torchinfer.results import Detections, MultiTask, Segmentation
from torchinfer.runner.inputs import iter_sources
from torchinfer.tasks import ClassificationPredictor, SegmentationPredictor, YoloDetectionPredictor
from torchinfer.tasks.heads import parse_head_argument, read_head_file

SIZE = 64
HEADS = [{"name": "cls", "task": "classify", "labels": ["red", "green", "blue"]},
         {"name": "seg", "task": "segment", "labels": ["background", "red"]},
         {"name": "det", "task": "detect", "output": "boxes", "labels": ["red", "other"],
          "options": {"conf": 0.3}}]


class ColourNet(nn.Module):
    """A network whose heads answer from the pixels, so the right answer is known: the mean
    colour's class, a 'red' mask, and one box around the red pixels in the YOLOv8 layout."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(8.0))
        self.conv = nn.Conv2d(3, 3, 1)  # makes it a convolutional network (channels_last...)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x + self.conv(x)
        red = (x[:, 0] - x[:, 1:].amax(1))  # > 0 where red dominates, in [0, 1] inputs
        seg = torch.stack([-red, red], 1) * self.scale
        cls = x.mean((2, 3)) * self.scale
        b, h, w = red.shape
        ys = torch.arange(h, dtype=x.dtype).view(1, h, 1).expand(b, h, w)
        xs = torch.arange(w, dtype=x.dtype).view(1, 1, w).expand(b, h, w)
        on = (red > 0.2).to(x.dtype)
        n = on.sum((1, 2)).clamp(min=1)
        big = 1e4
        x0 = torch.where(on > 0, xs, big).amin((1, 2))
        x1 = torch.where(on > 0, xs + 1, -big).amax((1, 2))
        y0 = torch.where(on > 0, ys, big).amin((1, 2))
        y1 = torch.where(on > 0, ys + 1, -big).amax((1, 2))
        box = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], 1)  # (B, 4)
        score = (on.sum((1, 2)) > 0).to(x.dtype) * 0.9
        det = torch.cat([box[:, :, None], score.view(b, 1, 1), torch.zeros(b, 1, 1)], 1)
        return {"cls": cls, "seg": seg, "boxes": det.expand(b, 6, 8) * (n > 0).view(b, 1, 1)}


def _picture(h: int, w: int, box: tuple[int, int, int, int]) -> Image.Image:
    arr = np.full((h, w, 3), (20, 120, 40), dtype=np.uint8)
    x0, y0, x1, y1 = box
    arr[y0:y1, x0:x1] = (230, 20, 20)
    return Image.fromarray(arr)


def _load(**options):
    return ti.load("multi", ColourNet(), heads=HEADS, input_size=SIZE, device="cpu", **options)


def _single(cls, net: nn.Module, output: str, labels, **options):
    """The single-task predictor of one head: the same network, only that output."""

    class One(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)[output]

    cfg = PreprocessConfig((SIZE, SIZE), None, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    loaded = LoadedModel(module=One(), name="one", task=None, preprocess=cfg, labels=labels,
                         weights=None)
    return cls(loaded, device="cpu", **options)


def test_each_head_equals_its_single_task_predictor():
    multi = _load()
    net = multi.model.module
    images = [_picture(SIZE, SIZE, (10, 12, 40, 30)), _picture(SIZE, SIZE, (0, 0, 5, 64))]
    got = multi(images)
    singles = {"cls": _single(ClassificationPredictor, net, "cls", HEADS[0]["labels"]),
               "seg": _single(SegmentationPredictor, net, "seg", HEADS[1]["labels"]),
               "det": _single(YoloDetectionPredictor, net, "boxes", HEADS[2]["labels"],
                              conf=0.3)}
    for name, predictor in singles.items():
        for mine, theirs in zip(got, predictor(images)):
            assert type(mine[name]) is type(theirs)
            assert {k: v for k, v in mine[name].to_dict().items() if k not in ("speed", "source")} \
                == {k: v for k, v in theirs.to_dict().items() if k not in ("speed", "source")}


def test_heads_map_back_through_the_letterbox():
    """A wide picture: the red box comes back in its pixels, the mask on its pixels."""
    image = _picture(90, 200, (120, 30, 170, 70))
    result = _load()(image)
    assert isinstance(result, MultiTask) and result.ok
    assert result["cls"].top1.label == "green"
    seg = result["seg"]
    assert isinstance(seg, Segmentation) and seg.mask.shape == (90, 200)
    truth = np.zeros((90, 200), bool)
    truth[30:70, 120:170] = True
    iou = (truth & (seg.mask == 1)).sum() / (truth | (seg.mask == 1)).sum()
    assert iou > 0.9
    det = result["det"]
    assert isinstance(det, Detections) and len(det) == 1
    np.testing.assert_allclose(det.boxes[0], [120, 30, 170, 70], atol=2.5)


def test_a_coarse_mask_maps_back_through_the_letterbox():
    """Mask logits at a quarter of the input: each picture's mask is the argmax of the logits
    brought to the input's resolution and cut to the picture, whether the letterbox pads
    only (its part is upsampled alone) or also scales."""

    class Coarse(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = ColourNet()

        def forward(self, x):
            out = dict(self.net(x))
            out["seg"] = nn.functional.avg_pool2d(out["seg"], 4)
            return out

    predictor = ti.load("multi", Coarse(), heads=HEADS[:2], input_size=SIZE, device="cpu")
    images = [_picture(SIZE, SIZE - 21, (7, 9, 30, 41)), _picture(90, 200, (120, 30, 170, 70)),
              _picture(SIZE, SIZE, (3, 4, 50, 20))]
    decoded = predictor.decode(list(iter_sources(images)))
    with torch.inference_mode():
        tensor = predictor.device_preprocess(predictor.to_device(decoded.batch.tensor))
        logits = predictor.model.module(tensor)["seg"]
    for image, result, lb, one in zip(images, predictor(images), decoded.batch.meta, logits):
        h, w = image.height, image.width
        if (h, w) == (SIZE, SIZE):
            expected = nn.functional.interpolate(one[None], size=(h, w), mode="bilinear")[0]
        else:
            full = nn.functional.interpolate(one[None], size=(SIZE, SIZE), mode="bilinear")[0]
            nh, nw = round(h * lb.scale), round(w * lb.scale)
            left, top = lb.pad
            expected = full[:, top:top + nh, left:left + nw]
            if (nh, nw) != (h, w):
                expected = nn.functional.interpolate(expected[None], size=(h, w),
                                                     mode="bilinear")[0]
        assert result["seg"].mask.shape == (h, w)
        np.testing.assert_array_equal(result["seg"].mask, expected.argmax(0).numpy())


def test_named_tuple_and_tuple_outputs():
    Out = namedtuple("Out", "cls seg boxes")

    class AsTuple(nn.Module):
        def __init__(self, named: bool) -> None:
            super().__init__()
            self.net, self.named = ColourNet(), named

        def forward(self, x):
            d = self.net(x)
            return Out(d["cls"], d["seg"], d["boxes"]) if self.named else (d["cls"], d["seg"])

    image = _picture(SIZE, SIZE, (5, 5, 30, 30))
    named = ti.load("multi", AsTuple(True), heads=HEADS, input_size=SIZE, device="cpu")(image)
    heads = [dict(HEADS[0], output="0"), dict(HEADS[1], output="1")]
    positional = ti.load("multi", AsTuple(False), heads=heads, input_size=SIZE, device="cpu")(image)
    assert named["cls"].top1 == positional["cls"].top1
    assert (named["seg"].mask == positional["seg"].mask).all()


def test_head_options_per_head_and_shared():
    predictor = _load(top_k=2, head_options={"det": {"conf": 0.95}})
    result = predictor(_picture(SIZE, SIZE, (10, 10, 30, 30)))
    assert len(result["cls"].topk) == 2
    assert len(result["det"]) == 0  # its one box scores 0.9


@pytest.mark.parametrize("heads, expected", [
    ([dict(HEADS[0], output="logits")], "reads output 'logits', but the model's outputs are "
                                        "cls, seg, boxes"),
    ([dict(HEADS[1], labels=["a", "b", "c"])], "has 3 labels but output 'seg' gives 2 classes"),
    ([{"name": "x", "task": "pose"}], "unknown task 'pose'"),
    ([dict(HEADS[0]), dict(HEADS[0])], "head names must be unique"),
    ([dict(HEADS[0], output="seg")], "needs a 2-D output"),
    ([dict(HEADS[2], options={"conf": 2})], "conf must be in [0, 1], got 2"),
    ([dict(HEADS[0], options={"conf": 0.5})], "has no option 'conf'"),
])
def test_bad_head_specifications_are_clear(heads, expected):
    with pytest.raises(TorchinferError) as err:
        ti.load("multi", ColourNet(), heads=heads, input_size=SIZE, device="cpu")
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_a_model_without_heads_is_refused():
    with pytest.raises(TorchinferError, match="no heads"):
        ti.load("multi", ColourNet(), input_size=SIZE, device="cpu")


def test_head_arguments_and_files(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n", encoding="utf-8")
    head = parse_head_argument(f"cls=classify:{labels}:top_k=2")
    assert head.labels == ("red", "green", "blue") and head.option("top_k") == 2
    det = parse_head_argument("det=detect:coco80:yolov8:output=boxes:conf=0.4")
    assert len(det.labels) == 80 and det.labels[0] == "person"
    assert det.option("decoder") == "yolov8" and det.output == "boxes" and det.option("conf") == 0.4
    assert len(parse_head_argument("seg=segment:voc").labels) == 21
    yaml_file = tmp_path / "heads.yaml"
    yaml_file.write_text("heads:\n  - {name: cls, task: classify}\n"
                         "  - {name: seg, task: segment, labels: [background, red]}\n",
                         encoding="utf-8")
    assert [h.name for h in read_head_file(yaml_file)] == ["cls", "seg"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("- !!python/object/apply:os.system [echo hi]\n", encoding="utf-8")
    with pytest.raises(TorchinferError, match="not valid YAML"):
        read_head_file(bad)  # safe_load: a file builds no objects


def test_multi_head_onnx_runs_by_path_with_the_same_answers(tmp_path):
    pytest.importorskip("onnxruntime")
    net = ColourNet()
    report = ti.export(net, tmp_path / "colour.onnx", heads=HEADS, input_size=SIZE)
    assert report.passed
    assert {c.agreement_kind for c in report.checks} == {"top-1", "pixel", "boxes"}
    images = [_picture(90, 200, (120, 30, 170, 70)), _picture(SIZE, SIZE, (3, 4, 50, 20))]
    by_path = ti.load("multi", tmp_path / "colour.onnx", device="cpu")(images)
    eager = ti.load("multi", net, heads=HEADS, input_size=SIZE, device="cpu")(images)
    for a, b in zip(by_path, eager):
        da, db = a.to_dict(), b.to_dict()
        da.pop("speed"), db.pop("speed")
        _assert_close(da, db)


def _assert_close(a, b, path="record"):
    """The same record up to float32 rounding (onnxruntime vs PyTorch kernels)."""
    assert type(a) is type(b), path
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, abs=1e-3, rel=1e-4), path
    else:
        assert a == b, path


def test_several_models_over_one_decode_equal_their_own_runs(shapes_images):
    group = load_group(["shapes_classifier", "shapes_segmenter", "shapes_detector"],
                       device="cpu", conf=0.3)
    alone = {"shapes_classifier": ti.load("classify", "shapes_classifier", device="cpu"),
             "shapes_segmenter": ti.load("segment", "shapes_segmenter", device="cpu"),
             "shapes_detector": ti.load("detect", "shapes_detector", device="cpu", conf=0.3)}
    results = group(shapes_images)
    for name, predictor in alone.items():
        for mine, theirs in zip(results, predictor(shapes_images)):
            a = {k: v for k, v in mine[name].to_dict().items() if k != "speed"}
            b = {k: v for k, v in theirs.to_dict().items() if k != "speed"}
            assert a == b


def test_cli_predict_multi_writes_every_head(tmp_path, shapes_images):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, image in enumerate(shapes_images):
        image.save(folder / f"scene{i}.jpg", quality=95)
    (folder / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    code = run(["predict", "multi", str(folder), "-m", "shape=classify:shapes_classifier",
                "-m", "shapes_segmenter", "-m", "objects=shapes_detector", "--out", str(out),
                "--save-vis", "--save-masks", "--quiet"])
    assert code == 1  # one input failed
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == len(shapes_images) + 1
    broken = next(r for r in records if r["source"].endswith("broken.jpg"))
    assert "error" in broken and "heads" not in broken
    ok = [r for r in records if "heads" in r]
    assert all(set(r["heads"]) == {"shape", "shapes_segmenter", "objects"} for r in ok)
    assert all((out / r["files"]["vis"]).is_file() for r in ok)
    assert all((out / r["files"]["shapes_segmenter.mask"]).is_file() for r in ok)
    coco = json.loads((out / "coco_results.json").read_text())
    assert coco and {c["head"] for c in coco} == {"objects"}
    assert {c["image_id"] for c in coco} <= {r["image_id"] for r in ok}


@pytest.mark.parametrize("args, expected", [
    (["-m", "shapes_classifier", "-m", "shapes_detector", "--head", "a=classify"],
     "several models"),
    (["-m", "shapes_classifier", "--head-option", "conf=0.5"], "HEAD.KEY=VALUE"),
    (["-m", "shapes_detector", "--head", "x=pose"], "unknown task 'pose'"),
])
def test_cli_multi_mistakes_are_one_line(tmp_path, capsys, args, expected):
    image = tmp_path / "a.png"
    _picture(32, 32, (1, 1, 5, 5)).save(image)
    code = run(["predict", "multi", str(image), *args, "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1


def test_multi_head_torchscript_runs_by_path_with_the_same_answers(tmp_path):
    net = ColourNet()
    report = ti.export(net, tmp_path / "colour.pt", format="torchscript", heads=HEADS,
                       input_size=SIZE)
    assert report.passed and len(report.checks) == 2 * len(HEADS)
    images = [_picture(90, 200, (120, 30, 170, 70))]
    by_path = ti.load("multi", tmp_path / "colour.pt", device="cpu")(images)
    eager = ti.load("multi", net, heads=HEADS, input_size=SIZE, device="cpu")(images)
    for a, b in zip(by_path, eager):
        da, db = a.to_dict(), b.to_dict()
        da.pop("speed"), db.pop("speed")
        _assert_close(da, db)


def test_inspect_splits_macs_between_trunk_and_heads():
    """shapes_multitask: the encoder and the decoder down to stride 8 feed every head (trunk);
    the decoder's stride-4 stage and the mask's own convolutions feed the mask and the shape
    head (which reads the mask's areas); the shape head's own correction feeds the shape
    alone, as the tower and box head feed the boxes alone."""
    report = ti.inspect("shapes_multitask")
    split = report.head_macs
    assert sum(split.values()) == report.macs
    macs = {r.path: r.macs for r in report.layers}
    shared = macs["encoder"] + macs["decoder.0"] + macs["decoder.1"]
    assert split["trunk"] == shared and macs["encoder"] > 0
    assert split["shape+mask"] == macs["decoder.2"] + macs["head"] > 0
    assert split["objects"] == macs["tower"] + macs["cls"] + macs["box"] > 0
    assert split["shape"] == macs["shape_head"] > 0  # its learnt correction
    assert "MACs by head: trunk" in "\n".join(report.summary_lines())


def test_eval_multi_scores_each_head_as_its_task_would(tmp_path, capsys):
    """The bundled shapes_multitask, each head on its own layout; each head's report is the
    single-task evaluator's on that head (same metrics as evaluating the head alone)."""
    from torchinfer.datasets.shapes import WRITERS, write_dominant

    data = {task: WRITERS[task](tmp_path / task, 12, 99_001) for task in ("segment", "detect")}
    data["classify"] = write_dominant(tmp_path / "classify", 16, 99_002)
    code = run(["eval", "multi", "shapes_multitask", "--data", f"shape={data['classify']}",
                "--data", f"mask={data['segment']}", "--data", f"objects={data['detect']}",
                "--json", "--quiet"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["task"] == "multi" and set(report["heads"]) == {"shape", "mask", "objects"}
    assert report["heads"]["shape"]["task"] == "classify"
    assert report["heads"]["shape"]["metrics"]["top1"] >= 0.85
    assert report["heads"]["mask"]["metrics"]["miou"] >= 0.8
    assert report["heads"]["objects"]["metrics"]["bbox"]["map50"] >= 0.8
    # detection is scored as `eval detect` scores: down to conf 0.001, 100 per image
    assert report["heads"]["objects"]["options"]["conf"] == 0.001



def test_cli_heads_for_a_file_that_names_none(tmp_path):
    """A TorchScript file of one's own, without heads in it: --head gives them, or a head file."""
    traced = torch.jit.trace(ColourNet().eval(), torch.zeros(1, 3, SIZE, SIZE), strict=False)
    path = tmp_path / "colour.pt"
    traced.save(str(path))
    (tmp_path / "labels.txt").write_text("red\ngreen\nblue\n", encoding="utf-8")
    image = tmp_path / "wide.png"
    _picture(90, 200, (120, 30, 170, 70)).save(image)
    args = ["predict", "multi", str(image), "-m", str(path), "--input-size", str(SIZE),
            "--head", f"cls=classify:{tmp_path / 'labels.txt'}:top_k=1",
            "--head", "seg=segment:output=seg", "--head", "det=detect:output=boxes:conf=0.3",
            "--out", str(tmp_path / "a"), "--quiet"]
    assert run(args) == 0
    record = json.loads((tmp_path / "a" / "predictions.jsonl").read_text())
    assert record["heads"]["cls"]["top1"]["label"] == "green"
    assert len(record["heads"]["cls"]["topk"]) == 1
    box = record["heads"]["det"]["detections"][0]["box"]
    assert abs(box[0] - 120) < 3 and abs(box[2] - 170) < 3
    heads_file = tmp_path / "heads.json"
    heads_file.write_text(json.dumps({"heads": [dict(HEADS[1], output="seg")]}), encoding="utf-8")
    assert run(["predict", "multi", str(image), "-m", str(path), "--input-size", str(SIZE),
                "--heads", str(heads_file), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    record = json.loads((tmp_path / "b" / "predictions.jsonl").read_text())
    assert list(record["heads"]) == ["seg"]
    # the heads are part of the run's fingerprint: resuming with others is refused
    assert run(["predict", "multi", str(image), "-m", str(path), "--input-size", str(SIZE),
                "--head", "seg=segment", "--out", str(tmp_path / "b"), "--quiet",
                "--resume"]) == 2
