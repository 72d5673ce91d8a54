"""Raw-tensor detectors (YOLOv5/YOLOv8/YOLO11 exports and modules): letterbox to the model's
input, decode the output tensor, NMS, and map boxes back to the original image (yolo.py);
with a segment, pose or OBB head also the instance masks (yolo_masks.py), keypoints or
rotated boxes (yolo_obb.py) of each detection. What the head is comes from an Ultralytics
file's metadata, or from the ``decoder`` option (yolo_heads.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import OptionError, TorchinferError
from ..models import LoadedModel
from ..models.card_ultralytics import is_ultralytics_metadata
from ..results import Detections
from .base import Batch, Normalise
from .detect import AUTO, DetectionPredictor, is_torchvision_detector, set_prediction_of
from .yolo import (
    DECODERS,
    DEFAULT_IOU,
    ULTRALYTICS_IOU,
    Letterbox,
    RawDetections,
    decode,
    fitted_size,
    guess_decoder,
    letterbox,
)
from .yolo_heads import (
    HEAD_DECODERS,
    HeadOutput,
    YoloHead,
    check_outputs,
    head_from_decoder,
    head_from_metadata,
    split_output,
)
from .yolo_masks import letterboxed_masks, nonempty, retina_masks
from .yolo_obb import corners


class YoloDetectionPredictor(DetectionPredictor):
    """Detections of a raw-tensor model. iou: the NMS overlap threshold (None: 0.7 for an
    Ultralytics file, its predict's default, else 0.45, YOLOv5's); decoder: "auto" (an
    Ultralytics file's metadata, else the layout guessed from the output's shape), "yolov5" or
    "yolov8" (boxes), "yolov8-seg", "yolov5-seg" (+ instance masks), "yolov8-pose"
    (+ keypoints) or "yolov8-obb" (rotated boxes). YOLO11 reads as yolov8. retina_masks:
    instance masks decided at the original resolution instead of the letterboxed input's
    (Ultralytics' option of that name; yolo_masks.py)."""

    decoders = (*DECODERS, *HEAD_DECODERS)
    shrinks_images = True

    def __init__(self, model: LoadedModel, *, decoder: str = AUTO, iou: float | None = None,
                 retina_masks: bool = False, **kwargs: Any):
        super().__init__(model, **kwargs)
        if iou is not None and not 0.0 <= iou <= 1.0:
            raise OptionError(f"iou must be in [0, 1], got {iou}")
        self.decoder = self.check_decoder(decoder)
        meta = _metadata(model)
        if iou is None:
            iou = ULTRALYTICS_IOU if is_ultralytics_metadata(meta) else DEFAULT_IOU
        self.iou: float = iou
        self.retina_masks = bool(retina_masks)
        self.config = model.preprocess
        self.normalise = Normalise(self.config.mean, self.config.std, self.device)
        # what the head gives; None: a plain detector whose layout the output's shape tells
        self.head: YoloHead | None = (head_from_decoder(decoder) if decoder != AUTO
                                      else _head_of_file(model, meta))
        # the letterbox is bounded by its box, so the loader needs no resize limit

    @classmethod
    def claims_model(cls, module: torch.nn.Module) -> bool:
        # any other module: its output tensor
        return not is_torchvision_detector(module) and set_prediction_of(module) is None

    @property
    def input_size(self) -> tuple[int, int]:
        """(h, w) of the letterboxed input."""
        size = self.config.crop_size or self.config.resize_size
        return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])

    def resize_target(self, size: tuple[int, int]) -> tuple[int, int]:
        return fitted_size(size, self.input_size)

    def preprocess(self, images: Sequence[Image.Image], sources: Sequence[str]) -> Batch:
        arrays, boxes = zip(*(letterbox(img, self.input_size) for img in images))
        return Batch(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2), list(sources),
                     list(boxes))

    def forward(self, tensor: torch.Tensor, batch: Batch | None = None) -> Any:
        if self.head is not None and self.head.task == "segment":
            # the detections and the prototypes: every output (split_output finds them in an
            # ONNX file's outputs and in an Ultralytics module's nested tuple)
            return _all_outputs(self.module, tensor)
        raw = self.module(tensor)
        # Ultralytics' torch models return (predictions, feature maps) in eval mode
        return raw[0] if isinstance(raw, (tuple, list)) else raw

    def postprocess(self, raw: Any, batch: Batch, *, conf: float | None = None,
                    iou: float | None = None, max_det: int | None = None,
                    classes: Sequence[int] | None = None) -> list[Detections]:
        head = self.head
        if head is None:  # a plain detector: its layout from the output's shape
            first = split_output(raw, YoloHead(), None, self.model.name).predictions
            head = YoloHead(layout=guess_decoder(first))
        out = split_output(raw, head, self.model.labels, self.model.name)
        decoded = decode(out.predictions, head.layout,
                         conf=self.conf if conf is None else conf,
                         iou=self.iou if iou is None else iou,
                         max_det=self.max_det if max_det is None else max_det,
                         classes=self.classes if classes is None else list(classes),
                         num_classes=out.num_classes, rotated=head.task == "obb")
        return [self._detections(head, out, b, found, src, lb)
                for b, (found, src, lb) in enumerate(zip(decoded, batch.sources, batch.meta))]

    def _detections(self, head: YoloHead, out: HeadOutput, index: int, found: RawDetections,
                    source: str, lb: Letterbox) -> Detections:
        size = lb.original
        if head.task == "obb":
            rotated = lb.rotated_to_original(found.boxes)
            points = corners(rotated)
            h, w = size
            enclosing = torch.cat([points.amin(1), points.amax(1)], 1)
            enclosing[:, [0, 2]] = enclosing[:, [0, 2]].clamp(0, w)
            enclosing[:, [1, 3]] = enclosing[:, [1, 3]].clamp(0, h)
            return self.to_detections(source, size,
                                      RawDetections(enclosing, found.scores, found.class_ids),
                                      rotated=rotated.cpu().numpy().astype(np.float32))
        boxes = lb.to_original(found.boxes)
        if head.task == "segment":
            assert out.prototypes is not None and found.extra is not None
            # Ultralytics drops the detections whose mask is empty where it decides them
            if self.retina_masks:
                masks = retina_masks(out.prototypes[index], found.extra, boxes, lb,
                                     self.input_size)
                nonempty_masks = nonempty(masks)
            else:
                masks, nonempty_masks = letterboxed_masks(out.prototypes[index], found.extra,
                                                          found.boxes, lb, self.input_size)
            keep = torch.from_numpy(nonempty_masks)
            return self.to_detections(
                source, size, RawDetections(boxes[keep], found.scores[keep],
                                            found.class_ids[keep]),
                masks=tuple(m for m, k in zip(masks, keep.tolist()) if k))
        if head.task == "pose":
            assert out.kpt_shape is not None and found.extra is not None
            k, dims = out.kpt_shape
            points = lb.points_to_original(found.extra.reshape(-1, k, dims))
            if dims == 2:  # no visibility: every keypoint counts as seen
                points = torch.cat([points, torch.ones_like(points[..., :1])], 2)
            names = head.keypoint_names if head.keypoint_names and \
                len(head.keypoint_names) == k else None
            return self.to_detections(source, size, RawDetections(boxes, found.scores,
                                                                  found.class_ids),
                                      keypoints=points.float().cpu().numpy(),
                                      keypoint_names=names,
                                      skeleton=YoloHead("pose", kpt_shape=(k, dims),
                                                        keypoint_names=names).skeleton)
        return self.to_detections(source, size,
                                  RawDetections(boxes, found.scores, found.class_ids))


