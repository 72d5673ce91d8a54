"""Object detection against the leading peer: the same ONNX files, the same folders, Ultralytics'
own ``YOLO(file).predict(folder, stream=True)`` against ``predict detect``, in one run.

  speed: YOLOv8n, YOLOv8n-seg and YOLOv8n-pose built from Ultralytics' yaml (random weights:
         nothing to download) and exported by Ultralytics' exporter (fixed batch 1, as it
         exports by default), on JPEGs of mixed sizes cut from scikit-image's photographs
  boxes: random weights find nothing at conf 0.25, so the boxes are compared on trained
         networks: the bundled shapes detector, exported to ONNX with the metadata
         Ultralytics' exporter writes, and the segment and pose models Ultralytics trained on
         the shapes (tests/fixtures/ultralytics), on new pictures of shapes; with detections
         to decode, these rows also time the masks and keypoints

Both sides use conf 0.25, IoU 0.7 (Ultralytics' predict defaults), max_det 300, the CPU.
Ultralytics runs in its own environment (bash benchmarks/peer_env.sh); it is never a
dependency of torchinfer. Best of --rounds, the two tools alternating.

    python benchmarks/detect_vs_ultralytics.py [--images 128] [--imgsz 320] [--rounds 2]
        [--tasks detect segment pose] [--mixed]

``--mixed``: the folders of issue "fast by default": photographs with a long side of
185-2800 px, and the shapes drawn small and enlarged to 185-2800 px with sensor noise (so
that torchinfer's default reduced JPEG decoding has big files to reduce, as it would on
photographs); each side decodes as it does by default.
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from torchvision.ops import box_iou

import torchinfer as ti
from torchinfer.datasets import write_detection
from torchinfer.runner.run import run_to_dir
from torchinfer.testing import write_sample_jpegs

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / ".venv-peer" / "bin" / "python"
SIDE = Path(__file__).resolve().parent / "ultralytics_side.py"
FIXTURES = ROOT / "tests" / "fixtures" / "ultralytics"
CONF, IOU = 0.25, 0.7
YAMLS = {"detect": "yolov8n.yaml", "segment": "yolov8n-seg.yaml", "pose": "yolov8n-pose.yaml"}


def peer(*args: object) -> None:
    subprocess.run([str(PEER), str(SIDE), *map(str, args)], check=True, cwd=tempfile.gettempdir(),
                   stdout=subprocess.DEVNULL)


def ultralytics_style(path: Path, names: list[str], imgsz: int) -> None:
    """Add the metadata Ultralytics' exporter writes (str() of Python values)."""
    model = onnx.load(str(path))
    for key, value in {"author": "Ultralytics", "stride": "32", "task": "detect", "batch": "1",
                       "imgsz": str([imgsz, imgsz]),
                       "names": str(dict(enumerate(names)))}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def write_big_shapes(folder: Path, n: int, seed: int) -> None:
    """Shapes scenes drawn at 416 px, enlarged to a long side of 185-2800 px with sensor noise
    (drawing at 2800 px takes seconds per picture; the enlargement keeps the scene)."""
    from PIL import Image

    from torchinfer.datasets import generate_scene, scene_rng

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        scene = generate_scene(scene_rng(seed, i), 416)
        side = int(rng.integers(185, 2801))
        big = np.asarray(scene.image.resize((side, side), Image.Resampling.BICUBIC), np.float32)
        big += rng.normal(0, 3, big.shape)
        Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(folder / f"{i:04d}.jpg",
                                                                    quality=90)


