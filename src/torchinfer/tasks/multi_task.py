"""Multi-head models as a task: each head is read, scored and described by its own task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PIL import Image

from ..draw import visualise
from ..errors import TorchinferError
from ..models import PreprocessConfig
from ..results import MultiTask
from .multi import MultiHeadPredictor
from .multi_eval import MultiTaskReport, evaluate_heads
from .registry import task_of_result, task_spec
from .spec import TaskImplementation


def read_heads_data(data: Any, **_: Any) -> Mapping[str, Any]:
    """{head: its data}; each is read by its head's task when the heads are known."""
    if not isinstance(data, Mapping):
        raise TorchinferError("eval multi takes data per head: --data HEAD=PATH (repeated), "
                              "or {head: path} in Python")
    return data


def evaluate(predictor: Any, data: Mapping[str, Any], **kwargs: Any) -> MultiTaskReport:
    return evaluate_heads(predictor, data, task_spec, **kwargs)


def describe(result: MultiTask) -> tuple[str, ...]:
    return ("; ".join(f"{name}: {' '.join(task_of_result(head).describe(head))}"
                      for name, head in result.heads.items()),)


def draw(image: Image.Image, result: MultiTask) -> Image.Image:
    return visualise(result, image)  # every head on one picture (draw.py)


TASK = TaskImplementation(
    result=MultiTask, predictors=(MultiHeadPredictor,),
    # one letterbox for every head (tasks.heads); a model's own card says its size, mean and std
    preprocess=PreprocessConfig(resize_size=(640, 640), crop_size=None, mean=(0.0, 0.0, 0.0),
                                std=(1.0, 1.0, 1.0)),
    output_name="heads", read_dataset=read_heads_data, evaluator=evaluate, describe=describe,
    draw=draw)
