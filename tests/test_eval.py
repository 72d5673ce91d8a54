"""Evaluation: the pycocotools glue on hand-made cases with known answers, oracle models whose
accuracy / mIoU / mAP is known exactly, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch import nn
from typer.testing import CliRunner

import torchinfer as ti
from torchinfer.cli.app import app
from torchinfer.draw import voc_palette
from torchinfer.evaluation import (
    DatasetError,
    coco_evaluate,
    detection_records,
    evaluate_classification,
    evaluate_detection,
    evaluate_segmentation,
    map_categories,
    segmentation_scores,
)
from torchinfer.evaluation.coco import CocoRecords
from torchinfer.results import Detections, InstanceMask

runner = CliRunner()


# --- the pycocotools glue -----------------------------------------------------------------------

# Non-contiguous dataset category ids, in another order than the model's labels; the model also
# has torchvision-style placeholders and a class the dataset does not know.
CATEGORIES = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
MODEL_LABELS = ["__background__", "cat", "N/A", "Dog", "bird"]  # "Dog": matched loosely
CAT, DOG, BIRD = 1, 3, 4


def dets(boxes, class_ids, scores=None, size=(200, 300)) -> Detections:
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    scores = np.array(scores if scores is not None else [0.9] * len(boxes), np.float32)
    ids = np.array(class_ids, np.int64)
    return Detections(source="x", boxes=boxes, scores=scores, class_ids=ids,
                      labels=tuple(MODEL_LABELS[i] for i in ids), image_size=size)


def gt(image_id, cat_id, xywh, ann_id):
    return {"id": ann_id, "image_id": image_id, "category_id": cat_id, "bbox": list(xywh),
            "area": xywh[2] * xywh[3], "iscrowd": 0}


def coco_dataset(annotations, image_ids=(10, 20, 30, 40)):
    return {"images": [{"id": i, "file_name": f"{i}.jpg", "height": 200, "width": 300}
                       for i in image_ids],
            "annotations": annotations, "categories": CATEGORIES}


def test_categories_map_by_name_not_by_class_id():
    cmap = map_categories(MODEL_LABELS, CATEGORIES)
    assert cmap.to_category == {CAT: 3, DOG: 7}
    assert cmap.model_without_category == ("bird",)  # placeholders are not reported
    assert cmap.categories_without_class == ()
    assert cmap.category_ids == [3, 7]


def test_records_keep_dataset_ids_convert_to_xywh_and_drop_unknown_classes():
    records = detection_records(dets([[10, 20, 60, 100], [0, 0, 5, 5], [1, 2, 3, 4]],
                                     [DOG, BIRD, CAT], [0.9, 0.8, 0.7]), 42,
                                map_categories(MODEL_LABELS, CATEGORIES).to_category)
    assert records.dropped == 1
    assert [(r["image_id"], r["category_id"]) for r in records.bbox] == [(42, 7), (42, 3)]
    assert records.bbox[0]["bbox"] == [10.0, 20.0, 50.0, 80.0]
    assert records.bbox[0]["score"] == pytest.approx(0.9)
    assert records.segm == []


def test_coco_known_answers():
    """Perfect boxes -> 1.0; an image without ground truth and one without detections both
    work; a missed object halves recall; a box shifted to IoU 0.61 counts at .5 but not .75."""
    to_category = map_categories(MODEL_LABELS, CATEGORIES).to_category
    truth = [gt(10, 3, (20, 30, 100, 50), 1), gt(10, 7, (150, 40, 80, 120), 2),
             gt(20, 7, (0, 0, 100, 100), 3), gt(40, 3, (50, 50, 40, 40), 4)]
    records = CocoRecords()
    detection_records(dets([[20, 30, 120, 80], [150, 40, 230, 160], [5, 5, 50, 50]],
                           [CAT, DOG, BIRD]), 10, to_category, into=records)
    detection_records(dets([[0, 0, 100, 100]], [DOG]), 20, to_category, into=records)
    detection_records(dets([], []), 30, to_category, into=records)  # no GT, no detections
    assert records.dropped == 1 and len(records.bbox) == 3

    perfect = coco_evaluate(coco_dataset(truth[:3], (10, 20, 30)), records.bbox)
    assert (perfect.map, perfect.map50, perfect.map75) == pytest.approx((1.0, 1.0, 1.0))
    assert perfect.per_category == {cid: pytest.approx({"ap": 1.0, "ap50": 1.0, "ap75": 1.0})
                                    for cid in (3, 7)}

    # image 40 has a cat and no detections: cat recall stops at 1/2, so its AP is 51/101
    # (101-point interpolation: precision 1 up to recall 0.5, 0 after), dog's stays 1
    missed = coco_evaluate(coco_dataset(truth), records.bbox)
    assert missed.per_category[3]["ap"] == pytest.approx(51 / 101)
    assert missed.map == pytest.approx((1 + 51 / 101) / 2)

    # a box shifted 24 px: IoU 76/124 = 0.613, matched at IoU .5, .55, .6 of the ten thresholds
    shifted = [{**records.bbox[2], "bbox": [24.0, 0.0, 100.0, 100.0]}]
    result = coco_evaluate(coco_dataset(truth), shifted, image_ids=[20])
    assert result.per_category[3]["ap"] is None  # no cat in image 20: undefined, not 0
    assert result.map50 == pytest.approx(1.0) and result.map75 == 0.0
    assert result.map == pytest.approx(0.3)


def test_mask_records_are_scored_as_segm():
    """Masks go to pycocotools as compressed RLE; the same mask scores 1, one cut to 72 of 140
    columns (IoU 0.51) only at IoU .5 of the ten thresholds."""
    from pycocotools import mask as mask_utils

    full = np.zeros((200, 300), bool)
    full[40:120, 60:200] = True
    rle = mask_utils.encode(np.asfortranarray(full.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    truth = coco_dataset([{**gt(10, 3, (60, 40, 140, 80), 1), "segmentation": rle}], (10,))
    to_category = map_categories(MODEL_LABELS, CATEGORIES).to_category
    for predicted, expected in ((full, 1.0), (full & (np.arange(300) < 132), 0.1)):
        found = Detections(source="x", boxes=np.array([[60, 40, 200, 120]], np.float32),
                           scores=np.array([0.9], np.float32), class_ids=np.array([CAT]),
                           labels=("cat",), image_size=(200, 300),
                           masks=(InstanceMask.from_full(predicted),))
        records = detection_records(found, 10, to_category)
        assert records.segm[0]["image_id"] == 10 and records.segm[0]["category_id"] == 3
        assert isinstance(records.segm[0]["segmentation"]["counts"], str)
        assert "segmentation" not in records.bbox[0]
        scores = coco_evaluate(truth, records.segm, iou_type="segm")
        assert scores.map == pytest.approx(expected)


def test_empty_results_score_zero_and_empty_truth_is_undefined():
    truth = [gt(10, 3, (20, 30, 100, 50), 1)]
    nothing = coco_evaluate(coco_dataset(truth), [])  # pycocotools' loadRes cannot take []
    assert (nothing.map, nothing.map50, nothing.map75) == (0.0, 0.0, 0.0)
    no_truth = coco_evaluate(coco_dataset([]), [])
    assert no_truth.map is None and no_truth.per_category[3]["ap"] is None


# --- classification -----------------------------------------------------------------------------

COLOURS = {"red": (230, 20, 30), "green": (20, 210, 40), "blue": (30, 40, 220)}


class MeanColour(nn.Module):
    """Oracle classifier: the logits are the mean R, G, B of the image (inputs in [0, 1])."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3)) * 10


