"""What runs a task: the torch side of a task's manifest (``manifests``).

A task's module ends with its implementation::

    TASK = TaskImplementation(result=Depth, predictors=(DepthPredictor,),
                              preprocess=PreprocessConfig.default(), output_name="depth",
                              read_dataset=read_depth_data, evaluator=evaluate_depth,
                              describe=describe, draw=draw_depth)

and its manifest names it (``implementation="mypkg.depth:TASK"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..models import LoadedModel, PreprocessConfig
from ..results import Result
from .base import Predictor

# (model, predictor options) -> the predictor class that runs the model
PredictorChoice = Callable[[LoadedModel, Mapping[str, Any]], type[Predictor]]
# (head, the head's output for the batch, sources, letterboxes, input (h, w)) -> one result per
# image: how a task reads its head of a multi-head model (tasks.heads)
HeadReader = Callable[[Any, Any, Sequence[str], Sequence[Any], tuple[int, int]], list[Any]]
# (result, output folder, the input's file stem, the manifest's save options) -> (the files
# written {kind: path}, what the record says of them beyond their paths)
ResultWriter = Callable[[Any, Path, str, Mapping[str, Any]],
                        tuple[Mapping[str, str], Mapping[str, Any]]]


@dataclass(frozen=True, kw_only=True)
class TaskImplementation:
    """result: the one result type of the task. predictors: the classes that can run it;
    choose: which one runs a loaded model with given options (None: the first). preprocess:
    the preprocessing of a model whose weights bring none. output_name: the exported graph's
    output. read_dataset / evaluator / evaluation_options: the labelled layout, its scorer (it
    takes a predictor) and the predictor options it is customarily run with. describe: the
    cells of a result's row in a summary table (the manifest's columns). draw: ``draw(image,
    result)``, the picture of a result on its image. write: the task's own files for a result
    (``predict`` writes the JSON record of every task; a depth map...), given the output
    folder, the input's name and the manifest's save options; None when the record is all.
    finish: after a finished run, the task's files made from the whole run (embed's
    ``embeddings.npy`` in its records' order), given the output folder; what it wrote, by
    name. head_ranks / read_head: for a task that can be a head of a multi-head model (its
    manifest's ``head``) beyond the built-in three, the ranks its output may have and how one
    batch of it becomes results through the shared letterbox."""

    result: type[Result]
    predictors: tuple[type[Predictor], ...]
    preprocess: PreprocessConfig
    output_name: str
    read_dataset: Callable[..., Any]
    evaluator: Callable[..., Any]
    describe: Callable[[Any], tuple[str, ...]]
    draw: Callable[[Image.Image, Any], Image.Image]
    choose: PredictorChoice | None = None
    evaluation_options: Mapping[str, Any] = field(default_factory=dict)
    write: ResultWriter | None = None
    finish: Callable[[Path], Mapping[str, str]] | None = None
    head_ranks: tuple[int, ...] = ()
    read_head: HeadReader | None = None

    def predictor_class(self, model: LoadedModel, options: Mapping[str, Any]) -> type[Predictor]:
        return self.predictors[0] if self.choose is None else self.choose(model, options)
