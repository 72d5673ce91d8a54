"""Ultralytics segment, pose and OBB files: what is read from their metadata, the same
decoders for modules without metadata (``decoder=``), clear refusals, DOTA text, drawing and
evaluation (mask AP, keypoint OKS AP) on the fixtures that Ultralytics trained and exported
(see test_ultralytics_parity.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import torchinfer as ti
from torchinfer.datasets.shapes import CLASSES, generate_scene, scene_rng
from torchinfer.draw import class_colour, draw_detections
from torchinfer.evaluation.evaluators import evaluate_detection
from torchinfer.evaluation.keypoints import score_keypoints
from torchinfer.models.card import ModelCard
from torchinfer.runner.run import run_to_dir
from torchinfer.runner.sinks import read_jsonl, write_dota

FIXTURES = Path(__file__).parent / "fixtures" / "ultralytics"
IMAGES = sorted(str(p) for p in (FIXTURES / "images").glob("*.jpg"))
LABELS = list(CLASSES)


def fixture(name: str) -> str:
    return str(FIXTURES / f"{name}.onnx")


def metadata(name: str) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(fixture(name), load_external_data=False).metadata_props}


def rewrite(name: str, out: Path, *, drop_output: int | None = None, **meta: str | None) -> str:
    """The fixture with an output removed or metadata changed (None: the key removed)."""
    model = onnx.load(fixture(name))
    if drop_output is not None:
        del model.graph.output[drop_output]
    props = {p.key: p.value for p in model.metadata_props}
    for key, value in meta.items():
        props.pop(key, None) if value is None else props.__setitem__(key, value)
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(out))
    return str(out)


class SessionModule(nn.Module):
    """A module with no metadata that returns the file's outputs: as a tuple of tensors
    (a TorchScript export's shape), or nested as an Ultralytics torch segment model returns
    them in eval mode, ((predictions, prototypes), raw head outputs)."""

    def __init__(self, path: str, nested: bool = False):
        super().__init__()
        import onnxruntime

        self.session, self.nested = onnxruntime.InferenceSession(path), nested

    def forward(self, x: torch.Tensor):
        per_image = [self.session.run(None, {"images": x[i:i + 1].numpy()}) for i in range(len(x))]
        outputs = tuple(torch.from_numpy(np.concatenate(parts)) for parts in zip(*per_image))
        if self.nested:
            return (outputs if len(outputs) > 1 else outputs[0]), {"raw": outputs[0]}
        return outputs if len(outputs) > 1 else outputs[0]


@pytest.fixture(scope="module")
def by_path():
    """Each fixture's detections on the fixture pictures, by path alone (conf 0.1, iou 0.7:
    the tiny models' settings in test_ultralytics_parity.py), at least ten per model."""
    out = {}
    for name in ("yolov8n-seg", "yolov8n-pose", "yolov8n-obb"):
        out[name] = ti.load("detect", fixture(name), device="cpu", conf=0.1, iou=0.7)(IMAGES)
        assert sum(len(r) for r in out[name]) >= 10
    return out


def test_the_card_reads_the_ultralytics_task_and_keypoints():
    for name, task in (("yolov8n-seg", "segment"), ("yolov8n-pose", "pose"),
                       ("yolov8n-obb", "obb")):
        card = ModelCard.from_onnx_metadata(metadata(name), name)
        assert card.task == "detect" and card.extra["yolo_task"] == task
        assert card.labels == tuple(CLASSES) and card.input_size == (320, 320)
        assert card.preprocess.crop_size is None  # the letterbox, not resize + crop
    pose = ti.load("detect", fixture("yolov8n-pose"), device="cpu")
    assert pose.head.kpt_shape == (5, 3)
    assert pose.head.keypoint_names == ("centre", "left", "top", "right", "bottom")


def test_a_segment_file_without_its_prototypes_is_refused(tmp_path):
    path = rewrite("yolov8n-seg", tmp_path / "seg.onnx", drop_output=1)
    with pytest.raises(ti.TorchinferError,
                       match=r"\(B, 32, H/4, W/4\).*prototype output is missing"):
        ti.load("detect", path, device="cpu")
    # a module that returns the detections alone: refused on its first output
    predictor = ti.load("detect", SessionModule(path), device="cpu", decoder="yolov8-seg",
                        labels=LABELS, input_size=320)
    with pytest.raises(ti.TorchinferError, match=r"\(B, 4 \+ C \+ 32, N\).*gives 1 "
                                                 r"\(\(1, 40, 2100\)\): the prototype output"):
        predictor(IMAGES[0])


def _image():
    from PIL import Image

    return Image.open(IMAGES[0]).convert("RGB")


def test_a_pose_file_without_kpt_shape_and_an_unknown_task_are_refused(tmp_path):
    no_shape = rewrite("yolov8n-pose", tmp_path / "pose.onnx", kpt_shape=None)
    with pytest.raises(ti.TorchinferError, match=r"pose model without 'kpt_shape'.*\[K, 2\] or \[K, 3\]"):
        ti.load("detect", no_shape, device="cpu")
    unknown = rewrite("yolov8n-obb", tmp_path / "depth.onnx", task="depth")
    with pytest.raises(ti.TorchinferError, match=r"Ultralytics 'depth' model.*segment, pose, obb"):
        ti.load("detect", unknown, device="cpu")
    e2e = rewrite("yolov8n-obb", tmp_path / "e2e.onnx", end2end="True")
    with pytest.raises(ti.TorchinferError, match="end2end=False"):
        ti.load("detect", e2e, device="cpu")


@pytest.mark.parametrize("name,decoder", [("yolov8n-seg", "yolov8-seg"),
                                          ("yolov8n-pose", "yolov8-pose"),
                                          ("yolov8n-obb", "yolov8-obb")])
@pytest.mark.parametrize("nested", [False, True])
def test_modules_without_metadata_decode_the_same_through_the_decoder_option(
        by_path, name, decoder, nested):
    module = SessionModule(fixture(name), nested=nested)
    predictor = ti.load("detect", module, device="cpu", decoder=decoder, labels=LABELS,
                        input_size=320, conf=0.1, iou=0.7)
    for theirs, ours in zip(by_path[name], predictor(IMAGES)):
        assert ours.ok, ours.error
        assert ours.labels == theirs.labels
        np.testing.assert_allclose(ours.boxes, theirs.boxes, atol=1e-3)
        if theirs.masks is not None:
            assert all((a.box, a.mask.tolist()) == (b.box, b.mask.tolist())
                       for a, b in zip(ours.masks, theirs.masks))
        if theirs.keypoints is not None:  # K and D read from the rows once C is known
            np.testing.assert_allclose(ours.keypoints, theirs.keypoints, atol=1e-3)
        if theirs.rotated is not None:
            np.testing.assert_allclose(ours.rotated, theirs.rotated, atol=1e-3)


def test_a_pose_module_without_labels_is_refused_naming_what_is_needed():
    predictor = ti.load("detect", SessionModule(fixture("yolov8n-pose")), device="cpu",
                        decoder="yolov8-pose", input_size=320)
    with pytest.raises(ti.TorchinferError, match="give the labels"):
        predictor(IMAGES[0])


def test_rotated_boxes_in_jsonl_and_dota_text(by_path, tmp_path):
    predictor = ti.load("detect", fixture("yolov8n-obb"), device="cpu", conf=0.1, iou=0.7)
    run_to_dir(predictor, IMAGES, tmp_path / "run")
    records = read_jsonl(tmp_path / "run" / "predictions.jsonl")
    objects = [(r["source"], o) for r in records for o in r["detections"]]
    assert objects and all({"rotated_box", "corners"} <= o.keys() for _, o in objects)
    files = write_dota(records, tmp_path / "dota")
    lines = [line.split() for f in files for line in f.read_text().splitlines()]
    assert len(lines) == len(objects)
    for source, obj in objects:  # every box once, in its class's file, corners as recorded
        text = (tmp_path / "dota" / f"Task1_{obj['label']}.txt").read_text().splitlines()
        row = next(r.split() for r in text if r.split()[0] == Path(source).stem
                   and np.allclose([float(v) for v in r.split()[2:]],
                                   np.ravel(obj["corners"]), atol=0.01))
        assert float(row[1]) == pytest.approx(obj["score"], abs=1e-5)
    # the corners are the rotated box's: centre = their mean, sides = their edge lengths
    _, obj = objects[0]
    corners, box = np.asarray(obj["corners"]), obj["rotated_box"]
    assert np.allclose(corners.mean(0), [box["cx"], box["cy"]], atol=0.02)
    assert np.hypot(*(corners[0] - corners[3])) == pytest.approx(box["w"], abs=0.02)
    assert np.hypot(*(corners[0] - corners[1])) == pytest.approx(box["h"], abs=0.02)


def test_drawing_masks_rotated_boxes_and_keypoints(by_path):
    image = _image()
    base = np.asarray(image, dtype=np.int16)
    seg = next(r for r in by_path["yolov8n-seg"] if r.source == IMAGES[0] and len(r))
    drawn = np.asarray(draw_detections(image, seg), dtype=np.int16)
    inside = seg.masks[0].full(seg.image_size)
    assert (np.abs(drawn - base).sum(2)[inside] > 0).mean() > 0.9  # the mask is tinted
    obb = next(r for r in by_path["yolov8n-obb"] if len(r))
    picture = _image_of(obb.source)
    drawn = np.asarray(draw_detections(picture, obb))
    x, y = np.rint(obb.corners[0][2]).astype(int)  # a corner of the first rotated box
    h, w = obb.image_size
    if 0 <= x < w and 0 <= y < h:
        near = drawn[max(y - 2, 0):y + 3, max(x - 2, 0):x + 3].reshape(-1, 3)
        assert (np.abs(near - class_colour(int(obb.class_ids[0]))).sum(1) <= 3).any()
    pose = next(r for r in by_path["yolov8n-pose"] if len(r))
    drawn = np.asarray(draw_detections(_image_of(pose.source), pose))
    visible = pose.keypoints[0][pose.keypoints[0, :, 2] >= 0.5]
    for px, py, _ in visible:  # each visible keypoint is a magenta dot
        cx, cy = int(round(px)), int(round(py))
        dot = drawn[max(cy - 1, 0):cy + 2, max(cx - 1, 0):cx + 2].reshape(-1, 3)
        assert (dot == (255, 0, 255)).all(1).any()


def _image_of(source: str):
    from PIL import Image

    return Image.open(source).convert("RGB")


def _shapes_with_keypoints(root: Path, n: int, seed: int) -> Path:
    """A COCO folder of new shape pictures whose annotations hold the five keypoints the pose
    fixture was trained on (centre, leftmost, topmost, rightmost, bottommost vertex)."""
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(n):
        scene = generate_scene(scene_rng(seed, i), 320, max_shapes=5)
        scene.image.save(root / "images" / f"{i}.jpg", quality=90)
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": 320, "height": 320})
        for inst in scene.instances:
            x0, y0, x1, y1 = inst.bbox
            poly = inst.polygon
            points = [poly.mean(0), poly[poly[:, 0].argmin()], poly[poly[:, 1].argmin()],
                      poly[poly[:, 0].argmax()], poly[poly[:, 1].argmax()]]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": inst.class_id + 1, "iscrowd": 0,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": inst.area,
                                "num_keypoints": 5,
                                "keypoints": [float(v) for p in points for v in (*p, 2)]})
    categories = [{"id": k + 1, "name": name, "keypoints": ["centre", "left", "top", "right",
                                                             "bottom"]}
                  for k, name in enumerate(CLASSES)]
    (root / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}))
    return root


