"""Make the Ultralytics parity fixtures: tiny segment, pose and OBB models trained by Ultralytics
on the procedural shapes, exported by Ultralytics' own exporter, and Ultralytics' own
``predict`` on a few new pictures, recorded as JSON. Runs in Ultralytics' environment
(bash benchmarks/peer_env.sh); torchinfer's tests then compare its output on the same ONNX
files with these recordings (tests/test_ultralytics_parity.py) without Ultralytics installed.

    .venv-peer/bin/python benchmarks/make_ultralytics_fixtures.py            # train, export, record
    .venv-peer/bin/python benchmarks/make_ultralytics_fixtures.py --record   # re-record only

The shipped fixtures came from (two CPU cores; W, W2 any scratch folders):

    ... make_ultralytics_fixtures.py --epochs 25 --train 128 --work W       (the OBB model:
        --models yolov8n-obb --epochs 20), then 20 epochs more for the two segment models:
    ... --models yolov8n-seg --epochs 20 --work W2 --start yolov8n-seg=W/runs/yolov8n-seg/weights/last.pt
    ... --models yolo11n-seg --epochs 20 --work W2 --start yolo11n-seg=W/runs/yolo11n-seg/weights/last.pt
    ... --record --conf 0.1
    ... --small-masks        (the small-mask fixtures: tests/small_masks.py edits the two
                              segment files; recorded at predict's default thresholds)

The models are Ultralytics' own architectures (yolov8-seg, yolo11-seg, yolov8-pose,
yolov8-obb yaml files) at a reduced scale (width 1/16, reg_max 8) so that each ONNX file is
about 1 MB; trained a few epochs at 320 px on the shapes, which is enough for confident
predictions. Labels come from each shape: the outline of its visible mask (segment), the
minimum-area rectangle of that outline (obb), and five keypoints (pose): the centre of the
shape and its leftmost, topmost, rightmost and bottommost vertices.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")  # no update checks, no font downloads
os.environ.setdefault("YOLO_AUTOINSTALL", "0")

import cv2  # noqa: E402  (Ultralytics' own dependency)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # torchinfer's shapes, without installing torchinfer here
from torchinfer.datasets.shapes import CLASSES, generate_scene, scene_rng  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))  # the small-mask edit, shared with the parity test
from small_masks import small_mask_model  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "ultralytics"
IMGSZ = 320
# Ultralytics' predict IoU default; its conf default is 0.25, but models this small trained
# this briefly are not that sure of themselves: at 0.1 each model gives 13 to 29 detections on
# the pictures (both sides are compared at the threshold recorded)
CONF, IOU = 0.1, 0.7
SCALE = [0.33, 0.0625, 1024]  # depth, width, max channels: ~1 MB per ONNX file
REG_MAX = 8  # box distances up to 7 strides (DFL bins); 16 doubles the box head
KEYPOINTS = ("centre", "left", "top", "right", "bottom")
FLIP = [0, 3, 2, 1, 4]  # a horizontal flip swaps left and right
# A few hundred steps on two CPU cores: small batches, a high learning rate from the first
# epoch, whole pictures (no mosaic: the shapes keep their size), decoded once (cache).
TRAIN = dict(batch=8, workers=0, optimizer="AdamW", lr0=0.005, lrf=0.1, warmup_epochs=1,
             mosaic=0.0, cache="ram", plots=False, val=False, amp=False, seed=0,
             verbose=False)
# name -> (Ultralytics' yaml, its folder, task)
MODELS = {"yolov8n-seg": ("yolov8-seg", "v8", "segment"),
          "yolo11n-seg": ("yolo11-seg", "11", "segment"),
          "yolov8n-pose": ("yolov8-pose", "v8", "pose"),
          "yolov8n-obb": ("yolov8-obb", "v8", "obb")}
# the pictures predicted on: new seeds, sizes that letterbox both ways
TEST_SEED, TEST_SIZES = 4242, [(320, 416), (400, 300), (352, 352), (288, 480), (480, 360),
                               (320, 320)]
# the small-mask pictures: far smaller and far larger than the 320 input, where deciding a
# small mask at the input's resolution or at the original's differs most
SMALL_MASK_SEED = 4343
SMALL_MASK_SIZES = [(96, 128), (120, 96), (112, 112), (100, 150), (128, 96), (90, 120),
                    (104, 104), (150, 100), (80, 112), (112, 80), (96, 96), (120, 160),
                    (720, 960), (960, 720), (800, 800)]
SMALL_MASKS = OUT / "small-masks"


def outline(mask: np.ndarray) -> np.ndarray:
    """The largest outer contour of a boolean mask, (K, 2) pixel x, y."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    return max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float64)


