"""Ultralytics segment, pose and OBB exports by path: the same answers as Ultralytics' own
``predict`` on the same ONNX files.

The fixtures (tests/fixtures/ultralytics) are tiny YOLOv8/YOLO11 models that Ultralytics
trained on the procedural shapes and exported itself, a few new pictures, and what
Ultralytics' ``YOLO(file).predict(picture)`` answered on each, recorded as JSON by
benchmarks/make_ultralytics_fixtures.py (in Ultralytics' own environment; Ultralytics is not
needed here). Every comparison is geometric: box IoU, mask IoU from the run-length masks,
keypoint distances and the exact IoU of the rotated rectangles' polygons.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

import torchinfer as ti

FIXTURES = Path(__file__).parent / "fixtures" / "ultralytics"
IMAGES = sorted((FIXTURES / "images").glob("*.jpg"))
SEGMENT = ["yolov8n-seg", "yolo11n-seg"]


def recorded(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def predict(name: str, **options) -> dict[str, ti.Detections]:
    """torchinfer on the fixture file with the settings Ultralytics predicted with."""
    rec = recorded(name)
    predictor = ti.load("detect", str(FIXTURES / f"{name}.onnx"), device="cpu",
                        conf=rec["conf"], iou=rec["iou"], max_det=300, **options)
    return {Path(r.source).name: r for r in predictor([str(p) for p in IMAGES])}


def polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def clip_convex(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman: the part of convex polygon ``subject`` inside convex ``clip``."""
    def side(p, a, b):  # > 0: left of a->b
        return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])

    orientation = 1.0 if polygon_area_signed(clip) > 0 else -1.0
    out = list(subject)
    for a, b in zip(clip, np.roll(clip, -1, axis=0)):
        points, out = out, []
        for p, q in zip(points, points[1:] + points[:1]):
            sp, sq = orientation * side(p, a, b), orientation * side(q, a, b)
            if sp >= 0:
                out.append(p)
            if sp * sq < 0:
                t = sp / (sp - sq)
                out.append(p + t * (q - p))
        if not out:
            return np.zeros((0, 2))
    return np.array(out)


def polygon_area_signed(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def polygon_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = clip_convex(a, b)
    overlap = polygon_area(inter) if len(inter) >= 3 else 0.0
    union = polygon_area(a) + polygon_area(b) - overlap
    return overlap / union if union > 0 else 0.0


def rle_decode(rle: dict) -> np.ndarray:
    """COCO's uncompressed run-length encoding (column-major, 0s first) -> (h, w) bool."""
    h, w = rle["size"]
    flat = np.zeros(h * w, dtype=bool)
    position, value = 0, False
    for count in rle["counts"]:
        flat[position:position + count] = value
        position += count
        value = not value
    return flat.reshape((w, h)).T


def match(theirs_cls: list[int], ours_cls: np.ndarray, iou: np.ndarray) -> list[tuple[int, int]]:
    """Each of Ultralytics' detections paired with at most one of ours of the same class,
    best overlaps first (pairs overlapping less than 0.5 are none)."""
    iou = np.where(np.asarray(theirs_cls)[:, None] == ours_cls[None, :], iou, 0.0)
    pairs, used_i, used_j = [], set(), set()
    for flat in np.argsort(-iou, axis=None):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] < 0.5:
            break
        if i not in used_i and j not in used_j:
            pairs.append((int(i), int(j)))
            used_i.add(i)
            used_j.add(j)
    return pairs


def test_polygon_iou_is_exact_on_known_shapes():
    square = np.array([[0, 0], [2, 0], [2, 2], [0, 2]], float)
    shifted = square + [1, 0]
    assert polygon_iou(square, shifted) == pytest.approx(2 / 6)
    diamond = np.array([[1, 0], [2, 1], [1, 2], [0, 1]], float)  # inside the square, area 2
    assert polygon_iou(square, diamond) == pytest.approx(2 / 4)
    assert polygon_iou(square, square[::-1]) == pytest.approx(1.0)  # either winding
    boxes = torch.tensor([[0, 0, 2, 2], [1, 0, 3, 2]], dtype=torch.float32)
    assert polygon_iou(square, shifted) == pytest.approx(float(box_iou(boxes[:1], boxes[1:])))


