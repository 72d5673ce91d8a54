"""The Ultralytics half of benchmarks/detect_vs_ultralytics.py; runs in .venv-peer (see
benchmarks/peer_env.sh), never imported by torchinfer.

    export OUT.onnx IMGSZ [YAML]    build YOLOv8n (or YAML: yolov8n-seg.yaml ...) from its yaml
                                    (random weights, no download) and export it with
                                    Ultralytics' own exporter
    predict MODEL.onnx FOLDER IMGSZ CONF IOU ROUNDS OUT.json [TASK]
                                    YOLO(MODEL).predict(FOLDER, stream=True) once to warm up,
                                    then ROUNDS timed passes; writes images/s and the boxes
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("YOLO_OFFLINE", "1")  # no update checks, no font downloads
os.environ.setdefault("YOLO_AUTOINSTALL", "0")

from ultralytics import YOLO  # noqa: E402


def export(out: str, imgsz: int, yaml: str = "yolov8n.yaml") -> None:
    model = YOLO(yaml)
    path = model.export(format="onnx", imgsz=imgsz, simplify=False, dynamic=False, opset=17)
    os.replace(path, out)


def predict(model_path: str, folder: str, imgsz: int, conf: float, iou: float, rounds: int,
            out: str, task: str = "detect") -> None:
    model = YOLO(model_path, task=task)
    settings = dict(source=folder, stream=True, imgsz=imgsz, conf=conf, iou=iou, device="cpu",
                    verbose=False, max_det=300)
    for _ in model.predict(**settings):  # warm-up: session creation, first-call costs
        pass
    best, boxes = float("inf"), {}
    for _ in range(rounds):
        start = time.perf_counter()
        results = list(model.predict(**settings))
        best = min(best, time.perf_counter() - start)
    for r in results:
        boxes[r.path] = {"xyxy": r.boxes.xyxy.tolist(), "cls": r.boxes.cls.int().tolist(),
                         "conf": r.boxes.conf.tolist()}
    with open(out, "w") as f:
        json.dump({"images_per_second": len(results) / best, "images": len(results),
                   "boxes": boxes}, f)


if __name__ == "__main__":
    if sys.argv[1] == "export":
        export(sys.argv[2], int(sys.argv[3]), *sys.argv[4:5])
    else:
        predict(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]),
                float(sys.argv[6]), int(sys.argv[7]), sys.argv[8], *sys.argv[9:10])