def label_lines(scene, task: str) -> list[str]:
    """YOLO-format label lines of one scene (coordinates normalised to the picture)."""
    h, w = scene.image.height, scene.image.width
    lines = []
    for inst in scene.instances:
        if inst.area < 20:
            continue
        if task == "segment":
            points = outline(inst.mask) + 0.5  # pixel centres
            coords = points / [w, h]
        elif task == "obb":
            corners = cv2.boxPoints(cv2.minAreaRect(outline(inst.mask).astype(np.float32)))
            coords = (corners + 0.5) / [w, h]
        else:  # pose: box, then keypoints x, y, visibility 2 (labelled)
            x0, y0, x1, y1 = inst.bbox
            poly = inst.polygon
            points = np.stack([poly.mean(0), poly[poly[:, 0].argmin()], poly[poly[:, 1].argmin()],
                               poly[poly[:, 0].argmax()], poly[poly[:, 1].argmax()]])
            kpts = np.concatenate([points / [w, h], np.full((5, 1), 2.0)], 1)
            box = [(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h]
            lines.append(" ".join([str(inst.class_id)] + [f"{v:.6f}" for v in box]
                                  + [f"{v:.6f}" for v in kpts.ravel()]))
            continue
        coords = np.clip(coords, 0, 1)
        lines.append(" ".join([str(inst.class_id)] + [f"{v:.6f}" for v in coords.ravel()]))
    return lines


def write_dataset(root: Path, task: str, n_train: int, n_val: int, seed: int = 9) -> Path:
    for split, n, start in (("train", n_train, 0), ("val", n_val, n_train)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + n):
            scene = generate_scene(scene_rng(seed, i), IMGSZ, max_shapes=5)
            scene.image.save(root / "images" / split / f"{i:05d}.jpg", quality=90)
            (root / "labels" / split / f"{i:05d}.txt").write_text("\n".join(label_lines(scene, task)))
    data = {"path": str(root), "train": "images/train", "val": "images/val",
            "names": dict(enumerate(CLASSES))}
    if task == "pose":
        data.update(kpt_shape=[len(KEYPOINTS), 3], flip_idx=FLIP,
                    kpt_names={i: list(KEYPOINTS) for i in range(len(CLASSES))})
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root / "data.yaml"


def model_yaml(work: Path, name: str) -> Path:
    import ultralytics

    base, folder, task = MODELS[name]
    cfg = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg" / "models" / folder
                          / f"{base}.yaml").read_text())
    cfg.update(nc=len(CLASSES), scales={"t": SCALE}, reg_max=REG_MAX)
    if task == "pose":
        cfg["kpt_shape"] = [len(KEYPOINTS), 3]
    path = work / f"tiny-{base}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def train_and_export(work: Path, name: str, epochs: int, n_train: int,
                     start: str | None = None) -> Path:
    from ultralytics import YOLO

    task = MODELS[name][2]
    data = write_dataset(work / f"data-{task}", task, n_train, max(8, n_train // 10))
    # start: an earlier run's weights (last.pt) to train further, else Ultralytics' yaml
    model = YOLO(start or str(model_yaml(work, name)))
    # the data path goes into the export's description: relative, so no folder of this
    # machine is written into the fixture
    os.chdir(work)
    model.train(data=str(data.relative_to(work)), epochs=epochs, imgsz=IMGSZ, device="cpu",
                project=str(work / "runs"), name=name, exist_ok=True, **TRAIN)
    path = model.export(format="onnx", imgsz=IMGSZ, simplify=False, dynamic=False, opset=17)
    OUT.mkdir(parents=True, exist_ok=True)
    target = OUT / f"{name}.onnx"
    shutil.move(path, target)
    return target


def write_test_images(folder: Path = OUT / "images", seed: int = TEST_SEED,
                      sizes: list[tuple[int, int]] = TEST_SIZES) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, size in enumerate(sizes):
        scene = generate_scene(scene_rng(seed, i), size, max_shapes=5)
        path = folder / f"{i:02d}.jpg"
        scene.image.save(path, quality=85)
        paths.append(path)
    return paths


def rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed run-length encoding (column-major, 0s first)."""
    flat = mask.astype(bool).ravel(order="F")
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


def record(name: str, images: list[Path], conf: float | None = CONF,
           model_path: Path | None = None, target: Path | None = None) -> None:
    """Ultralytics' predict on each picture, in original pixels, as JSON. conf None: predict's
    default thresholds (conf and iou), recorded as null. A segment model is recorded twice,
    under "default" (masks decided at the letterboxed input, mapped back as Ultralytics'
    scale_masks does) and "retina" (retina_masks=True: decided at the original size)."""
    from ultralytics import YOLO
    from ultralytics.utils import ops

    task = MODELS[name][2]
    model_path = model_path or OUT / f"{name}.onnx"
    target = target or OUT / f"{name}.json"
    thresholds = {} if conf is None else {"conf": conf, "iou": IOU}
    out: dict = {"model": model_path.name, "task": task, "conf": conf,
                 "iou": None if conf is None else IOU, "imgsz": IMGSZ, "images": {}}
    for retina in ((False, True) if task == "segment" else (False,)):
        model = YOLO(str(model_path), task=task)
        for path in images:
            r = model.predict(str(path), imgsz=IMGSZ, device="cpu", verbose=False,
                              max_det=300, retina_masks=retina, **thresholds)[0]
            entry = out["images"].setdefault(path.name, {"size": list(r.orig_shape)})
            if task == "obb":
                entry.update(xywhr=r.obb.xywhr.tolist(), corners=r.obb.xyxyxyxy.tolist(),
                             cls=r.obb.cls.int().tolist(), conf=r.obb.conf.tolist())
                continue
            found = {"xyxy": r.boxes.xyxy.tolist(), "cls": r.boxes.cls.int().tolist(),
                     "conf": r.boxes.conf.tolist()}
            if task == "pose":
                entry.update(found, keypoints=r.keypoints.data.tolist())
                continue
            if r.masks is None:
                found["masks"] = []
            elif retina:  # computed at the original size (process_mask_native)
                found["masks"] = [rle(m) for m in r.masks.data.cpu().numpy()]
            else:  # computed at the letterboxed size; mapped back as Ultralytics draws them
                full = ops.scale_masks(r.masks.data[None].float(), r.orig_shape)[0] > 0.5
                found["masks"] = [rle(m) for m in full.cpu().numpy()]
            entry["retina" if retina else "default"] = found
    target.write_text(json.dumps(out, separators=(",", ":")))
    counts = [len((e.get("default") or e)["cls"]) for e in out["images"].values()]
    print(f"{target.name}: {sum(counts)} objects on {len(images)} pictures")


def record_small_masks() -> None:
    """The small-mask fixtures: the two segment files edited (tests/small_masks.py), on
    pictures far from the input's size, at predict's default thresholds."""
    images = write_test_images(SMALL_MASKS / "images", SMALL_MASK_SEED, SMALL_MASK_SIZES)
    with tempfile.TemporaryDirectory() as scratch:
        for name in ("yolov8n-seg", "yolo11n-seg"):
            edited = small_mask_model(OUT / f"{name}.onnx", Path(scratch) / f"{name}.onnx")
            record(name, images, conf=None, model_path=edited,
                   target=SMALL_MASKS / f"{name}.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--train", type=int, default=192, help="training pictures")
    parser.add_argument("--record", action="store_true", help="only re-record the predictions")
    parser.add_argument("--conf", type=float, default=CONF, help="predict's threshold")
    parser.add_argument("--start", nargs="*", default=[], metavar="NAME=WEIGHTS",
                        help="train these models further from an earlier run's last.pt")
    parser.add_argument("--work", type=Path, default=None, help="datasets and training runs")
    parser.add_argument("--small-masks", action="store_true",
                        help="only record the small-mask fixtures")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.small_masks:
        record_small_masks()
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="ultralytics-fixtures-"))
    starts = dict(item.split("=", 1) for item in args.start)
    images = write_test_images()
    for name in args.models:
        if not args.record:
            train_and_export(work, name, args.epochs, args.train, starts.get(name))
        record(name, images, args.conf)


if __name__ == "__main__":
    main()
