"""Image classification: resize + centre crop + normalise -> model -> softmax (or sigmoid) -> top-k."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image

from ..errors import OptionError, TorchinferError
from ..models import LoadedModel
from ..models.outputs import main_output
from ..results import Classification, ClassScore
from ..runner.limits import check_resize
from ..verify import BF16_TOLERANCE, Comparison, OutputCheck
from .base import Batch, Normalise, Predictor

# jpeg_draft keeps the decoded short side >= this many times the resize target
DRAFT_OVERSAMPLING = 2
DRAFT_TOLERANCE = BF16_TOLERANCE


class ClassificationPredictor(Predictor[Classification]):
    """Classifies images with the model's own preprocessing (from its weights' config).

    Resize and crop run on the PIL image with torchvision's functional ops, so the input equals
    torchvision's reference ``weights.transforms()`` pixel for pixel; the batch stays uint8 until
    it is on the device, where it becomes float32 and is normalised.
    """

    task = "classify"

    def __init__(self, model: LoadedModel, *, top_k: int = 5, multi_label: bool = False,
                 jpeg_draft: bool = False, **kwargs: Any):
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
        self.jpeg_draft = jpeg_draft
        self.draft_check: OutputCheck | None = None  # set by check_jpeg_draft
        if jpeg_draft:
            # Decode big JPEGs at 1/2..1/8 scale, keeping at least twice the resize target
            # so the antialiased resize still does the real filtering (BENCHMARKS.md: effect
            # on logits and top-1 measured against a full decode).
            self.decode_short_side = DRAFT_OVERSAMPLING * min(cfg.resize_size)
        self.normalise = Normalise(cfg.mean, cfg.std, self.device)

    def preprocess(self, images: Sequence[Image.Image], sources: Sequence[str]) -> Batch:
        cfg = self.config
        hwc = []
        for img, source in zip(images, sources):
            check_resize(img.size, cfg.resize_size, source)  # for images that skip the loader
            img = F.resize(img, list(cfg.resize_size), interpolation=cfg.interpolation_mode,
                           antialias=cfg.antialias)
            if cfg.crop_size is not None:
                img = F.center_crop(img, list(cfg.crop_size))
            hwc.append(torch.from_numpy(np.array(img)))
        # (N, C, H, W) view of NHWC memory: already channels_last, so no copy is needed later
        return Batch(torch.stack(hwc).permute(0, 3, 1, 2), list(sources), [None] * len(hwc))

    def postprocess(self, raw: Any, batch: Batch) -> list[Classification]:
        logits = main_output(raw, ndim=2, what="the classifier")
        return classification_results(logits, batch.sources, self.model.labels,
                                      top_k=self.top_k, multi_label=self.multi_label)

    def check_jpeg_draft(self) -> OutputCheck:
        """Draft decoding against a full decode, through this model: the photographs saved as
        JPEGs large enough to be drafted (short side 2.5x the smallest drafted size, so 1/2
        scale), compared with bf16's tolerance, the loss we already accept for speed. Sets and
        returns ``draft_check`` (``ti.load`` refuses a predictor whose check failed)."""
        from ..assets import load_photographs

        if not self.decode_short_side:
            raise TorchinferError("check_jpeg_draft: this predictor was built without jpeg_draft")
        short = int(2.5 * self.decode_short_side)
        comparison = Comparison("output", DRAFT_TOLERANCE, "top-1", candidate="draft")
        photos = list(load_photographs().values())
        acc = comparison.start(len(photos))
        for img in photos:
            scale = short / min(img.size)
            buffer = io.BytesIO()
            img.resize((round(img.width * scale), round(img.height * scale)),
                       Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
            data = buffer.getvalue()
            full = self.loader.load(data, "photograph")
            drafted = self.loader.load(data, "photograph", min_short_side=self.decode_short_side)
            logits = []
            with torch.inference_mode():
                for image in (full, drafted):
                    tensor = self.prepare(self.to_device(self.preprocess([image], [""]).tensor))
                    logits.append(main_output(self.forward(tensor), ndim=2,
                                              what="the classifier").float().cpu().numpy())
            acc.add(*logits)
        self.draft_check = acc.result()
        return self.draft_check

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