def colour_classifier() -> nn.Module:  # a factory for the CLI: "test_eval:colour_classifier"
    return MeanColour()


def colour_image(rgb, size=(24, 20), seed=0) -> Image.Image:
    noise = np.random.default_rng(seed).integers(-15, 16, (size[1], size[0], 3))
    return Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8))


@pytest.fixture
def image_folder(tmp_path):
    """Folders sorted blue, green, red (the model's order is red, green, blue); two images per
    class, one red image filed under green (mislabelled), one corrupt file."""
    root = tmp_path / "val"
    for name in COLOURS:
        (root / name).mkdir(parents=True)
        for i in range(2):
            colour_image(COLOURS[name], seed=i).save(root / name / f"{name}{i}.png")
    colour_image(COLOURS["red"], seed=5).save(root / "green" / "actually_red.png")
    (root / "red" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "labels.txt").write_text("red\ngreen\nblue\n")  # a file at the top is not a class
    return root


def load_colour_classifier(**kwargs):
    return ti.load("classify", MeanColour(), device="cpu", labels=["red", "green", "blue"],
                   mean=(0, 0, 0), std=(1, 1, 1), top_k=1, **kwargs)


def test_classification_oracle_with_a_mislabelled_image(image_folder):
    clf = load_colour_classifier()
    report = evaluate_classification(clf, image_folder)
    assert clf.top_k == 1  # raised to 5 during the evaluation only
    assert (report.images, report.evaluated, report.failed) == (8, 7, 1)
    assert report.failures[0]["source"].endswith("broken.png")
    assert report.top1 == pytest.approx(6 / 7)
    assert report.top5_k == 3 and report.top5 == 1.0  # three classes: top-5 is top-3
    per_class = {c["name"]: c for c in report.classes}
    assert per_class["green"]["accuracy"] == pytest.approx(2 / 3)
    assert per_class["red"] == {**per_class["red"], "images": 3, "evaluated": 2, "accuracy": 1.0,
                                "model_index": 0}
    assert report.mean_class_accuracy == pytest.approx((1 + 2 / 3 + 1) / 3)
    # rows/columns in folder order (blue, green, red) + "(other)"
    assert report.confusion == [[2, 0, 0, 0], [0, 2, 1, 0], [0, 0, 2, 0]]
    assert report.misclassified[0]["source"].endswith("actually_red.png")
    assert report.misclassified[0]["predicted"] == "red"
    d = report.to_dict()
    assert json.loads(json.dumps(d))["metrics"]["top1"] == pytest.approx(6 / 7, abs=1e-6)
    limited = evaluate_classification(clf, image_folder, limit=2)
    assert limited.images == 2 and limited.top1 == 1.0  # the first two: blue0, blue1


