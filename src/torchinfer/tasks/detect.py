"""Object detection, for two kinds of model:

- torchvision detectors (Faster R-CNN, RetinaNet, SSD, FCOS, Mask/Keypoint R-CNN): they resize
  and normalise inside (``GeneralizedRCNNTransform``) and return boxes in the coordinates of the
  image they were given, so each image goes in at its original size as floats in [0, 1];
- raw-tensor detectors (YOLOv5/YOLOv8 exports): letterbox to the model's square input, decode
  the output tensor, NMS, and map boxes back (see yolo.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import TorchinferError
from ..models import LoadedModel
from ..results import Detections, InstanceMask
from .base import Batch, Normalise, Predictor
from .yolo import DECODERS, RawDetections, decode, guess_decoder, letterbox


def _is_torchvision_detector(module: torch.nn.Module) -> bool:
    # every torchvision detector (R-CNN family, RetinaNet, SSD, FCOS) resizes and normalises
    # its inputs with this transform, and maps boxes back with it
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    return isinstance(getattr(module, "transform", None), GeneralizedRCNNTransform) or \
        getattr(module, "returns_torchvision_detections", False)  # an exported one


class DetectionPredictor(Predictor[Detections]):
    """Boxes (and masks, keypoints) in original image pixels.

    conf: minimum score kept; iou: NMS overlap threshold (raw-tensor models; torchvision models
    run their own NMS); max_det: most detections per image; classes: keep only these class ids;
    decoder: "auto" (torchvision for its detectors, else yolov5/yolov8 guessed from the output
    layout), or one of "torchvision", "yolov5", "yolov8".
    """

    task = "detect"

    def __init__(self, model: LoadedModel, *, conf: float = 0.25, iou: float = 0.45,
                 max_det: int = 300, classes: Sequence[int] | None = None, decoder: str = "auto",
                 mask_threshold: float = 0.5, **kwargs: Any):
        super().__init__(model, **kwargs)
        if not 0.0 <= conf <= 1.0 or not 0.0 <= iou <= 1.0:
            raise ValueError(f"conf and iou must be in [0, 1], got conf={conf}, iou={iou}")
        if max_det < 1:
            raise ValueError(f"max_det must be >= 1, got {max_det}")
        if decoder == "auto":
            decoder = "torchvision" if _is_torchvision_detector(model.module) else "auto"
        elif decoder not in ("torchvision", *DECODERS):
            raise TorchinferError(f"unknown decoder {decoder!r}: use auto, torchvision, "
                                  f"{', '.join(DECODERS)}")
        self.decoder = decoder
        self.conf, self.iou, self.max_det, self.mask_threshold = conf, iou, max_det, mask_threshold
        self.classes = list(classes) if classes is not None else None
        self.config = model.preprocess
        self.normalise = Normalise(self.config.mean, self.config.std, self.device)

    @property
    def supports_backends(self) -> bool:  # type: ignore[override]
        return self.decoder != "torchvision"

    supports_backends_reason = ("torchvision detectors take a list of images of different "
                                "sizes and return lists of boxes; other backends run "
                                "raw-tensor (YOLO) detectors")

    @property
    def input_size(self) -> tuple[int, int]:
        """(h, w) of a raw-tensor model's letterboxed input."""
        size = self.config.crop_size or self.config.resize_size
        return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])

    def preprocess(self, images: Sequence[Image.Image], sources: Sequence[str]) -> Batch:
        if self.decoder != "torchvision":
            arrays, boxes = zip(*(letterbox(img, self.input_size) for img in images))
            return Batch(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2), list(sources),
                         list(boxes))
        # torchvision detectors take each image at its own size: one padded uint8 container,
        # sliced back apart in forward
        sizes = [(img.height, img.width) for img in images]
        h, w = max(s[0] for s in sizes), max(s[1] for s in sizes)
        container = np.zeros((len(images), h, w, 3), dtype=np.uint8)
        for i, img in enumerate(images):
            container[i, : img.height, : img.width] = np.asarray(img)
        return Batch(torch.from_numpy(container).permute(0, 3, 1, 2), list(sources), sizes)

    def forward(self, tensor: torch.Tensor, batch: Batch | None = None) -> Any:
        if self.decoder == "torchvision":
            sizes = batch.meta if batch is not None else [tuple(tensor.shape[2:])] * len(tensor)
            return self.module([tensor[i, :, :h, :w] for i, (h, w) in enumerate(sizes)])
        raw = self.module(tensor)
        # Ultralytics' torch models return (predictions, feature maps) in eval mode
        return raw[0] if isinstance(raw, (tuple, list)) else raw

    def postprocess(self, raw: Any, batch: Batch) -> list[Detections]:
        if self.decoder == "torchvision":
            return [self._from_torchvision(out, src, size)
                    for out, src, size in zip(raw, batch.sources, batch.meta)]
        decoder = self.decoder if self.decoder != "auto" else guess_decoder(raw)
        decoded = decode(raw, decoder, conf=self.conf, iou=self.iou, max_det=self.max_det,
                         classes=self.classes)
        return [self._detections(src, lb.original, RawDetections(lb.to_original(d.boxes), d.scores,
                                                                 d.class_ids))
                for d, src, lb in zip(decoded, batch.sources, batch.meta)]

    def _from_torchvision(self, out: dict[str, torch.Tensor], source: str,
                          size: tuple[int, int]) -> Detections:
        keep = out["scores"] >= self.conf
        if self.classes is not None:
            keep &= torch.isin(out["labels"], torch.tensor(self.classes, device=out["labels"].device))
        idx = torch.nonzero(keep).flatten()[: self.max_det]  # torchvision sorts by score
        dets = RawDetections(out["boxes"][idx], out["scores"][idx], out["labels"][idx])
        masks = None
        if "masks" in out:  # (n, 1, H, W) probabilities at the image size
            binary = (out["masks"][idx, 0] > self.mask_threshold).cpu().numpy()
            masks = tuple(InstanceMask.from_full(m) for m in binary)
        keypoints = None
        if "keypoints" in out:  # (n, K, 3): x, y, visibility; report the keypoint score instead
            kp = out["keypoints"][idx].float().clone()
            if "keypoints_scores" in out:
                kp[..., 2] = out["keypoints_scores"][idx].sigmoid()
            keypoints = kp.cpu().numpy()
        return self._detections(source, size, dets, masks, keypoints)

    def _detections(self, source: str, size: tuple[int, int], d: RawDetections,
                    masks: tuple[InstanceMask, ...] | None = None,
                    keypoints: np.ndarray | None = None) -> Detections:
        names = self.model.labels
        ids = d.class_ids.cpu().numpy().astype(np.int64)
        if names is not None and len(ids) and ids.max() >= len(names):
            raise TorchinferError(f"class id {ids.max()} but only {len(names)} labels: check --labels")
        return Detections(source=source, boxes=d.boxes.float().cpu().numpy().astype(np.float32),
                          scores=d.scores.float().clamp(0, 1).cpu().numpy().astype(np.float32),
                          class_ids=ids,
                          labels=tuple(names[i] if names else str(i) for i in ids),
                          image_size=size, masks=masks, keypoints=keypoints)

    def failed(self, source: str, reason: str) -> Detections:
        return Detections(source=source, error=reason)
