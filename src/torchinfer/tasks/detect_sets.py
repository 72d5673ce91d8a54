"""Set-prediction detectors (DETR and its family, from transformers): a fixed number of queries,
each a class score vector and a box relative to the image, with no NMS.

Decoded as their image processor's ``post_process_object_detection`` does: "softmax" (DETR,
YOLOS: the last class is "no object" and is left out, each query keeps its best class) or
"sigmoid" (RT-DETR, Conditional/Deformable DETR: every class scored alone, the ``top_k`` best
query-class pairs kept). Boxes, centre x/y + width/height relative to the picture, are
scaled to its original pixels. Images of a batch run in same-size groups, never padded, so
each sees what it would see alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..models import LoadedModel
from ..models.outputs import main_output
from ..results import Detections
from .base import Batch
from .detect import AUTO, DetectionPredictor, set_prediction_of
from .resizing import FittedToRecipe
from .yolo import RawDetections


class SetDetectionPredictor(FittedToRecipe, DetectionPredictor):
    """A DETR-family detector's queries, decoded as its own post-processing does, filtered by
    conf, classes and max_det."""

    decoders = ("detr", "detr-sigmoid")
    shrinks_images = True

    def __init__(self, model: LoadedModel, *, decoder: str = AUTO, iou: float | None = None,
                 retina_masks: bool = False, **kwargs: Any):
        # iou and retina_masks are accepted for one set of detect options: these models need
        # no NMS and give no masks
        super().__init__(model, **kwargs)
        self.check_decoder(decoder)
        scoring, top_k = set_prediction_of(model.module) or ("softmax", None)
        if decoder == "detr":
            scoring = "softmax"
        elif decoder == "detr-sigmoid":
            scoring = "sigmoid"
        self.scoring, self.top_k = scoring, top_k
        self.fit_to_recipe(model.preprocess)

    @classmethod
    def claims_model(cls, module: torch.nn.Module) -> bool:
        return set_prediction_of(module) is not None

    def model_outputs(self, raw: Any) -> Any:
        """Per image, its queries: (queries, classes + 4), the class logits then the box."""
        return main_output(raw, ndim=3, what="the detector")

    def postprocess(self, raw: list[torch.Tensor], batch: Batch, *, conf: float | None = None,
                    iou: float | None = None, max_det: int | None = None,
                    classes: Sequence[int] | None = None) -> list[Detections]:
        # iou: these models need no NMS (accepted for one set of detect options)
        conf = self.conf if conf is None else conf
        max_det = self.max_det if max_det is None else max_det
        classes = self.classes if classes is None else list(classes)
        return [self.decode_queries(q[:, :-4], q[:, -4:], src, g.original, conf=conf,
                                    max_det=max_det, classes=classes)
                for q, src, g in zip(raw, batch.sources, batch.meta)]

    def decode_queries(self, logits: torch.Tensor, boxes: torch.Tensor, source: str,
                       size: tuple[int, int], *, conf: float, max_det: int,
                       classes: Sequence[int] | None) -> Detections:
        """One image's (queries, classes) logits and (queries, 4) relative boxes -> its
        Detections in the pixels of ``size`` (h, w): above ``conf``, of ``classes`` (None:
        all), at most ``max_det``."""
        logits, boxes = logits.float(), boxes.float()
        if self.scoring == "softmax":
            scores, labels = logits.softmax(-1)[:, :-1].max(-1)
            kept = boxes
        else:
            k = min(self.top_k or logits.shape[0], logits.numel())
            scores, index = logits.sigmoid().flatten().topk(k)
            labels, kept = index % logits.shape[1], boxes[index // logits.shape[1]]
        h, w = size
        cx, cy, bw, bh = kept.unbind(-1)
        xyxy = torch.stack([cx - 0.5 * bw, cy - 0.5 * bh, cx + 0.5 * bw, cy + 0.5 * bh], -1)
        xyxy = xyxy * torch.tensor([w, h, w, h], dtype=xyxy.dtype, device=xyxy.device)
        keep = scores > conf  # strictly above, as post_process_object_detection
        if classes is not None:
            keep &= torch.isin(labels, torch.tensor(list(classes), device=labels.device))
        idx = torch.nonzero(keep).flatten()
        idx = idx[scores[idx].argsort(descending=True, stable=True)][: max_det]
        return self.to_detections(source, size, RawDetections(xyxy[idx], scores[idx], labels[idx]))
