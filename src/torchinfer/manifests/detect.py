"""Object detection: boxes, scores and classes in the image's own pixels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import OutputTensor, TaskManifest, TaskOption, Tensor

# the detectors' kinds of output (tasks.detect*: a test keeps the two lists equal)
DECODERS = ("auto", "torchvision", "detr", "detr-sigmoid", "yolov5", "yolov8", "yolov8-seg",
            "yolov8-pose", "yolov8-obb", "yolov5-seg")


def encode(results: Sequence[Any]) -> dict[str, Tensor]:
    """The OIP outputs of detections (all succeeded), padded to the most boxes (class id -1)."""
    n = len(results)
    m = max((len(d) for d in results), default=0)
    boxes: list[float] = []
    scores: list[float] = []
    ids: list[int] = []
    labels: list[str] = []
    for d in results:
        pad = m - len(d)
        boxes += [round(float(v), 2) for v in d.boxes.reshape(-1)] + [0.0] * 4 * pad
        scores += [round(float(s), 5) for s in d.scores] + [0.0] * pad
        ids += [int(c) for c in d.class_ids] + [-1] * pad
        labels += list(d.labels) + [""] * pad
    return {"boxes": ("FP32", [n, m, 4], boxes), "scores": ("FP32", [n, m], scores),
            "class_ids": ("INT64", [n, m], ids), "labels": ("BYTES", [n, m], labels),
            "num_detections": ("INT64", [n], [len(d) for d in results])}


MANIFEST = TaskManifest(
    name="detect",
    summary="Detect objects: boxes in original pixels, JSONL plus coco_results.json.",
    implementation="torchinfer.tasks.detect_task:TASK",
    options=(TaskOption(name="conf", type="float", default=0.25, minimum=0.0, maximum=1.0,
                        per_request=True, help="Minimum score kept."),
             TaskOption(name="iou", type="float", default=None, minimum=0.0, maximum=1.0,
                        per_request=True, help="NMS IoU threshold of raw-tensor models "
                        "(default: 0.7 for Ultralytics' files, as its predict; else 0.45)."),
             TaskOption(name="max_det", type="int", default=300, minimum=1, per_request=True,
                        help="Most detections per image."),
             TaskOption(name="classes", type="ids", default=None, minimum=0, per_request=True,
                        help="Keep only these class ids, e.g. 0,2."),
             TaskOption(name="retina_masks", type="bool", default=False,
                        help="Ultralytics segment exports: decide each mask at the original "
                        "resolution (its retina_masks=True); default: at the letterboxed input, "
                        "as its predict."),
             TaskOption(name="decoder", type="str", default="auto", choices=DECODERS,
                        help="How the model's output reads: " + ", ".join(DECODERS) + ".")),
    columns=("objects", "best"),
    outputs=(OutputTensor("boxes", "FP32", (-1, -1, 4)), OutputTensor("scores", "FP32", (-1, -1)),
             OutputTensor("class_ids", "INT64", (-1, -1)),
             OutputTensor("labels", "BYTES", (-1, -1)),
             OutputTensor("num_detections", "INT64", (-1,))),
    save_options=(TaskOption(name="save_masks", type="bool", default=False,
                             help="Write masks/<name>.png: instance i as value i + 1 (models with masks)."),),
    encode=encode, agreement=None, head=True, eval_data=("data", "annotations", "images"),
    eval_help="A folder holding annotations.json (COCO) and images/, or the annotations file.",
    eval_summary="COCO mAP@[.5:.95], mAP@.5, mAP@.75 and per-category AP (pycocotools); "
                 "scored down to conf 0.001, 100 boxes per image.",
    eval_options=(TaskOption(name="annotations", type="str", default=None,
                             help="COCO annotations file."),
                  TaskOption(name="images", type="str", default=None,
                             help="Folder the file_name entries are in.")))
