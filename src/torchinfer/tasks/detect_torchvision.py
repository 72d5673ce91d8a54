"""torchvision detectors (Faster R-CNN, RetinaNet, SSD, FCOS, Mask/Keypoint R-CNN).

They resize and normalise inside (``GeneralizedRCNNTransform``) and return boxes in the
coordinates of the image they were given, so each image goes in at its original size as floats
in [0, 1], and comes back as a dict of boxes, scores, labels (and masks, keypoints).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..models import LoadedModel
from ..results import Detections, InstanceMask
from ..runner.limits import check_resize
from .base import Batch, Normalise
from .detect import AUTO, DetectionPredictor, is_torchvision_detector
from .yolo import RawDetections


def model_short_side(module: torch.nn.Module) -> tuple[int]:
    """The short side a torchvision detector resizes to (800 unless its transform says)."""
    min_size = getattr(getattr(module, "transform", None), "min_size", (800,))
    return (int(min_size[-1]),)


def cut_apart(tensor: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """The (3, h, w) images, as views, of a (1, 3, 1, pixels) batch laid end to end."""
    pixels = tensor[0, :, 0]
    images, start = [], 0
    for h, w in sizes:
        images.append(pixels[:, start:start + h * w].unflatten(1, (h, w)))
        start += h * w
    return images


class TorchvisionDetectionPredictor(DetectionPredictor):
    """A torchvision detector's own answer, filtered by conf, classes and max_det.
    mask_threshold: the probability above which a Mask R-CNN pixel belongs to its object."""

    decoders = ("torchvision",)
    decoder = "torchvision"
    # the evaluation report leaves out a preprocessing the model does not receive
    preprocesses_inside = True
    supports_backends = False
    supports_backends_reason = ("torchvision detectors take a list of images of different "
                                "sizes and return lists of boxes; other backends run "
                                "raw-tensor (YOLO) detectors")

    def __init__(self, model: LoadedModel, *, decoder: str = AUTO, iou: float | None = None,
                 retina_masks: bool = False, mask_threshold: float = 0.5, **kwargs: Any):
        # iou and retina_masks are accepted for one set of detect options: these models run
        # their own NMS and paste their masks at the original resolution
        super().__init__(model, **kwargs)
        self.check_decoder(decoder)
        self.mask_threshold = mask_threshold
        # floats in [0, 1], whatever mean/std the config holds: the model normalises inside,
        # and a classifier's default mean/std applied here would normalise twice
        self.normalise = Normalise((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), self.device)
        # a torchvision detector resizes the short side inside the model: images it would blow
        # up are refused on their header (io.limits)
        self.resize_size = model_short_side(model.module)
        self.loader = replace(self.loader, resize_size=self.resize_size)

    @classmethod
    def claims_model(cls, module: torch.nn.Module) -> bool:
        return is_torchvision_detector(module)

    def preprocess(self, images: Sequence[Image.Image], sources: Sequence[str]) -> Batch:
        # Each image at its own size. Padded to the tallest and the widest, a 10,000 x 100 and
        # a 100 x 10,000 image would take 100 megapixels each, so the images lie end to end
        # instead, as one (1, 3, 1, pixels) uint8 tensor whose memory is RGB RGB ...
        # (channels_last), cut apart again in forward
        for img, source in zip(images, sources):
            check_resize(img.size, self.resize_size, source)  # for images that skip the loader
        sizes = [(img.height, img.width) for img in images]
        flat = np.concatenate([np.asarray(img).reshape(-1, 3) for img in images])
        return Batch(torch.from_numpy(flat).T[None, :, None, :], list(sources), sizes)

    def forward(self, tensor: torch.Tensor, batch: Batch | None = None) -> Any:
        if batch is None:  # a plain (N, 3, H, W) batch
            return self.module(list(tensor))
        return self.module(cut_apart(tensor, batch.meta))

    def postprocess(self, raw: Any, batch: Batch, *, conf: float | None = None,
                    iou: float | None = None, max_det: int | None = None,
                    classes: Sequence[int] | None = None) -> list[Detections]:
        # iou is the model's own NMS threshold, set when it is built: not a per-call option
        conf = self.conf if conf is None else conf
        max_det = self.max_det if max_det is None else max_det
        classes = self.classes if classes is None else list(classes)
        return [self.from_output(out, src, size, conf=conf, max_det=max_det, classes=classes)
                for out, src, size in zip(raw, batch.sources, batch.meta)]

    def from_output(self, out: dict[str, torch.Tensor], source: str, size: tuple[int, int], *,
                    conf: float, max_det: int, classes: Sequence[int] | None) -> Detections:
        """One image's dict from the model as Detections, kept above ``conf``, of ``classes``
        (None: all), at most ``max_det``."""
        keep = out["scores"] >= conf
        if classes is not None:
            keep &= torch.isin(out["labels"], torch.tensor(list(classes), device=out["labels"].device))
        idx = torch.nonzero(keep).flatten()[: max_det]  # torchvision sorts by score
        found = RawDetections(out["boxes"][idx], out["scores"][idx], out["labels"][idx])
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
        return self.to_detections(source, size, found, masks, keypoints)
