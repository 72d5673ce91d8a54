"""``torchinfer.load``: one call from a task and a model name to a ready predictor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import TorchinferError
from .models import load_model, read_labels, torchvision_task
from .tasks import PREDICTORS, Predictor


def load(task: str, model: str | Path | nn.Module, weights: str | Path | None = None, *,
         device: str | torch.device = "auto", num_classes: int | None = None,
         labels: str | Path | Sequence[str] | None = None,
         input_size: int | tuple[int, int] | None = None,
         mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
         strict: bool = True, trust_pickle: bool = False,
         model_kwargs: dict[str, Any] | None = None, **options: Any) -> Predictor:
    """Build the predictor for ``task`` ("classify", ...) around ``model`` + ``weights``.

    Preprocessing and labels come with the weights; ``labels`` (a list or a .txt/.json file),
    ``input_size``, ``mean`` and ``std`` override them. Other keyword arguments go to the task's
    predictor (e.g. ``top_k``, ``batch_size``, ``max_pixels``, ``bgr``).
    """
    if task not in PREDICTORS:
        raise TorchinferError(f"unknown task {task!r}: use one of {', '.join(PREDICTORS)}")
    known = torchvision_task(str(model)) if isinstance(model, (str, Path)) else None
    if known is not None and known != task:  # refuse before spending time building it
        raise TorchinferError(f"{model} is a {known} model, not {task}: use task {known!r}")
    loaded = load_model(model, weights, num_classes=num_classes, strict=strict,
                        trust_pickle=trust_pickle, **(model_kwargs or {}))
    preprocess = loaded.preprocess.with_overrides(
        input_size=input_size, mean=tuple(mean) if mean else None,
        std=tuple(std) if std else None)
    names = loaded.labels
    if labels is not None:
        names = read_labels(labels) if isinstance(labels, (str, Path)) else list(labels)
    loaded = replace(loaded, preprocess=preprocess, labels=names)
    return PREDICTORS[task](loaded, device=device, **options)
