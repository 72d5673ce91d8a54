"""Every task in one place: ``task_spec(name)`` says how a task predicts, preprocesses by
default, exports, verifies, evaluates, prints and draws, so no other module keeps a table or an
if/elif keyed by task name.

    spec = task_spec("detect")
    predictor = spec.predictor_for(loaded, conf=0.3)     # the kind that runs this model
    report = spec.evaluator(predictor, spec.read_dataset("data/coco"))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image
from torchvision.transforms._presets import SemanticSegmentation

from ..draw import annotate_classification, draw_detections, overlay_segmentation, visualise
from ..errors import TorchinferError
from ..evaluation import (
    CLASSIFICATION_OPTIONS,
    DETECTION_OPTIONS,
    SEGMENTATION_OPTIONS,
    EvalReport,
    evaluate_classification,
    evaluate_detection,
    evaluate_segmentation,
    read_classification_data,
    read_detection_data,
    read_segmentation_data,
)
from ..models import LoadedModel, PreprocessConfig
from ..results import Classification, Detections, MultiTask, Segmentation
from .base import Predictor
from .classify import ClassificationPredictor
from .detect import AUTO, DetectionPredictor
from .detect_sets import SetDetectionPredictor
from .detect_torchvision import TorchvisionDetectionPredictor
from .detect_yolo import YoloDetectionPredictor
from .multi import SHARED_OPTIONS, MultiHeadPredictor
from .multi_eval import MultiTaskReport, evaluate_heads
from .segment import SegmentationPredictor

# (model, predictor options) -> the predictor class that runs the model
PredictorChoice = Callable[[LoadedModel, Mapping[str, Any]], type[Predictor]]


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """What torchinfer knows about one task.

    predictors: the classes that can run it; choose: which one runs a loaded model with given
    options. preprocess: the preprocessing of a model whose weights bring none. output_name:
    the exported graph's output. agreement: what verification compares beyond the tolerance
    (``verify.Comparison``: "top-1", "pixel", or None). read_dataset / evaluator /
    evaluation_options: the labelled layout, its scorer (it takes a predictor) and the
    predictor options it is customarily run with. columns / describe: the title and the
    cells of a result's row in a summary table. draw: ``draw(image, result)``, the picture
    of a result on its image (draw.py's argument order).
    """

    name: str
    predictors: tuple[type[Predictor], ...]
    choose: PredictorChoice
    preprocess: PreprocessConfig
    output_name: str
    agreement: str | None
    read_dataset: Callable[..., Any]
    evaluator: Callable[..., EvalReport]
    evaluation_options: Mapping[str, Any]
    columns: tuple[str, ...]
    describe: Callable[[Any], tuple[str, ...]]
    draw: Callable[[Image.Image, Any], Image.Image]
    # the options of the task's own, beyond those every predictor takes (device, batch_size...)
    options: tuple[str, ...] = ()

    def predictor_class(self, model: LoadedModel, **options: Any) -> type[Predictor]:
        """The predictor class that runs ``model`` with ``options``."""
        return self.choose(model, options)

    def predictor_for(self, model: LoadedModel, **options: Any) -> Predictor:
        """The predictor that runs ``model``, built with ``options`` (device, batch_size...)."""
        return self.choose(model, options)(model, **options)


def _always(cls: type[Predictor]) -> PredictorChoice:
    def choose(model: LoadedModel, options: Mapping[str, Any]) -> type[Predictor]:
        return cls
    return choose


def _detector(model: LoadedModel, options: Mapping[str, Any]) -> type[Predictor]:
    return DetectionPredictor.kind_for(model, decoder=options.get("decoder", AUTO))


def _describe_classification(result: Classification) -> tuple[str, ...]:
    return result.top1.label, f"{result.top1.score:.4f}"


def _describe_segmentation(result: Segmentation) -> tuple[str, ...]:
    return (", ".join(f"{a.label} {a.fraction:.0%}" for a in result.areas[:4]),
            f"{result.size[1]}x{result.size[0]}")


def _describe_detections(result: Detections) -> tuple[str, ...]:
    best = ", ".join(f"{result.labels[i]} {result.scores[i]:.2f}" for i in range(min(3, len(result))))
    return str(len(result)), best


# below this, the banner of top classes would cover most of the picture
MIN_BANNER_PICTURE = 256


def _draw_classification(image: Image.Image, result: Classification) -> Image.Image:
    # no coordinates to keep, so a small picture can be drawn larger, with room for the banner
    if max(image.size) < MIN_BANNER_PICTURE:
        image = image.resize((image.width * 2, image.height * 2), Image.Resampling.LANCZOS)
    return annotate_classification(image, result)


def _read_heads_data(data: Any, **_: Any) -> Mapping[str, Any]:
    """{head: its data}; each is read by its head's task when the heads are known."""
    if not isinstance(data, Mapping):
        raise TorchinferError("eval multi takes data per head: --data HEAD=PATH (repeated), "
                              "or {head: path} in Python")
    return data


def _evaluate_multi(predictor: Any, data: Mapping[str, Any], **kwargs: Any) -> MultiTaskReport:
    single = {name: (spec.read_dataset, spec.evaluator, spec.evaluation_options)
              for name, spec in _SPECS.items() if name != "multi"}
    return evaluate_heads(predictor, data, single, **kwargs)


def _describe_multi(result: MultiTask) -> tuple[str, ...]:
    return ("; ".join(f"{name}: {' '.join(_SPECS[_task_of(head)].describe(head))}"
                      for name, head in result.heads.items()),)


def _draw_multi(image: Image.Image, result: MultiTask) -> Image.Image:
    return visualise(result, image)  # every head on one picture (draw.py)


def _task_of(result: Any) -> str:
    return {Classification: "classify", Segmentation: "segment",
            Detections: "detect"}[type(result)]


_SPECS = {spec.name: spec for spec in (
    TaskSpec(name="classify", predictors=(ClassificationPredictor,),
             choose=_always(ClassificationPredictor),
             preprocess=PreprocessConfig.default(), output_name="logits", agreement="top-1",
             read_dataset=read_classification_data, evaluator=evaluate_classification,
             evaluation_options=CLASSIFICATION_OPTIONS, columns=("top-1", "score"),
             describe=_describe_classification, draw=_draw_classification,
             options=("top_k", "multi_label")),
    TaskSpec(name="segment", predictors=(SegmentationPredictor,),
             choose=_always(SegmentationPredictor),
             # torchvision's segmentation recipe: short side to 520, no crop, ImageNet mean/std
             preprocess=PreprocessConfig.from_transforms(SemanticSegmentation(resize_size=520)),
             output_name="out", agreement="pixel",
             read_dataset=read_segmentation_data, evaluator=evaluate_segmentation,
             evaluation_options=SEGMENTATION_OPTIONS, columns=("classes (area)", "size"),
             describe=_describe_segmentation, draw=overlay_segmentation),
    TaskSpec(name="detect", predictors=(TorchvisionDetectionPredictor, YoloDetectionPredictor,
                                        SetDetectionPredictor),
             choose=_detector,
             # YOLO-style raw detectors: a 640x640 letterbox, inputs in [0, 1] (no mean/std);
             # torchvision detectors normalise inside and ignore the size
             preprocess=PreprocessConfig(resize_size=(640, 640), crop_size=None,
                                         mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
             output_name="output0", agreement=None,
             read_dataset=read_detection_data, evaluator=evaluate_detection,
             evaluation_options=DETECTION_OPTIONS, columns=("objects", "best"),
             describe=_describe_detections, draw=draw_detections,
             options=("conf", "iou", "max_det", "classes", "decoder")),
    TaskSpec(name="multi", predictors=(MultiHeadPredictor,), choose=_always(MultiHeadPredictor),
             # one letterbox for every head (tasks.heads); a model's own card says its size,
             # mean and std
             preprocess=PreprocessConfig(resize_size=(640, 640), crop_size=None,
                                         mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
             output_name="heads", agreement="per head",
             read_dataset=_read_heads_data, evaluator=_evaluate_multi,
             evaluation_options={}, columns=("heads",),
             describe=_describe_multi, draw=_draw_multi,
             options=("heads", "head_options", *sorted(SHARED_OPTIONS))),
)}

TASK_NAMES: tuple[str, ...] = tuple(_SPECS)


def task_spec(name: str) -> TaskSpec:
    """The spec of task ``name``; a TorchinferError naming the known tasks otherwise."""
    try:
        return _SPECS[name]
    except KeyError:
        raise TorchinferError(f"unknown task {name!r}: use one of {', '.join(TASK_NAMES)}") from None


def task_options(name: str) -> tuple[str, ...]:
    """The options of task ``name``'s own (``top_k`` for classify...)."""
    return task_spec(name).options
