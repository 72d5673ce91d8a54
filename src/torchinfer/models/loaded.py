"""``LoadedModel``: what every way of loading a model (by name, weights file, whole-model file,
ONNX file) hands to the predictors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from .config import PreprocessConfig
from .weights import KeyReport


@dataclass
class LoadedModel:
    """A model in eval mode plus what is needed to feed it and read its output."""

    module: nn.Module
    name: str
    task: str | None  # classify | segment | detect, when known from the registry
    preprocess: PreprocessConfig
    labels: list[str] | None
    weights: str | None  # where the weights came from; None means random initialisation
    weights_format: str | None = None
    key_report: KeyReport | None = None  # set when strict=False let keys through
    # "weights" when the preprocessing came with the weights/architecture, "default" when
    # nothing said and torchvision's generic defaults were taken (the task may pick others)
    preprocess_from: str = "weights"
    # a multi-head model's heads as its file's card gives them (tasks.heads reads them)
    heads: tuple[dict[str, Any], ...] | None = None
    # which model source built it (models.sources: "torchvision", "timm", "transformers"...)
    # and, for a hub snapshot, the commit it was read from
    source: str | None = None
    revision: str | None = None

    @property
    def random_init(self) -> bool:
        return self.weights is None

    @property
    def num_classes(self) -> int | None:
        return len(self.labels) if self.labels is not None else None
