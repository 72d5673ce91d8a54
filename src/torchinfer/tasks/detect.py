"""Object detection, for two kinds of model:

- torchvision detectors (Faster R-CNN, RetinaNet, SSD, FCOS, Mask/Keypoint R-CNN): they resize
  and normalise inside (``GeneralizedRCNNTransform``) and return boxes in the coordinates of the
  image they were given, so each image goes in at its original size as floats in [0, 1];
- raw-tensor detectors (YOLOv5/YOLOv8 exports): letterbox to the model's square input, decode
  the output tensor, NMS, and map boxes back (see yolo.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import OptionError, TorchinferError
from ..models import LoadedModel
from ..results import Detections, InstanceMask
from ..runner.limits import check_resize
from .base import Batch, Normalise, Predictor
from .yolo import DECODERS, RawDetections, decode, guess_decoder, letterbox


def _is_torchvision_detector(module: torch.nn.Module) -> bool:
    # every torchvision detector (R-CNN family, RetinaNet, SSD, FCOS) resizes and normalises
    # its inputs with this transform, and maps boxes back with it
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    return isinstance(getattr(module, "transform", None), GeneralizedRCNNTransform) or \
        getattr(module, "returns_torchvision_detections", False)  # an exported one


def _torchvision_resize(module: torch.nn.Module) -> tuple[int]:
    """The short side a torchvision detector resizes to (800 unless its transform says)."""
    min_size = getattr(getattr(module, "transform", None), "min_size", (800,))
    return (int(min_size[-1]),)


def _cut_apart(tensor: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """The (3, h, w) images, as views, of a (1, 3, 1, pixels) batch laid end to end."""
    pixels = tensor[0, :, 0]
    images, start = [], 0
    for h, w in sizes:
        images.append(pixels[:, start:start + h * w].unflatten(1, (h, w)))
        start += h * w
    return images


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
            raise OptionError(f"conf and iou must be in [0, 1], got conf={conf}, iou={iou}")
        if max_det < 1:
            raise OptionError(f"max_det must be >= 1, got {max_det}")
        if decoder == "auto":
            decoder = "torchvision" if _is_torchvision_detector(model.module) else "auto"
        elif decoder not in ("torchvision", *DECODERS):
            raise TorchinferError(f"unknown decoder {decoder!r}: use auto, torchvision, "
                                  f"{', '.join(DECODERS)}")
        self.decoder = decoder
        self.conf, self.iou, self.max_det, self.mask_threshold = conf, iou, max_det, mask_threshold
        self.classes = list(classes) if classes is not None else None
        labels = model.labels
        if self.classes is not None and labels:
            unknown = sorted({c for c in self.classes if not 0 <= c < len(labels)})
            if unknown:
                raise OptionError(f"classes {unknown} are not among {model.name}'s "
                                  f"{len(labels)} classes (ids 0-{len(labels) - 1})")
        self.config = model.preprocess
        self.normalise = Normalise(self.config.mean, self.config.std, self.device)
        # the letterbox is bounded by its box; a torchvision detector resizes the short side
        # inside the model, and images it would blow up are refused on their header (io.limits)
        self.resize_size = (_torchvision_resize(model.module) if self.decoder == "torchvision"
                            else None)
        self.loader = replace(self.loader, resize_size=self.resize_size)

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
        # torchvision detectors take each image at its own size. Padded to the tallest and the
        # widest, a 10,000 x 100 and a 100 x 10,000 image would take 100 megapixels each, so
        # the images lie end to end instead, as one (1, 3, 1, pixels) uint8 tensor whose memory
        # is RGB RGB ... (channels_last), cut apart again in forward
        for img, source in zip(images, sources):
            check_resize(img.size, self.resize_size, source)  # for images that skip the loader
        sizes = [(img.height, img.width) for img in images]
        flat = np.concatenate([np.asarray(img).reshape(-1, 3) for img in images])
        return Batch(torch.from_numpy(flat).T[None, :, None, :], list(sources), sizes)

    def forward(self, tensor: torch.Tensor, batch: Batch | None = None) -> Any:
        if self.decoder == "torchvision":
            if batch is None:  # a plain (N, 3, H, W) batch
                return self.module(list(tensor))
            return self.module(_cut_apart(tensor, batch.meta))
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
