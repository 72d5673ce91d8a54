"""Raw-tensor detectors (YOLOv5/YOLOv8 exports): letterbox to the model's input, decode the
output tensor, NMS, and map boxes back to the original image (see yolo.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import OptionError
from ..models import LoadedModel
from ..results import Detections
from .base import Batch, Normalise
from .detect import AUTO, DetectionPredictor, is_torchvision_detector
from .yolo import DECODERS, RawDetections, decode, guess_decoder, letterbox


class YoloDetectionPredictor(DetectionPredictor):
    """Detections of a raw-tensor model. iou: the NMS overlap threshold; decoder: "auto"
    (the layout guessed from the output's shape), "yolov5" or "yolov8"."""

    decoders = DECODERS

    def __init__(self, model: LoadedModel, *, decoder: str = AUTO, iou: float = 0.45,
                 **kwargs: Any):
        super().__init__(model, **kwargs)
        if not 0.0 <= iou <= 1.0:
            raise OptionError(f"iou must be in [0, 1], got {iou}")
        self.decoder = self.check_decoder(decoder)
        self.iou = iou
        self.config = model.preprocess
        self.normalise = Normalise(self.config.mean, self.config.std, self.device)
        # the letterbox is bounded by its box, so the loader needs no resize limit

    @classmethod
    def claims_model(cls, module: torch.nn.Module) -> bool:
        return not is_torchvision_detector(module)  # any other module: its output tensor

    @property
    def input_size(self) -> tuple[int, int]:
        """(h, w) of the letterboxed input."""
        size = self.config.crop_size or self.config.resize_size
        return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])

    def preprocess(self, images: Sequence[Image.Image], sources: Sequence[str]) -> Batch:
        arrays, boxes = zip(*(letterbox(img, self.input_size) for img in images))
        return Batch(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2), list(sources),
                     list(boxes))

    def forward(self, tensor: torch.Tensor, batch: Batch | None = None) -> Any:
        raw = self.module(tensor)
        # Ultralytics' torch models return (predictions, feature maps) in eval mode
        return raw[0] if isinstance(raw, (tuple, list)) else raw

    def postprocess(self, raw: Any, batch: Batch) -> list[Detections]:
        decoder = guess_decoder(raw) if self.decoder == AUTO else self.decoder
        decoded = decode(raw, decoder, conf=self.conf, iou=self.iou, max_det=self.max_det,
                         classes=self.classes)
        return [self.to_detections(src, lb.original, RawDetections(lb.to_original(d.boxes),
                                                                   d.scores, d.class_ids))
                for d, src, lb in zip(decoded, batch.sources, batch.meta)]