def test_keypoint_oks_ap_of_perfect_and_of_shifted_keypoints(tmp_path):
    data = json.loads((_shapes_with_keypoints(tmp_path / "kp", 4, 99) / "annotations.json")
                      .read_text())
    ids, cats = [i["id"] for i in data["images"]], [c["id"] for c in data["categories"]]

    def records(shift: float) -> list[dict]:
        return [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.9,
                 "keypoints": [v + (shift if k % 3 < 2 else 0) for k, v in
                               enumerate(a["keypoints"])]} for a in data["annotations"]]

    assert score_keypoints(data, records(0.0), ids, cats, 5).map == pytest.approx(1.0)
    # OKS = mean exp(-d² / (2 s² k²)) with s² the area, k = 1/5: a shift of d px per axis
    area = np.mean([a["area"] for a in data["annotations"]])
    far = score_keypoints(data, records(0.2 * np.sqrt(area)), ids, cats, 5).map
    assert far is not None and far < 0.5


def test_eval_gives_mask_ap_and_keypoint_ap(tmp_path):
    from torchinfer.datasets import write_detection

    seg_data = write_detection(tmp_path / "seg", 8, seed=321, size=320, max_shapes=5)
    seg = ti.load("detect", fixture("yolov8n-seg"), device="cpu", conf=0.001, max_det=100)
    report = evaluate_detection(seg, seg_data)
    assert report.segm is not None and report.segm["map50"] > 0.3, report.segm
    pose = ti.load("detect", fixture("yolov8n-pose"), device="cpu", conf=0.001, max_det=100)
    kp_report = evaluate_detection(pose, _shapes_with_keypoints(tmp_path / "kp", 8, 321))
    assert kp_report.keypoints is not None and kp_report.keypoints["map50"] > 0.2, \
        kp_report.keypoints
    assert "keypoints" in kp_report.to_dict()["metrics"]


class YoloV5Layout(nn.Module):
    """The segment fixture's outputs in YOLOv5's layout, (B, N, 5 + C + 32) with an
    objectness column of ones (so every score stays the class score) and the prototypes."""

    def __init__(self, path: str):
        super().__init__()
        self.inner = SessionModule(path)

    def forward(self, x: torch.Tensor):
        pred, protos = self.inner(x)
        rows = pred.transpose(1, 2)
        ones = torch.ones_like(rows[..., :1])
        return torch.cat([rows[..., :4], ones, rows[..., 4:]], 2), protos


def test_yolov5_segment_layout_decodes_the_same(by_path):
    predictor = ti.load("detect", YoloV5Layout(fixture("yolov8n-seg")), device="cpu",
                        decoder="yolov5-seg", labels=LABELS, input_size=320, conf=0.1, iou=0.7)
    for theirs, ours in zip(by_path["yolov8n-seg"], predictor(IMAGES)):
        assert ours.labels == theirs.labels
        np.testing.assert_allclose(ours.boxes, theirs.boxes, atol=1e-3)
        assert [m.box for m in ours.masks] == [m.box for m in theirs.masks]
