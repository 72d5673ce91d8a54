"""Image classification: the top classes of each image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import OutputTensor, TaskManifest, TaskOption, Tensor


def encode(results: Sequence[Any]) -> dict[str, Tensor]:
    """The OIP outputs of classifications (all succeeded): the top k of each, [N, K]."""
    rows = [r.topk for r in results]
    n, k = len(rows), max(len(t) for t in rows)
    return {"topk_indices": ("INT64", [n, k], [c.index for t in rows for c in t]),
            "topk_scores": ("FP32", [n, k], [round(c.score, 6) for t in rows for c in t]),
            "topk_labels": ("BYTES", [n, k], [c.label for t in rows for c in t])}


MANIFEST = TaskManifest(
    name="classify",
    summary="Classify images: top-k labels and scores per image, one JSONL line per input.",
    implementation="torchinfer.tasks.classify:TASK",
    options=(TaskOption(name="top_k", type="int", default=5, minimum=1, per_request=True,
                        help="Classes per image."),
             TaskOption(name="multi_label", type="bool", default=False,
                        help="Sigmoid per class instead of softmax.")),
    columns=("top-1", "score"),
    outputs=(OutputTensor("topk_indices", "INT64", (-1, -1)),
             OutputTensor("topk_scores", "FP32", (-1, -1)),
             OutputTensor("topk_labels", "BYTES", (-1, -1))),
    encode=encode, agreement="top-1", head=True,
    eval_help="ImageFolder: <data>/<class name>/<images>; folder names are the model's class "
              "names.",
    eval_summary="Top-1/top-5 accuracy, per-class accuracy and the confusion matrix.")
