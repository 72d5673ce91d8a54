"""Object detection: torchvision detectors against their own output, YOLO-format oracles whose
exact answer is known (letterbox + decode + NMS + mapping back), the Detections type, drawing
by pixels, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask
from torch import nn
from torchvision.transforms.functional import pil_to_tensor
from typer.testing import CliRunner

import torchinfer as ti
from torchinfer.cli.app import app
from torchinfer.draw import class_colour, draw_detections
from torchinfer.results import Detections, InstanceMask
from torchinfer.tasks.yolo import letterbox

RED_BOX = (101, 57, 380, 260)  # x0, y0, x1, y1 (exclusive) of the red rectangle


def scene(size=(517, 333)) -> Image.Image:
    """An odd-sized grey image with one pure-red rectangle at a known place."""
    img = Image.new("RGB", size, (90, 110, 100))
    ImageDraw.Draw(img).rectangle((RED_BOX[0], RED_BOX[1], RED_BOX[2] - 1, RED_BOX[3] - 1),
                                  fill=(255, 0, 0))
    return img


class RedBoxOracle(nn.Module):
    """A 'detector' whose answer is exact: the box of the pure-red pixels, as class 2 with score
    0.9, plus a worse duplicate (NMS must drop it), a box of another class overlapping it (NMS is
    class-aware: it stays), low-score decoys (the confidence filter must drop them) and empty
    anchors (real exports have thousands: N > 4 + C, as in YOLO). Vectorised over the batch, so
    it also exports to ONNX with a dynamic batch axis."""

    def __init__(self, layout: str, num_classes: int = 3):
        super().__init__()
        self.layout, self.num_classes = layout, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = (x[:, 0] > 0.9) & (x[:, 1] < 0.1) & (x[:, 2] < 0.1)  # (B, H, W)
        cols, rows = red.any(1), red.any(2)
        xs = torch.arange(x.shape[3], dtype=torch.float32, device=x.device)
        ys = torch.arange(x.shape[2], dtype=torch.float32, device=x.device)
        x0 = torch.where(cols, xs, torch.full_like(xs, 1e9)).amin(1)
        x1 = torch.where(cols, xs, torch.full_like(xs, -1e9)).amax(1) + 1
        y0 = torch.where(rows, ys, torch.full_like(ys, 1e9)).amin(1)
        y1 = torch.where(rows, ys, torch.full_like(ys, -1e9)).amax(1) + 1
        cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
        ones = torch.ones_like(cx)
        candidates = [((cx, cy, w, h), 2, 0.9), ((cx + 3, cy + 2, w, h), 2, 0.6),
                      ((cx, cy, w * 0.9, h * 0.9), 1, 0.5),
                      ((30 * ones, 30 * ones, 20 * ones, 20 * ones), 0, 0.1),
                      ((500 * ones, 400 * ones, 60 * ones, 60 * ones), 1, 0.05)]
        preds = []
        for box, cls, score in candidates:
            scores = torch.zeros(x.shape[0], self.num_classes, device=x.device)
            scores[:, cls] = score
            parts = [torch.stack(box, 1)]
            if self.layout == "yolov5":  # objectness 1, class probability = score
                parts.append(ones[:, None])
            preds.append(torch.cat(parts + [scores], 1))
        out = torch.stack(preds, 1)  # (B, 5, 4 [+1] + C)
        out = torch.cat([out, torch.zeros(x.shape[0], 60, out.shape[2], device=x.device)], 1)
        return out if self.layout == "yolov5" else out.transpose(1, 2)  # yolov8: (B, 4 + C, N)


@pytest.mark.parametrize("layout", ["yolov8", "yolov5"])
def test_yolo_oracle_box_maps_back_within_one_pixel(layout):
    det = ti.load("detect", RedBoxOracle(layout), device="cpu", labels=["a", "b", "red"],
                  conf=0.25, iou=0.45)
    assert det.input_size == (640, 640)
    result = det(scene())
    assert det.decoder == "auto"
    assert list(result.labels) == ["red", "b"]  # duplicate removed by NMS, decoys filtered
    assert np.abs(result.boxes[0] - np.array(RED_BOX)).max() <= 1.0
    assert result.scores[0] == pytest.approx(0.9)
    assert result.image_size == (333, 517)
    assert (result.boxes[:, [0, 2]] <= 517).all() and (result.boxes[:, [1, 3]] <= 333).all()
    explicit = ti.load("detect", RedBoxOracle(layout), device="cpu", decoder=layout, max_det=1,
                       classes=[2])
    only = explicit(scene())
    assert len(only) == 1 and only.class_ids[0] == 2


def test_letterbox_geometry_round_trips():
    img = scene((517, 333))
    canvas, lb = letterbox(img, (640, 640))
    assert canvas.shape == (640, 640, 3)
    assert lb.scale == pytest.approx(640 / 517) and lb.pad == (0, round((640 - round(333 * 640 / 517)) / 2 - 0.1))
    assert (canvas[: lb.pad[1]] == 114).all()  # grey padding above the image
    model_box = torch.tensor([[0.0, lb.pad[1], 640.0, 640 - lb.pad[1]]])
    assert torch.allclose(lb.to_original(model_box), torch.tensor([[0.0, 0.0, 517.0, 333.0]]), atol=1.0)


@pytest.mark.parametrize("arch", ["fasterrcnn_mobilenet_v3_large_320_fpn", "ssdlite320_mobilenet_v3_large"])
def test_torchvision_detectors_match_their_own_output(arch, tmp_path, photo_paths):
    torch.manual_seed(0)
    # random weights score low: let every candidate through on both sides
    kwargs = {"box_score_thresh": 0.0} if arch.startswith("faster") else {"score_thresh": 0.0}
    model = torchvision.models.get_model(arch, weights_backbone=None, **kwargs).eval()
    weights = tmp_path / "w.pth"
    torch.save(model.state_dict(), weights)
    det = ti.load("detect", arch, weights, device="cpu", conf=0.0, channels_last=False,
                  model_kwargs=kwargs)
    assert det.decoder == "torchvision"
    categories = torchvision.models.get_model_weights(arch).DEFAULT.meta["categories"]
    for path in photo_paths[:2]:
        img = Image.open(path).convert("RGB")
        with torch.inference_mode():
            reference = model([pil_to_tensor(img).float() / 255])[0]
        ours = det(path)
        assert len(ours) == min(len(reference["boxes"]), 300) > 0
        assert np.allclose(ours.boxes, reference["boxes"][:300].numpy(), atol=1e-3)
        assert np.allclose(ours.scores, reference["scores"][:300].numpy(), atol=1e-5)
        assert (ours.class_ids == reference["labels"][:300].numpy()).all()
        assert list(ours.labels) == [categories[i] for i in ours.class_ids]  # N/A slots kept in place
        assert ours.image_size == (img.height, img.width)


@pytest.mark.slow
def test_maskrcnn_matches_and_masks_are_compact(tmp_path, photo_paths):
    torch.manual_seed(0)
    kwargs = {"box_score_thresh": 0.0}
    model = torchvision.models.get_model("maskrcnn_resnet50_fpn", weights_backbone=None, **kwargs).eval()
    torch.save(model.state_dict(), tmp_path / "w.pth")
    det = ti.load("detect", "maskrcnn_resnet50_fpn", tmp_path / "w.pth", device="cpu", conf=0.0,
                  channels_last=False, model_kwargs=kwargs, max_det=20)
    img = Image.open(photo_paths[0]).convert("RGB")
    with torch.inference_mode():
        reference = model([pil_to_tensor(img).float() / 255])[0]
    ours = det(photo_paths[0])
    n = len(ours)
    assert n > 0 and np.allclose(ours.boxes, reference["boxes"][:n].numpy(), atol=1e-3)
    for m, ref in zip(ours.masks, reference["masks"][:n, 0]):
        assert (m.full(ours.image_size) == (ref > 0.5).numpy()).all()


def test_detections_indexing_validation_and_coco():
    full = np.zeros((20, 30), bool)
    full[5:9, 10:25] = True
    full[12, 3] = True
    dets = Detections(source="x", image_size=(20, 30),
                      boxes=np.array([[3, 5, 25, 13], [0, 0, 5, 5]], np.float32),
                      scores=np.array([0.9, 0.2], np.float32), class_ids=np.array([3, 1]),
                      labels=("cat", "dog"),
                      masks=(InstanceMask.from_full(full), InstanceMask.from_full(np.zeros((20, 30), bool))))
    assert dets.masks[0].box == (3, 5, 25, 13) and dets.masks[0].area == full.sum()
    high = dets[dets.scores > 0.5]
    assert len(high) == 1 and high.labels == ("cat",) and len(high.masks) == 1
    assert len(dets[:0]) == 0
    rle = dets.masks[0].rle((20, 30))
    decoded = coco_mask.decode(coco_mask.frPyObjects(rle, 20, 30))
    assert (decoded.astype(bool) == full).all()  # pycocotools reads our RLE back exactly
    assert coco_mask.area(coco_mask.frPyObjects(rle, 20, 30)) == full.sum()
    records = dets.to_coco(image_id=7, category_ids={3: 17, 1: 18})
    assert records[0]["bbox"] == [3.0, 5.0, 22.0, 8.0] and records[0]["category_id"] == 17
    assert records[0]["image_id"] == 7 and "segmentation" in records[0]
    assert json.loads(json.dumps(dets.to_dict()))["detections"][1]["label"] == "dog"
    with pytest.raises(ValueError, match=r"scores must be shape \(2,\), got \(3,\)"):
        Detections(source="x", boxes=np.zeros((2, 4), np.float32), scores=np.zeros(3, np.float32),
                   class_ids=np.zeros(2, np.int64), labels=("a", "b"))
    with pytest.raises(ValueError, match="x1 >= x0"):
        Detections(source="x", boxes=np.array([[5, 0, 1, 1]], np.float32), scores=np.ones(1, np.float32),
                   class_ids=np.zeros(1, np.int64), labels=("a",))


def test_drawn_boxes_by_pixels():
    image = Image.new("RGB", (200, 120), (255, 255, 255))
    dets = Detections(source="x", image_size=(120, 200), boxes=np.array([[40, 50, 160, 110]], np.float32),
                      scores=np.array([0.87], np.float32), class_ids=np.array([5]), labels=("bus",))
    out = np.asarray(draw_detections(image, dets))
    colour = class_colour(5)
    assert tuple(out[80, 40]) == colour and tuple(out[80, 160]) == colour  # left/right edges
    assert tuple(out[80, 100]) == (255, 255, 255)  # inside the box: untouched
    assert tuple(out[110, 100]) == colour  # bottom edge
    tag = out[30:50, 41:60]
    assert (tag == colour).all(axis=2).mean() > 0.3  # label tag above the box, in the class colour


def test_cli_detect_writes_jsonl_coco_and_vis(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    scene().save(images / "a.png")
    scene((300, 400)).save(images / "b.jpg", quality=98)
    (images / "c.jpg").write_bytes(b"")
    # a TorchScript file run by path, as a user's exported detector would be
    torch.jit.script(RedBoxOracle("yolov8")).save(str(tmp_path / "oracle.pt"))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["predict", "detect", str(images), "-m", str(tmp_path / "oracle.pt"),
                                      "--device", "cpu", "--save-vis", "--out", str(out)])
    assert result.exit_code == 1, result.output  # c.jpg is empty
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [x["image_id"] for x in lines] == [0, 1, 2] and "error" in lines[2]
    assert np.abs(np.array(lines[0]["detections"][0]["box"]) - RED_BOX).max() <= 1.0
    coco = json.loads((out / "coco_results.json").read_text())
    assert {r["image_id"] for r in coco} == {0, 1}
    first = [r for r in coco if r["image_id"] == 0][0]
    assert np.abs(np.array(first["bbox"]) - [101, 57, 279, 203]).max() <= 2.0
    assert Image.open(lines[0]["files"]["vis"]).size == (517, 333)


def _ultralytics_style_onnx(path, task="detect"):
    """The red-box oracle exported to ONNX with the metadata Ultralytics' exporter writes
    (str() of Python values): names as a dict repr, imgsz as a list repr, stride, task."""
    import onnx

    torch.onnx.export(RedBoxOracle("yolov8"), (torch.zeros(1, 3, 640, 640),), str(path),
                      input_names=["images"], output_names=["output0"], opset_version=17,
                      dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}}, dynamo=False)
    model = onnx.load(str(path))
    for key, value in {"author": "Ultralytics", "stride": "32", "task": task, "batch": "1",
                       "imgsz": "[640, 640]", "names": "{0: 'a', 1: 'b', 2: 'red'}"}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def test_ultralytics_onnx_runs_by_path_alone(tmp_path):
    path = _ultralytics_style_onnx(tmp_path / "best.onnx")
    det = ti.load("detect", str(path), device="cpu")
    assert det.model.labels == ["a", "b", "red"] and det.input_size == (640, 640)
    assert det.model.preprocess.mean == (0.0, 0.0, 0.0) and det.model.preprocess.std == (1.0, 1.0, 1.0)
    from_onnx = det([scene(), scene((300, 400))])
    from_torch = ti.load("detect", RedBoxOracle("yolov8"), device="cpu",
                         labels=["a", "b", "red"])([scene(), scene((300, 400))])
    for a, b in zip(from_onnx, from_torch):
        assert a.labels == b.labels
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    assert np.abs(from_onnx[0].boxes[0] - np.array(RED_BOX)).max() <= 1.0
    # and from the command line, with nothing but the file
    scene().save(tmp_path / "img.png")
    result = CliRunner().invoke(app, ["predict", "detect", str(tmp_path / "img.png"), "-m", str(path),
                                      "--device", "cpu", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    line = json.loads((tmp_path / "out" / "predictions.jsonl").read_text())
    assert line["detections"][0]["label"] == "red"


def test_ultralytics_onnx_of_another_task_is_refused_clearly(tmp_path):
    path = _ultralytics_style_onnx(tmp_path / "seg.onnx", task="depth")
    with pytest.raises(ti.TorchinferError, match="Ultralytics 'depth' model"):
        ti.load("detect", str(path), device="cpu")
