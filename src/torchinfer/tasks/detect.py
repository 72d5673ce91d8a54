"""Object detection: what every detection predictor shares, and which one runs a model.

Three kinds of model read images in unrelated ways, so each has its own predictor:

- torchvision detectors (detect_torchvision.py): they resize and normalise inside and take a
  list of images of any sizes;
- raw-tensor detectors, YOLOv5/YOLOv8/YOLO11 exports (detect_yolo.py): letterbox, decode,
  NMS; with segment, pose and OBB heads also masks, keypoints and rotated boxes;
- set-prediction detectors, DETR and its family from transformers (detect_sets.py): queries
  decoded as their own post-processing does, no NMS.

``DetectionPredictor`` is their common base: the options (conf, max_det, classes) and the
``Detections`` they return are the same. Called itself, ``DetectionPredictor(model, ...)``
builds the kind that runs ``model`` (``kind_for``), so code written before the split, and
``isinstance(p, DetectionPredictor)``, keep working.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import OptionError, TorchinferError
from ..models import LoadedModel
from ..results import Detections, InstanceMask
from .base import Predictor
from .yolo import RawDetections

AUTO = "auto"


def is_torchvision_detector(module: torch.nn.Module) -> bool:
    """Whether ``module`` takes a list of images and returns torchvision's detection dicts:
    a torchvision detector, or a file exported from one."""
    return has_torchvision_detection_transform(module) or \
        getattr(module, "returns_torchvision_detections", False)  # an exported one


def has_torchvision_detection_transform(module: torch.nn.Module) -> bool:
    """Whether ``module`` is a torchvision detector in PyTorch (what the exporters trace; a
    file exported from one is not)."""
    # every torchvision detector (R-CNN family, RetinaNet, SSD, FCOS) resizes and normalises
    # its inputs with this transform, and maps boxes back with it
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    return isinstance(getattr(module, "transform", None), GeneralizedRCNNTransform)


def set_prediction_of(module: torch.nn.Module) -> tuple[str, int | None] | None:
    """(scoring, top_k) of a DETR-family detector (``tasks.detect_sets``), or None: what its
    module says (``set_prediction``), or, once exported, its file's card."""
    scoring = getattr(module, "set_prediction", None)
    if scoring in ("softmax", "sigmoid"):
        return scoring, getattr(module, "top_k", None)
    return None


def detections_result(source: str, size: tuple[int, int], found: RawDetections,
                      labels: Sequence[str] | None, *,
                      masks: tuple[InstanceMask, ...] | None = None,
                      keypoints: np.ndarray | None = None,
                      keypoint_names: tuple[str, ...] | None = None,
                      skeleton: tuple[tuple[int, int], ...] | None = None,
                      rotated: np.ndarray | None = None,
                      labels_from: str = "--labels") -> Detections:
    """One image's ``Detections`` from what a decoder found, boxes already in its pixels
    (``size`` is (h, w)), each class id named by ``labels`` (by its number without them). A
    class id past the labels is refused (the labels are not the model's): ``labels_from``
    says where they came from."""
    ids = found.class_ids.cpu().numpy().astype(np.int64)
    if labels is not None and len(ids) and ids.max() >= len(labels):
        raise TorchinferError(f"class id {ids.max()} but only {len(labels)} labels: check "
                              f"{labels_from}")
    return Detections(source=source,
                      boxes=found.boxes.float().cpu().numpy().astype(np.float32),
                      scores=found.scores.float().clamp(0, 1).cpu().numpy().astype(np.float32),
                      class_ids=ids, labels=tuple(labels[i] if labels else str(i) for i in ids),
                      image_size=size, masks=masks, keypoints=keypoints,
                      keypoint_names=keypoint_names, skeleton=skeleton, rotated=rotated)


