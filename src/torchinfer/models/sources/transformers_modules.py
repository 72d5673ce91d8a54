"""transformers models as modules that take a pixel batch and return plain tensors, so the
predictors, every runtime and the exporters read them as any other model.

Detectors keep what their image processor's ``post_process_object_detection`` reads:
``set_prediction`` says how (``tasks.detect_sets`` decodes it): "softmax" (DETR, YOLOS: the
last class is "no object") or "sigmoid" (RT-DETR, Conditional and Deformable DETR: each class
scored alone, the best ``top_k`` query-class pairs kept).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import TorchinferError

# the image processors whose post-processing scores classes with a sigmoid, and how many
# query-class pairs they keep (None: as many as there are queries)
_SIGMOID = {"RTDetrImageProcessor": None, "ConditionalDetrImageProcessor": 100,
            "DeformableDetrImageProcessor": 100}


class TransformersClassifier(nn.Module):
    """Pixels -> logits (N, classes)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


class TransformersSegmenter(nn.Module):
    """Pixels -> logits (N, classes, h, w), at the model's output resolution (the predictor
    resizes them to each image, as ``post_process_semantic_segmentation`` does)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


class TransformersDepth(nn.Module):
    """Pixels -> predicted depth (N, 1, h, w) at the model's output resolution (the predictor
    resizes it to each image, as ``post_process_depth_estimation`` does)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).predicted_depth.unsqueeze(1)


class TransformersEncoder(nn.Module):
    """A base model's pooled output (N, D), as ``pipeline("image-feature-extraction",
    pool=True)`` reads it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.model(pixel_values=pixel_values).pooler_output
        if pooled is None:
            raise TorchinferError(f"{type(self.model).__name__} has no pooled output: give a "
                                  "checkpoint with a pooler")
        return pooled


class TransformersDetector(nn.Module):
    """Pixels -> (N, queries, classes[+1] + 4): each query's class logits, then its box as
    centre x, centre y, width, height relative to the image. One tensor, so every runtime,
    export and verification reads it as any raw detector's output."""

    def __init__(self, model: nn.Module, set_prediction: str, top_k: int | None):
        super().__init__()
        self.model = model
        self.set_prediction = set_prediction
        self.top_k = top_k

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values)
        return torch.cat([out.logits, out.pred_boxes.to(out.logits.dtype)], dim=-1)


def wrap(model: nn.Module, task: str, processor: Any = None) -> nn.Module:
    """The plain-tensor module for ``model`` of ``task``."""
    if task == "classify":
        return TransformersClassifier(model)
    if task == "segment":
        return TransformersSegmenter(model)
    if task == "depth":
        return TransformersDepth(model)
    if task == "embed":
        return TransformersEncoder(model)
    kind = type(processor).__name__
    if kind in _SIGMOID:
        return TransformersDetector(model, "sigmoid", _SIGMOID[kind])
    return TransformersDetector(model, "softmax", None)