def _metadata(model: LoadedModel) -> dict[str, str]:
    """An ONNX file's metadata (empty for any other model)."""
    session = getattr(model.module, "session", None)
    return {} if session is None else dict(session.get_modelmeta().custom_metadata_map)


def _head_of_file(model: LoadedModel, meta: dict[str, str]) -> YoloHead | None:
    """The head an ONNX file's Ultralytics metadata (``meta``) describes (None for other
    files)."""
    session = getattr(model.module, "session", None)
    if session is None:
        return None
    head = head_from_metadata(meta, model.weights or model.name)
    if meta.get("end2end") == "True":
        raise TorchinferError(f"{model.weights or model.name}: an end-to-end (NMS-free) "
                              "Ultralytics export, (B, max_det, 6 + extra) rows of boxes already "
                              "chosen; torchinfer decodes the raw head, (B, 4 + C + extra, N): "
                              "export it with end2end=False")
    if head is not None:
        check_outputs(head, [o.shape for o in session.get_outputs()], model.weights or model.name)
    # a plain detect file: the output's shape tells YOLOv8's layout from YOLOv5's
    return None if head is None or head.task == "detect" else head


def _all_outputs(module: torch.nn.Module, tensor: torch.Tensor) -> Any:
    """Every output of the model: an ONNX Runtime module returns only its first output, so
    its session is run here for all of them (a file exported with a fixed batch in pieces of
    that size, the last padded, as OrtModule does); any other module is called."""
    session = getattr(module, "session", None)
    names: list[str] | None = getattr(module, "output_names", None)
    if session is None or not names or len(names) < 2:
        return module(tensor)
    array = tensor.detach().to("cpu", torch.float32).contiguous().numpy()
    array = array.astype(getattr(module, "input_dtype", np.float32), copy=False)
    shape: list[Any] = getattr(module, "input_shape", None) or [None]
    fixed = shape[0]
    step = fixed if isinstance(fixed, int) and fixed > 0 else len(array)
    pieces = []
    for start in range(0, len(array), step):
        piece = array[start:start + step]
        n = len(piece)
        if n < step:
            piece = np.concatenate([piece, np.repeat(piece[-1:], step - n, 0)])
        try:
            outputs = session.run(names, {module.input_name: piece})
        except Exception as exc:  # ORT's pybind errors: wrong rank, shape, type
            raise TorchinferError(f"{getattr(module, 'source', 'the model')}: onnxruntime "
                                  f"failed on an input of shape {tuple(piece.shape)}: "
                                  f"{exc}") from exc
        pieces.append([o[:n] for o in outputs])
    return tuple(torch.from_numpy(np.ascontiguousarray(np.concatenate(parts), dtype=np.float32))
                 .to(tensor.device) for parts in zip(*pieces))
