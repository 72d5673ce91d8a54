"""Multi-head models: one network, several heads, one pass.

The model returns a dict, a named tuple or a tuple; each head (``heads.Head``) reads one of
its outputs as a task (classify, segment, detect) with its own labels and options. The image
is decoded and preprocessed once, the network runs once, and each input's answer is a
``MultiTask`` record holding one typed result per head, each the same as its single-task
predictor would give on that output.

    predictor = ti.load("multi", "shapes_multitask")             # heads from the model's card
    result = predictor("scene.jpg")
    result["objects"]                                            # Detections
    predictor = ti.load("multi", my_module, heads=[                # a model of your own
        {"name": "cls", "task": "classify", "labels": [...]},
        {"name": "det", "task": "detect", "output": "boxes", "options": {"conf": 0.3}}])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import TorchinferError
from ..models import LoadedModel
from ..results import MultiTask
from .base import Batch, Normalise, Predictor
from .heads import (
    Head,
    check_heads,
    head_options,
    head_results,
    head_tasks,
    make_heads,
    named_outputs,
    with_options,
)
from .yolo import fitted_size, letterbox


def shared_options() -> frozenset[str]:
    """Options given once for every head whose task takes them (``top_k=3`` for every
    classifier)."""
    return frozenset(k for task in head_tasks() for k in head_options(task))



class MultiHeadPredictor(Predictor[MultiTask]):
    """Runs a multi-head model. ``heads``: Head objects or their JSON form (default: the
    model card's); ``head_options``: {head name: {option: value}}; options named in
    ``shared_options()`` (``top_k``, ``conf``, ``iou``, ``max_det``, ``classes``...) apply to every
    head that takes them, a head's own options win.

    Every head sees one letterboxed input (the model's preprocessing size, mean and std). The
    heads are checked against one forward of a blank input when the predictor is built, so a
    missing output or a label count that does not fit fails before any image is read."""

    task = "multi"
    shrinks_images = True
    # another runtime would have to give every output by name (exporters write them; a
    # runtime swap of a multi-output model is not verified per head yet)
    supports_backends = False
    supports_backends_reason = "a multi-head model runs on PyTorch, or from its own ONNX export"

    def __init__(self, model: LoadedModel, *,
                 heads: Sequence[Head | Mapping[str, Any]] | None = None,
                 head_options: Mapping[str, Mapping[str, Any]] | None = None, **kwargs: Any):
        shared = {k: kwargs.pop(k) for k in list(kwargs) if k in shared_options()}
        super().__init__(model, **kwargs)
        given = heads if heads is not None else model.heads
        if not given:
            raise TorchinferError(f"{model.name}: no heads: its file names none; give them with "
                                  "--head NAME=TASK[:labels][:key=value] or heads=[...]")
        self.heads = self._with_options(make_heads(given, model.name), shared, head_options or {})
        self.config = model.preprocess
        self.normalise = Normalise(self.config.mean, self.config.std, self.device)
        self._check_against_model()

    @staticmethod
    def _with_options(heads: tuple[Head, ...], shared: Mapping[str, Any],
                      per_head: Mapping[str, Mapping[str, Any]]) -> tuple[Head, ...]:
        unknown = sorted(set(per_head) - {h.name for h in heads})
        if unknown:
            raise TorchinferError(f"options for unknown heads {', '.join(unknown)}: the heads are "
                                  f"{', '.join(h.name for h in heads)}")
        out = []
        for head in heads:
            common = {k: v for k, v in shared.items() if k in head_options(head.task) and v is not None}
            out.append(with_options(with_options(head, common), per_head.get(head.name, {})))
        return tuple(out)

    @property
    def input_size(self) -> tuple[int, int]:
        """(h, w) of the letterboxed input."""
        size = self.config.crop_size or self.config.resize_size
        return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])

    def _check_against_model(self) -> None:
        blank = torch.zeros((1, 3, *self.input_size), dtype=torch.uint8)
        with torch.inference_mode():
            raw = self.forward(self.device_preprocess(self.to_device(blank)))
        check_heads(self.heads, raw, self.model.name)

    def resize_target(self, size: tuple[int, int]) -> tuple[int, int]:
        return fitted_size(size, self.input_size)

    def preprocess(self, images: Sequence[Image.Image], sources: Sequence[str]) -> Batch:
        arrays, boxes = zip(*(letterbox(img, self.input_size) for img in images))
        return Batch(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2), list(sources),
                     list(boxes))

    def postprocess(self, raw: Any, batch: Batch) -> list[MultiTask]:
        outputs = named_outputs(raw)
        per_head = {head.name: head_results(head, outputs[head.output], batch.sources,
                                            batch.meta, self.input_size)
                    for head in self.heads}
        return [MultiTask(source=source, heads={name: results[i]
                                                for name, results in per_head.items()})
                for i, source in enumerate(batch.sources)]

    def failed(self, source: str, reason: str) -> MultiTask:
        return MultiTask(source=source, error=reason)