def compare_boxes(ours: dict[str, object], theirs: dict[str, dict]) -> str:
    """Each of Ultralytics' boxes matched to one of ours of the same class by IoU."""
    matched = total_theirs = total_ours = 0
    ious, score_diffs = [], []
    for source, r in ours.items():
        t = theirs[source]
        total_theirs += len(t["xyxy"])
        total_ours += len(r.boxes)
        if not len(t["xyxy"]) or not len(r.boxes):
            continue
        iou = box_iou(torch.tensor(t["xyxy"]), torch.tensor(np.asarray(r.boxes)))
        same = torch.tensor(t["cls"])[:, None] == torch.tensor(r.class_ids)[None, :]
        iou = torch.where(same, iou, torch.zeros(()))
        used = set()
        for i in iou.max(dim=1).values.argsort(descending=True).tolist():
            order = iou[i].argsort(descending=True).tolist()
            j = next((j for j in order if j not in used and iou[i, j] >= 0.5), None)
            if j is not None:
                used.add(j)
                matched += 1
                ious.append(float(iou[i, j]))
                score_diffs.append(abs(t["conf"][i] - float(r.scores[j])))
    close = sum(v >= 0.9 for v in ious)
    return (f"Ultralytics {total_theirs} boxes, torchinfer {total_ours}; matched (same class, "
            f"IoU >= 0.5) {matched}, at IoU >= 0.9 {close} "
            f"({100 * close / max(total_theirs, 1):.1f} % of Ultralytics'); IoU of matches mean "
            f"{np.mean(ious or [0]):.4f}, min "
            f"{np.min(ious or [0]):.4f}; |score difference| max {np.max(score_diffs or [0]):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tasks", nargs="+", default=list(YAMLS), choices=list(YAMLS))
    parser.add_argument("--mixed", action="store_true",
                        help="photographs and shapes of 185-2800 px (big JPEGs to reduce)")
    args = parser.parse_args()
    if not PEER.exists():
        sys.exit("Ultralytics' environment is missing: bash benchmarks/peer_env.sh")

    tmp = Path(tempfile.mkdtemp(prefix="torchinfer-peer-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # images, outputs
    photos = tmp / "photos"
    photos.mkdir()
    shapes = tmp / "shapes"
    if args.mixed:
        write_sample_jpegs(photos, args.images, long_side=(185, 2800))
        write_big_shapes(shapes / "images", 64, seed=777)
    else:
        write_sample_jpegs(photos, args.images)
        write_detection(shapes, 64, seed=777, size=416)  # letterboxed down to 256 (or 320)
    cases = {}
    for task in args.tasks:
        yolo = tmp / f"{YAMLS[task].removesuffix('.yaml')}-{args.imgsz}.onnx"
        peer("export", yolo, args.imgsz, YAMLS[task])
        name = YAMLS[task].removesuffix(".yaml").replace("yolov8n", "YOLOv8n")
        cases[f"speed: {name} (Ultralytics' export), photographs"] = (yolo, photos, args.imgsz,
                                                                     task)
    if "detect" in args.tasks:
        detector = tmp / "shapes_detector.onnx"
        ti.export("shapes_detector", detector)
        labels = ti.load("detect", "shapes_detector", device="cpu").model.labels
        ultralytics_style(detector, labels, 256)
        cases["boxes: shapes detector (trained), shapes"] = (detector, shapes / "images", 256,
                                                             "detect")
    for task, fixture in (("segment", "yolov8n-seg"), ("pose", "yolov8n-pose")):
        if task in args.tasks:
            cases[f"boxes: {fixture} (trained by Ultralytics), shapes"] = (
                FIXTURES / f"{fixture}.onnx", shapes / "images", 320, task)
    for title, (model, folder, imgsz, task) in cases.items():
        predictor = ti.load("detect", model, device="cpu", conf=CONF, iou=IOU, max_det=300)
        exact = ti.load("detect", model, device="cpu", conf=CONF, iou=IOU, max_det=300,
                        exact_decode=True)
        out = tmp / f"out-{model.stem}"
        run_to_dir(predictor, [str(folder)], out, exist_ok=True)  # warm-up, and the pipeline plan
        run_to_dir(exact, [str(folder)], out, exist_ok=True)
        best = {"ultralytics": float("inf"), "torchinfer": float("inf"), "exact": float("inf")}
        theirs_file = tmp / f"ultralytics-{model.stem}.json"
        for _ in range(args.rounds):
            peer("predict", model, folder, imgsz, CONF, IOU, 1, theirs_file, task)
            theirs = json.loads(theirs_file.read_text())
            best["ultralytics"] = min(best["ultralytics"], theirs["images"] / theirs["images_per_second"])
            start = time.perf_counter()
            run_to_dir(exact, [str(folder)], out, exist_ok=True)
            best["exact"] = min(best["exact"], time.perf_counter() - start)
            start = time.perf_counter()
            summary = run_to_dir(predictor, [str(folder)], out, exist_ok=True)
            best["torchinfer"] = min(best["torchinfer"], time.perf_counter() - start)
        n = summary.total
        ours = {r.source: r for r in predictor.stream(str(folder))}
        rate = {k: n / v for k, v in best.items()}
        print(f"{title}, {n} JPEGs, CPU {torch.get_num_threads()} cores, best of {args.rounds}")
        print(f"  Ultralytics predict(stream=True)  {rate['ultralytics']:7.1f} img/s")
        print(f"  torchinfer predict detect ({task:7}) {rate['torchinfer']:7.1f} img/s   "
              f"{rate['torchinfer'] / rate['ultralytics']:.2f}x  (batch {predictor.batch_size}; "
              f"ms/img {', '.join(f'{k} {v:.2f}' for k, v in summary.stage_ms.items())}; "
              f"{predictor.pipeline.reason if predictor.pipeline else 'in turn'})")
        print(f"  torchinfer --exact-decode            {rate['exact']:7.1f} img/s   "
              f"{rate['exact'] / rate['ultralytics']:.2f}x  (decoding by default: "
              f"{predictor.decode_report.reason[:90]})")
        print(f"  {compare_boxes(ours, theirs['boxes'])}")


if __name__ == "__main__":
    main()
