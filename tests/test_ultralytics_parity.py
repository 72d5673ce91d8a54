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

pytest.importorskip("onnx")
from small_masks import small_mask_model  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "ultralytics"
SMALL_MASKS = FIXTURES / "small-masks"
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


def compare_segments(recording: dict, mode: str, ours: dict[str, ti.Detections],
                     where: str) -> int:
    """Ours against Ultralytics' recorded ``mode`` ("default" or "retina"): at least 98 % of
    its detections matched by one of ours of the same class at box IoU >= 0.9, each matched
    mask at IoU >= 0.9 in original pixels, and no more than 2 % extra of ours. Returns how
    many detections Ultralytics gave.

    A mask of a few pixels may differ by a pixel or two and no more: the two sides' model
    inputs differ by up to one grey level (OpenCV's resize against torch's), which moves the
    logits near 0 a little; so a mask passes with at most max(2, 10 % of the union) pixels
    apart, and all masks together must reach IoU 0.95."""
    total = matched = 0
    mask_ious, apart, pooled = [], [], np.zeros(2)
    for image, entry in recording["images"].items():
        theirs, result = entry[mode], ours[image]
        assert result.ok and result.masks is not None
        assert tuple(result.image_size) == tuple(entry["size"])
        total += len(theirs["cls"])
        if not theirs["cls"] or not len(result):
            continue
        iou = box_iou(torch.tensor(theirs["xyxy"]), torch.from_numpy(result.boxes)).numpy()
        for i, j in match(theirs["cls"], result.class_ids, iou):
            if iou[i, j] < 0.9:
                continue
            matched += 1
            ours_mask = result.masks[j].full(result.image_size)
            theirs_mask = rle_decode(theirs["masks"][i])
            union, inter = (ours_mask | theirs_mask).sum(), (ours_mask & theirs_mask).sum()
            mask_ious.append(inter / union if union else 1.0)
            apart.append((union - inter) / max(2, 0.1 * union))
            pooled += inter, union
    assert total >= 10, f"{where}: the fixture should hold detections to compare ({total})"
    assert matched / total >= 0.98, f"{where}: {matched} of Ultralytics' {total} matched"
    worst = int(np.argmax(apart))
    assert apart[worst] <= 1, f"{where}: a mask at IoU {mask_ious[worst]:.3f}"
    assert pooled[0] / pooled[1] >= 0.95, f"{where}: masks' IoU {pooled[0] / pooled[1]:.3f}"
    n_ours = sum(len(r) for r in ours.values())
    assert n_ours <= total * 1.02 + 1, f"{where}: {n_ours} detections against {total}"
    return total


@pytest.mark.parametrize("name", SEGMENT)
@pytest.mark.parametrize("retina", [False, True], ids=["default", "retina_masks"])
def test_segment_boxes_and_masks_match_ultralytics(name, retina):
    # masks decided at the letterboxed input (Ultralytics' default) or, with retina_masks,
    # at the original resolution: either way in original pixels
    compare_segments(recorded(name), "retina" if retina else "default",
                     predict(name, retina_masks=retina), name)


@pytest.fixture(scope="module")
def small_mask_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("small-masks")
    return {name: small_mask_model(FIXTURES / f"{name}.onnx", folder / f"{name}.onnx")
            for name in SEGMENT}


@pytest.mark.parametrize("name", SEGMENT)
def test_small_masks_match_ultralytics_at_its_defaults(name, small_mask_files):
    """Many detections whose masks are a few pixels wide, on pictures far smaller and far
    larger than the input: which detections Ultralytics keeps depends on where it decides
    the masks, and torchinfer keeps the same ones, at predict's default thresholds and with
    retina_masks."""
    recording = json.loads((SMALL_MASKS / f"{name}.json").read_text())
    assert recording["conf"] is None and recording["iou"] is None  # predict's defaults
    images = sorted((SMALL_MASKS / "images").glob("*.jpg"))
    totals = {}
    for mode in ("default", "retina"):
        predictor = ti.load("detect", str(small_mask_files[name]), device="cpu",
                            retina_masks=mode == "retina")  # torchinfer's defaults too
        ours = {Path(r.source).name: r for r in predictor([str(p) for p in images])}
        totals[mode] = compare_segments(recording, mode, ours, f"{name} {mode}")
    # the fixture tells the two ways apart: they keep different detections
    kept = {mode: [len(e[mode]["cls"]) for e in recording["images"].values()]
            for mode in totals}
    assert kept["default"] != kept["retina"], kept


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
