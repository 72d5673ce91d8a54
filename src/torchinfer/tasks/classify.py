"""Image classification: resize + centre crop + normalise -> model -> softmax (or sigmoid) -> top-k."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..draw import annotate_classification
from ..errors import OptionError, TorchinferError
from ..evaluation import CLASSIFICATION_OPTIONS, evaluate_classification, read_classification_data
from ..models import LoadedModel, PreprocessConfig
from ..models.outputs import main_output
from ..results import Classification, ClassScore
from .base import Batch, Normalise, Predictor
from .resizing import input_size_of, resize_and_crop
from .spec import TaskImplementation


class ClassificationPredictor(Predictor[Classification]):
    """Classifies images with the model's own preprocessing (from its weights' config).

    Resize and crop run on the PIL image with torchvision's functional ops, so the input equals
    torchvision's reference ``weights.transforms()`` pixel for pixel; the batch stays uint8 until
    it is on the device, where it becomes float32 and is normalised.
    """

    task = "classify"
    shrinks_images = True

    def __init__(self, model: LoadedModel, *, top_k: int = 5, multi_label: bool = False,
                 **kwargs: Any):
        super().__init__(model, **kwargs)
        if top_k < 1:
            raise OptionError(f"top_k must be >= 1, got {top_k}")
        self.top_k = top_k
        self.multi_label = multi_label
        cfg = model.preprocess
        if cfg.crop_size is None and len(cfg.resize_size) != 2:
            raise TorchinferError(f"{model.name}: classification needs a fixed input size "
                                  "(a crop, or a resize to H,W); pass input_size")
        self.config = cfg
        # images whose resize would blow up are refused on their header (io.limits)
        self.loader = replace(self.loader, resize_size=cfg.resize_size)
        self.normalise = Normalise(cfg.mean, cfg.std, self.device)

    def resize_target(self, size: tuple[int, int]) -> tuple[int, int]:
        return input_size_of(size, self.config)

    def preprocess(self, images: Sequence[Image.Image], sources: Sequence[str]) -> Batch:
        cfg = self.config
        hwc = []
        for img, source in zip(images, sources):
            hwc.append(torch.from_numpy(np.array(resize_and_crop(img, cfg, source))))
        # (N, C, H, W) view of NHWC memory: already channels_last, so no copy is needed later
        return Batch(torch.stack(hwc).permute(0, 3, 1, 2), list(sources), [None] * len(hwc))

    def postprocess(self, raw: Any, batch: Batch, *, top_k: int | None = None
                    ) -> list[Classification]:
        logits = main_output(raw, ndim=2, what="the classifier")
        return classification_results(logits, batch.sources, self.model.labels,
                                      top_k=self.top_k if top_k is None else top_k,
                                      multi_label=self.multi_label)

    def failed(self, source: str, reason: str) -> Classification:
        return Classification(source=source, error=reason)


def classification_results(logits: torch.Tensor, sources: Sequence[str],
                           labels: Sequence[str] | None, *, top_k: int,
                           multi_label: bool = False) -> list[Classification]:
    """(N, classes) logits -> one Classification per source: softmax (sigmoid when
    ``multi_label``: independent yes/no per class) and the ``top_k`` best, best first."""
    logits = logits.float()
    if labels is not None and len(labels) != logits.shape[1]:
        raise TorchinferError(f"{len(labels)} labels for a model with {logits.shape[1]} "
                              "outputs: check --labels / num_classes")
    probs = logits.sigmoid() if multi_label else logits.softmax(dim=1)
    k = min(top_k, probs.shape[1])
    top_scores, top_indices = probs.topk(k, dim=1)
    scores, indices = top_scores.cpu().tolist(), top_indices.cpu().tolist()
    results = []
    for source, row_scores, row_idx in zip(sources, scores, indices):
        topk = tuple(ClassScore(i, labels[i] if labels else str(i), min(max(s, 0.0), 1.0))
                     for s, i in zip(row_scores, row_idx))
        results.append(Classification(source=source, topk=topk))
    return results


def describe(result: Classification) -> tuple[str, ...]:
    return result.top1.label, f"{result.top1.score:.4f}"


# below this, the banner of top classes would cover most of the picture
MIN_BANNER_PICTURE = 256


def draw(image: Image.Image, result: Classification) -> Image.Image:
    # no coordinates to keep, so a small picture can be drawn larger, with room for the banner
    if max(image.size) < MIN_BANNER_PICTURE:
        image = image.resize((image.width * 2, image.height * 2), Image.Resampling.LANCZOS)
    return annotate_classification(image, result)


TASK = TaskImplementation(
    result=Classification, predictors=(ClassificationPredictor,),
    preprocess=PreprocessConfig.default(), output_name="logits",
    read_dataset=read_classification_data, evaluator=evaluate_classification,
    evaluation_options=CLASSIFICATION_OPTIONS, describe=describe, draw=draw)