class DetectionPredictor(Predictor[Detections]):
    """Boxes (and masks, keypoints) in original image pixels.

    conf: minimum score kept; max_det: most detections per image; classes: keep only these
    class ids; decoder: "auto" (torchvision for its detectors, else an Ultralytics file's
    metadata, else yolov5/yolov8 guessed from the output layout), or one of "torchvision",
    "yolov5", "yolov8", "yolov8-seg", "yolov5-seg", "yolov8-pose", "yolov8-obb"; iou: NMS
    overlap threshold of raw-tensor models (torchvision models run their own NMS).
    """

    task = "detect"
    # NMS overlap threshold: the YOLO kind's; the others take none (their own NMS, or none)
    iou: float | None = None
    # the decoder names a kind answers to; "auto" lets ``claims_model`` decide
    decoders: ClassVar[tuple[str, ...]] = ()

    def __new__(cls, model: LoadedModel, *args: Any, **kwargs: Any) -> DetectionPredictor:
        if cls is DetectionPredictor:
            cls = cls.kind_for(model, decoder=kwargs.get("decoder", AUTO))
        return super().__new__(cls)

    def __init__(self, model: LoadedModel, *, conf: float = 0.25, max_det: int = 300,
                 classes: Sequence[int] | None = None, **kwargs: Any):
        super().__init__(model, **kwargs)
        if not 0.0 <= conf <= 1.0:
            raise OptionError(f"conf must be in [0, 1], got {conf}")
        if max_det < 1:
            raise OptionError(f"max_det must be >= 1, got {max_det}")
        self.conf, self.max_det = conf, max_det
        self.classes = list(classes) if classes is not None else None
        labels = model.labels
        if self.classes is not None and labels:
            unknown = sorted({c for c in self.classes if not 0 <= c < len(labels)})
            if unknown:
                raise OptionError(f"classes {unknown} are not among {model.name}'s "
                                  f"{len(labels)} classes (ids 0-{len(labels) - 1})")

    @classmethod
    def claims_model(cls, module: torch.nn.Module) -> bool:
        """Whether this kind runs ``module`` when the decoder is "auto"."""
        return False

    @staticmethod
    def kind_for(model: LoadedModel, *, decoder: str = AUTO) -> type[DetectionPredictor]:
        """The predictor class that runs ``model`` with ``decoder``: the kind that names the
        decoder, or for "auto" the kind that claims the model."""
        kinds = DetectionPredictor.__subclasses__()
        if decoder == AUTO:
            claimed = [k for k in kinds if k.claims_model(model.module)]
            if len(claimed) != 1:  # each kind's claim excludes the others'
                raise TorchinferError(f"{model.name}: {len(claimed)} detection predictors "
                                      f"claim it ({', '.join(k.__name__ for k in claimed)})")
            return claimed[0]
        for kind in kinds:
            if decoder in kind.decoders:
                return kind
        known = [AUTO, *(d for k in kinds for d in k.decoders)]
        raise TorchinferError(f"unknown decoder {decoder!r}: use {', '.join(known)}")

    def check_decoder(self, decoder: str) -> str:
        """``decoder`` if this kind answers to it (or to "auto"), else an error naming those."""
        if decoder != AUTO and decoder not in self.decoders:
            raise TorchinferError(f"{type(self).__name__} cannot use decoder {decoder!r}: use "
                                  f"{', '.join((AUTO, *self.decoders))}")
        return decoder

    def to_detections(self, source: str, size: tuple[int, int], found: RawDetections,
                      masks: tuple[InstanceMask, ...] | None = None,
                      keypoints: np.ndarray | None = None,
                      keypoint_names: tuple[str, ...] | None = None,
                      skeleton: tuple[tuple[int, int], ...] | None = None,
                      rotated: np.ndarray | None = None) -> Detections:
        """The result for one image: boxes already in its pixels (``size`` is (h, w)), named
        by the model's labels."""
        return detections_result(source, size, found, self.model.labels, masks=masks,
                                 keypoints=keypoints, keypoint_names=keypoint_names,
                                 skeleton=skeleton, rotated=rotated)

    def failed(self, source: str, reason: str) -> Detections:
        return Detections(source=source, error=reason)