def test_classification_folder_names_must_be_model_classes(image_folder):
    (image_folder / "purple").mkdir()
    colour_image((128, 0, 128)).save(image_folder / "purple" / "p.png")
    with pytest.raises(DatasetError, match="'purple'") as info:
        evaluate_classification(load_colour_classifier(), image_folder)
    assert str(image_folder) in str(info.value)


# --- segmentation -------------------------------------------------------------------------------


def colour_segmenter() -> nn.Module:
    """Oracle: background / red / green / blue from a 1x1 conv on RGB in [0, 1]."""
    conv = nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[0.0, 0, 0], [40, -40, -40], [-40, 40, -40],
                                        [-40, -40, 40]]).view(4, 3, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, -10, -10, -10]))
    return conv


def save_palette_png(mask: np.ndarray, path) -> None:
    img = Image.new("P", (mask.shape[1], mask.shape[0]))
    img.putpalette(voc_palette().ravel().tolist())
    img.frombytes(mask.astype(np.uint8).tobytes())
    img.save(path)


@pytest.fixture
def voc(tmp_path):
    """Image 'a' (16x8): left half red, right half grey (the oracle predicts red | background).
    Its mask: left half red with rows 0-1 ignored (255) and row 7 background; right half
    background except columns 8-11, labelled green. 'b' has a mask of the wrong size; 'c' is
    not in the split."""
    root = tmp_path / "voc"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    img = np.full((8, 16, 3), 128, np.uint8)
    img[:, :8] = (255, 0, 0)
    mask = np.zeros((8, 16), np.uint8)
    mask[:, :8] = 1
    mask[:2, :8] = 255
    mask[7, :8] = 0
    mask[:, 8:12] = 2
    for name in ("a", "b", "c"):  # 8x8-aligned regions: JPEG at quality 100 keeps the colours
        Image.fromarray(img).save(root / "JPEGImages" / f"{name}.jpg", quality=100, subsampling=0)
    save_palette_png(mask, root / "SegmentationClass" / "a.png")
    Image.fromarray(mask[:, :12]).save(root / "SegmentationClass" / "b.png")  # L mode, too small
    Image.fromarray(mask).save(root / "SegmentationClass" / "c.png")
    (root / "ImageSets/Segmentation/val.txt").write_text("a\nb\n")
    (root / "labels.txt").write_text("background\nred\ngreen\nblue\n")
    return root