@pytest.mark.parametrize("name", SEGMENT)
def test_segment_boxes_and_masks_match_ultralytics(name):
    rec, ours = recorded(name), predict(name)
    total = matched = 0
    mask_ious, default_ious = [], []
    for image, theirs in rec["images"].items():
        result = ours[image]
        assert result.ok and result.masks is not None
        assert tuple(result.image_size) == tuple(theirs["size"])
        total += len(theirs["cls"])
        if not theirs["cls"] or not len(result):
            continue
        iou = box_iou(torch.tensor(theirs["xyxy"]), torch.from_numpy(result.boxes)).numpy()
        for i, j in match(theirs["cls"], result.class_ids, iou):
            if iou[i, j] < 0.9:
                continue
            matched += 1
            ours_mask = result.masks[j].full(result.image_size)
            for truth, into in ((theirs["masks_retina"][i], mask_ious),
                                (theirs["masks"][i], default_ious)):
                theirs_mask = rle_decode(truth)
                union = (ours_mask | theirs_mask).sum()
                into.append((ours_mask & theirs_mask).sum() / union if union else 1.0)
    assert total >= 10, f"{name}: the fixture should hold detections to compare ({total})"
    assert matched / total >= 0.98, f"{name}: {matched} of Ultralytics' {total} matched"
    # masks through the letterbox onto the original pixels, as retina_masks=True computes
    # them, and as Ultralytics' default predict draws its letterboxed masks
    assert min(mask_ious) >= 0.9, f"{name}: mask IoU {min(mask_ious):.3f}"
    assert min(default_ious) >= 0.9, f"{name}: mask IoU (default) {min(default_ious):.3f}"
    n_ours = sum(len(r) for r in ours.values())
    assert n_ours <= total * 1.02 + 1, f"{name}: {n_ours} detections against {total}"


def test_pose_boxes_and_keypoints_match_ultralytics():
    rec, ours = recorded("yolov8n-pose"), predict("yolov8n-pose")
    total = matched = 0
    distances, visibility = [], []
    for image, theirs in rec["images"].items():
        result = ours[image]
        assert result.ok and result.keypoints is not None
        assert result.keypoint_names == ("centre", "left", "top", "right", "bottom")
        total += len(theirs["cls"])
        if not theirs["cls"] or not len(result):
            continue
        iou = box_iou(torch.tensor(theirs["xyxy"]), torch.from_numpy(result.boxes)).numpy()
        for i, j in match(theirs["cls"], result.class_ids, iou):
            if iou[i, j] < 0.9:
                continue
            matched += 1
            points = np.asarray(theirs["keypoints"][i])  # (K, 3) x, y, visibility
            distances.append(np.hypot(*(result.keypoints[j, :, :2] - points[:, :2]).T).max())
            visibility.append(np.abs(result.keypoints[j, :, 2] - points[:, 2]).max())
    assert total >= 10 and matched / total >= 0.98, f"{matched} of Ultralytics' {total} matched"
    assert max(distances) <= 2.0, f"keypoints up to {max(distances):.2f} px apart"
    assert max(visibility) <= 0.05


def test_obb_rotated_boxes_match_ultralytics():
    rec, ours = recorded("yolov8n-obb"), predict("yolov8n-obb")
    total = matched = 0
    for image, theirs in rec["images"].items():
        result = ours[image]
        assert result.ok and result.rotated is not None and result.corners is not None
        total += len(theirs["cls"])
        if not theirs["cls"] or not len(result):
            continue
        theirs_corners = np.asarray(theirs["corners"], dtype=np.float64)
        iou = np.array([[polygon_iou(a, b) for b in result.corners] for a in theirs_corners])
        pairs = match(theirs["cls"], result.class_ids, iou)
        matched += sum(iou[i, j] >= 0.9 for i, j in pairs)
        for i, j in pairs:  # the same parameterisation: centre and sides (px), angle (rad)
            if iou[i, j] >= 0.9:
                np.testing.assert_allclose(result.rotated[j, :4], theirs["xywhr"][i][:4], atol=2)
                assert abs(result.rotated[j, 4] - theirs["xywhr"][i][4]) <= 0.02
        # the enclosing box holds every corner that lies inside the picture
        h, w = result.image_size
        inside = np.clip(result.corners, 0, [w, h])
        assert (inside[..., 0] >= result.boxes[:, None, 0] - 1e-3).all()
        assert (inside[..., 1] <= result.boxes[:, None, 3] + 1e-3).all()
    assert total >= 10 and matched / total >= 0.98, f"{matched} of Ultralytics' {total} matched"


def test_an_obb_run_writes_dota_task1_files(tmp_path):
    from torchinfer.cli.app import run

    fixtures = Path(__file__).parent / "fixtures" / "ultralytics"
    out = tmp_path / "out"
    code = run(["predict", "detect", str(fixtures / "images"), "-m",
                str(fixtures / "yolov8n-obb.onnx"), "--conf", "0.1", "--out", str(out), "--quiet"])
    assert code == 0
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    boxes = [d for r in records for d in r["detections"]]
    lines = [line.split() for f in sorted((out / "dota").glob("Task1_*.txt"))
             for line in f.read_text().splitlines()]
    assert boxes and len(lines) == len(boxes)
    assert all(len(line) == 10 for line in lines)  # image, score, four corners
    # --exist-ok replaces them: nothing stale stays
    assert run(["predict", "detect", str(fixtures / "images"), "-m",
                str(fixtures / "yolov8n-obb.onnx"), "--conf", "0.99", "--out", str(out),
                "--quiet", "--exist-ok"]) == 0
    assert not list((out / "dota").glob("Task1_*.txt")) if (out / "dota").is_dir() else True
