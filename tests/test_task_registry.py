"""The task registry: one complete spec per task, found by name, and detection's choice of
predictor (a torchvision detector vs a raw-tensor model such as the bundled shapes_detector)."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import numpy as np
import pytest
import torchvision
from PIL import Image

import torchinfer as ti
from torchinfer.manifests import task_manifest, task_names
from torchinfer.manifests.depth import Depth
from torchinfer.manifests.embed import Embedding
from torchinfer.models import load_model
from torchinfer.results import Classification, ClassScore, Detections, MultiTask, Segmentation
from torchinfer.tasks import (
    DetectionPredictor,
    Predictor,
    TaskSpec,
    TorchvisionDetectionPredictor,
    YoloDetectionPredictor,
    task_spec,
)

SAMPLES = {
    "classify": Classification(source="a.jpg", topk=(ClassScore(1, "cat", 0.75),)),
    "segment": Segmentation(source="a.jpg", mask=np.array([[0, 1], [1, 1]], np.uint8),
                            labels=("background", "cat")),  # a 2 x 2 image
    "detect": Detections(source="a.jpg", boxes=np.array([[1, 2, 5, 6]], np.float32),
                         scores=np.array([0.5], np.float32), class_ids=np.array([0]),
                         labels=("cat",), image_size=(8, 8)),
}
SAMPLES["multi"] = MultiTask(source="a.jpg", heads={"cls": SAMPLES["classify"],
                                                   "det": SAMPLES["detect"]})
SAMPLES["depth"] = Depth(source="a.jpg", depth=np.array([[1, 2], [3, 4]], np.float32))
SAMPLES["embed"] = Embedding(source="a.jpg", vector=np.array([0.6, 0.8], np.float32), norm=2.0)
TASK_NAMES = task_names()


def test_the_tasks_in_order():
    assert TASK_NAMES == ("classify", "segment", "detect", "multi", "depth", "embed")
    assert [task_spec(name).name for name in TASK_NAMES] == list(TASK_NAMES)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_spec_is_complete(name):
    spec = task_spec(name)
    assert isinstance(spec, TaskSpec)
    # the first predictor runs every model; the record is all; the first three are read as heads
    # by tasks.heads itself
    optional = {"choose", "write", "finish", "read_head"}
    for f in dataclasses.fields(spec.implementation):
        assert f.name in optional or getattr(spec.implementation, f.name) is not None, f.name
    assert spec.manifest is task_manifest(name) and spec.name == name
    assert spec.predictors and all(issubclass(p, Predictor) and p.task == name
                                   for p in spec.predictors)
    for fn in (spec.read_dataset, spec.evaluator, spec.describe, spec.draw):
        assert callable(fn)
    assert isinstance(SAMPLES[name], spec.result)
    assert isinstance(spec.preprocess, ti.PreprocessConfig)
    assert spec.output_name and spec.columns
    row = spec.describe(SAMPLES[name])
    assert isinstance(row, tuple) and len(row) == len(spec.columns)
    assert all(isinstance(cell, str) for cell in row)
    picture = spec.draw(Image.new("RGB", (2, 2) if name in ("segment", "depth") else (8, 8)),
                        SAMPLES[name])
    assert isinstance(picture, Image.Image)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.manifest = None  # type: ignore[misc]


def test_lookups_hold_what_the_old_tables_held():
    classify, segment, detect = (task_spec(n) for n in TASK_NAMES[:3])
    assert (classify.output_name, segment.output_name, detect.output_name) == ("logits", "out", "output0")
    assert (classify.agreement, segment.agreement, detect.agreement) == ("top-1", "pixel", None)
    assert classify.preprocess == ti.PreprocessConfig.default()
    assert (classify.preprocess.resize_size, classify.preprocess.crop_size) == ((256,), (224, 224))
    assert (segment.preprocess.resize_size, segment.preprocess.crop_size) == ((520,), None)
    assert detect.preprocess.resize_size == (640, 640) and detect.preprocess.crop_size is None
    assert detect.preprocess.mean == (0.0, 0.0, 0.0) and detect.preprocess.std == (1.0, 1.0, 1.0)
    assert detect.evaluation_options == {"conf": 0.001, "max_det": 100, "iou": 0.6}
    assert classify.evaluation_options == {"top_k": 5}
    assert classify.columns == ("top-1", "score")
    assert classify.describe(SAMPLES["classify"]) == ("cat", "0.7500")
    assert detect.describe(SAMPLES["detect"]) == ("1", "cat 0.50")
    assert segment.describe(SAMPLES["segment"]) == ("cat 75%, background 25%", "2x2")


def test_unknown_task_names_the_known_ones():
    with pytest.raises(ti.TorchinferError, match="unknown task 'pose': use one of classify, segment, detect"):
        task_spec("pose")


def test_detection_picks_the_torchvision_predictor_for_a_torchvision_detector():
    module = torchvision.models.get_model("ssdlite320_mobilenet_v3_large", weights=None,
                                          weights_backbone=None).eval()
    loaded = load_model(module)
    loaded = replace(loaded, preprocess=task_spec("detect").preprocess)
    spec = task_spec("detect")
    assert spec.predictor_class(loaded) is TorchvisionDetectionPredictor
    det = spec.predictor_for(loaded, device="cpu", conf=0.5)
    assert type(det) is TorchvisionDetectionPredictor and isinstance(det, DetectionPredictor)
    assert det.decoder == "torchvision" and not det.supports_backends
    # the old entry point builds the same kind
    assert type(DetectionPredictor(loaded, device="cpu")) is TorchvisionDetectionPredictor
    # an explicit YOLO decoder is obeyed, whatever the model
    assert spec.predictor_class(loaded, decoder="yolov8") is YoloDetectionPredictor


def test_detection_picks_the_yolo_predictor_for_the_bundled_shapes_detector():
    loaded = load_model("shapes_detector")
    spec = task_spec("detect")
    assert spec.predictor_class(loaded) is YoloDetectionPredictor
    assert spec.predictor_class(loaded, decoder="yolov5") is YoloDetectionPredictor
    assert spec.predictor_class(loaded, decoder="torchvision") is TorchvisionDetectionPredictor
    det = DetectionPredictor(loaded, device="cpu")
    assert type(det) is YoloDetectionPredictor and det.decoder == "auto" and det.supports_backends
    with pytest.raises(ti.TorchinferError,
                       match="unknown decoder 'yolov9': use auto, detr, detr-sigmoid, torchvision, yolov5, yolov8"):
        spec.predictor_class(loaded, decoder="yolov9")
    with pytest.raises(ti.TorchinferError, match="cannot use decoder 'torchvision'"):
        YoloDetectionPredictor(loaded, device="cpu", decoder="torchvision")


def test_the_manifest_lists_the_decoders_the_detectors_know():
    """The detect manifest names its decoders without torch; the predictors are the truth."""
    known = {"auto", *(d for kind in DetectionPredictor.__subclasses__() for d in kind.decoders)}
    assert set(task_manifest("detect").option("decoder").choices) == known