def test_segmentation_metrics_by_hand(voc):
    # input size = the short side: no resizing, so the expected numbers are exact
    seg = ti.load("segment", colour_segmenter(), device="cpu", mean=(0, 0, 0), std=(1, 1, 1),
                  labels=["background", "red", "green", "blue"], input_size=8)
    report = evaluate_segmentation(seg, voc, split="val")
    assert (report.images, report.evaluated) == (2, 1)
    assert "b.png" in report.failures[0]["error"] and "12x8" in report.failures[0]["error"]
    # valid pixels: 128 - 16 ignored = 112
    # red:   TP 40, FP 8 (row 7 is background)             IoU 40/48 = 5/6
    # bg:    TP 32, FP 32 (the green columns), FN 8        IoU 32/72 = 4/9
    # green: TP 0, FN 32                                   IoU 0
    # blue:  absent from truth and prediction              IoU undefined, not in the mean
    assert report.ignored_pixels == 16 and report.pixels == 112
    iou = {c["name"]: c["iou"] for c in report.classes}
    assert iou["red"] == pytest.approx(5 / 6) and iou["background"] == pytest.approx(4 / 9)
    assert iou["green"] == 0.0 and iou["blue"] is None
    assert report.miou_classes == 3
    assert report.miou == pytest.approx((5 / 6 + 4 / 9 + 0) / 3)
    assert report.pixel_accuracy == pytest.approx(72 / 112)
    assert report.to_dict()["metrics"]["miou_over"].startswith("classes present")
    everything = evaluate_segmentation(seg, voc)  # no split: every mask, a, b and c
    assert (everything.images, everything.evaluated) == (3, 2)
    assert everything.miou == pytest.approx(report.miou)


def test_segmentation_scores_from_a_confusion_matrix():
    scores = segmentation_scores(np.array([[3, 1, 0], [0, 4, 0], [0, 0, 0]]))
    assert scores["iou"] == [pytest.approx(0.75), pytest.approx(0.8), None]
    assert scores["pixel_accuracy"] == pytest.approx(7 / 8)


def test_segmentation_layout_errors_name_the_file(voc):
    seg = ti.load("segment", colour_segmenter(), device="cpu", labels=["bg", "r", "g", "b"])
    with pytest.raises(DatasetError, match="test.txt"):
        evaluate_segmentation(seg, voc, split="test")
    (voc / "JPEGImages" / "a.jpg").unlink()
    with pytest.raises(DatasetError, match="a.jpg"):
        evaluate_segmentation(seg, voc, split="val")


# --- detection end to end ---------------------------------------------------------------------


