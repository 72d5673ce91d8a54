"""Semantic segmentation: a class per pixel, at the image's own size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import OutputTensor, TaskManifest, TaskOption, Tensor


def encode(results: Sequence[Any]) -> dict[str, Tensor]:
    """The OIP outputs of segmentations (all succeeded): the masks padded to the largest
    with -1, and each one's size."""
    n = len(results)
    h = max(r.size[0] for r in results)
    w = max(r.size[1] for r in results)
    masks = np.full((n, h, w), -1, dtype=np.int32)
    for i, r in enumerate(results):
        masks[i, : r.size[0], : r.size[1]] = r.mask
    return {"mask": ("INT32", [n, h, w], masks),
            "size": ("INT64", [n, 2], [v for r in results for v in r.size])}


MANIFEST = TaskManifest(
    name="segment",
    summary="Segment images: a class per pixel at the original size; class areas in the JSONL.",
    implementation="torchinfer.tasks.segment:TASK",
    columns=("classes (area)", "size"),
    outputs=(OutputTensor("mask", "INT32", (-1, -1, -1), narrower=("UINT8", "UINT16")),
             OutputTensor("size", "INT64", (-1, 2))),
    save_options=(TaskOption(name="save_masks", type="bool", default=False,
                             help="Write masks/<name>.png: class indices as a palette PNG (VOC colours)."),),
    encode=encode, agreement="pixel", head=True, eval_data=("data", "split"),
    eval_help="VOC layout: JPEGImages/<id>.jpg, SegmentationClass/<id>.png (255 = ignore).",
    eval_summary="mIoU, pixel accuracy and per-class IoU, at the original image resolution.",
    eval_options=(TaskOption(name="split", type="str", default=None,
                             help="Use ImageSets/Segmentation/<split>.txt (default: every mask "
                                  "in SegmentationClass)."),))