class RedBox(nn.Module):
    """YOLOv8-layout oracle: the box of the pure-red pixels as class 1 ("red"), score 0.9, and
    empty anchors; nothing when there is no red."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = (x[:, 0] > 0.9) & (x[:, 1] < 0.1) & (x[:, 2] < 0.1)
        cols, rows = red.any(1), red.any(2)
        xs = torch.arange(x.shape[3], dtype=torch.float32)
        ys = torch.arange(x.shape[2], dtype=torch.float32)
        x0 = torch.where(cols, xs, torch.full_like(xs, 1e9)).amin(1)
        x1 = torch.where(cols, xs, torch.full_like(xs, -1e9)).amax(1) + 1
        y0 = torch.where(rows, ys, torch.full_like(ys, 1e9)).amin(1)
        y1 = torch.where(rows, ys, torch.full_like(ys, -1e9)).amax(1) + 1
        found = red.flatten(1).any(1)
        box = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], 1)
        box = torch.where(found[:, None], box, torch.zeros_like(box))
        scores = torch.stack([torch.zeros_like(x0), 0.9 * found.float()], 1)
        first = torch.cat([box, scores], 1)[:, :, None]  # (B, 4 + 2, 1)
        return torch.cat([first, torch.zeros(x.shape[0], 6, 20)], 2)


def test_detection_end_to_end(tmp_path):
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    img = Image.new("RGB", (200, 120), (90, 110, 100))
    ImageDraw.Draw(img).rectangle((40, 30, 139, 89), fill=(255, 0, 0))  # x 40..140, y 30..90
    img.save(root / "images" / "one.png")
    Image.new("RGB", (200, 120), (90, 110, 100)).save(root / "images" / "empty.png")
    (root / "annotations.json").write_text(json.dumps({
        "images": [{"id": 5, "file_name": "one.png", "height": 120, "width": 200},
                   {"id": 9, "file_name": "empty.png", "height": 120, "width": 200},
                   {"id": 11, "file_name": "missing.png", "height": 120, "width": 200}],
        "annotations": [{"image_id": 5, "category_id": 12, "bbox": [40, 30, 100, 60]}],
        "categories": [{"id": 12, "name": "red"}, {"id": 2, "name": "green"}]}))
    det = ti.load("detect", RedBox(), device="cpu", labels=["blue", "red"], input_size=256,
                  conf=0.001, max_det=100)
    report = evaluate_detection(det, root)
    assert (report.images, report.evaluated, report.failed) == (3, 2, 1)
    assert report.failures[0] == {"source": str(root / "images" / "missing.png"),
                                  "error": "file not found"}
    assert report.map == pytest.approx(1.0) and report.map75 == pytest.approx(1.0)
    assert report.detections == 1 and report.classes[0]["category_id"] == 12
    assert report.model_classes_without_category == ["blue"]
    assert report.categories_without_class == ["green"]
    assert any("'green'" in w for w in report.warnings)
    assert report.to_dict()["metrics"]["bbox"]["map50"] == pytest.approx(1.0)


# --- the command line ---------------------------------------------------------------------------


def test_cli_eval_classify_json_and_out(image_folder, tmp_path):
    labels = tmp_path / "names.txt"
    labels.write_text("red\ngreen\nblue\n")
    out = tmp_path / "run"
    args = ["eval", "classify", "test_eval:colour_classifier", "--data", str(image_folder),
            "--labels", str(labels), "--mean", "0,0,0", "--std", "1,1,1", "--device", "cpu",
            "--json", "--out", str(out)]
    result = runner.invoke(app, args + ["--allow-failures"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["metrics"]["top1"] == pytest.approx(6 / 7, abs=1e-6)
    assert report["failed"] == 1
    assert report["confusion_matrix"]["labels"] == ["blue", "green", "red"]
    assert json.loads((out / "eval.json").read_text()) == report
    strict = runner.invoke(app, args)  # a failed image: exit 1, as `predict` does
    assert strict.exit_code == 1
    table = runner.invoke(app, args[:-3] + ["--allow-failures"])
    assert table.exit_code == 0 and "top-1 accuracy" in table.stdout and "green" in table.stdout


def test_cli_eval_bad_data_exits_2_naming_the_path(tmp_path):
    missing = tmp_path / "no_such_dataset"
    for task in ("classify", "segment", "detect"):
        result = runner.invoke(app, ["eval", task, "resnet18", "--data", str(missing),
                                     "--device", "cpu"])
        assert result.exit_code == 2, (task, result.output)
        assert str(missing) in result.stderr
    (tmp_path / "coco").mkdir()
    result = runner.invoke(app, ["eval", "detect", "resnet18", "--data", str(tmp_path / "coco")])
    assert result.exit_code == 2 and "annotations.json" in result.stderr
