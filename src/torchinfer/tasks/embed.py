"""Image embeddings: one L2-normalised vector per image.

What the vector is: the model's pre-logits features when a model of another task (or of none
said) ends in a linear classifier (torchvision and timm backbones, a transformers classifier:
the input of that last ``nn.Linear``, which is timm's ``forward_head(..., pre_logits=True)``),
else the model's output (an embedding model's own, a transformers base model's pooled output,
a module that returns features), picked from a dict or tuple with the ``output`` option. A
4-D feature map is averaged over space. The classifier is only removed when a forward pass
shows that the model's output *is* that layer's output, so a model that does something after
it keeps its own output.

The task's torch side is here (its manifest and its result type are in
``manifests/embed.py``): the predictor, a multi-head model's embedding head, what ``predict``
writes (``embeddings.npy``, ``vectors.store``), the drawing, and ``eval embed`` (retrieval on
an ImageFolder: is an image's nearest neighbour of its class?).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from ..errors import OptionError, TorchinferError
from ..evaluation import (
    DatasetError,
    EvalReport,
    failure_record,
    limited,
    predict_paths,
    predictor_options,
    read_image_folder,
)
from ..evaluation.datasets import ImageFolder
from ..manifests.embed import Embedding
from ..models import LoadedModel, PreprocessConfig
from ..runner.sinks import read_jsonl, write_jsonl_atomic
from ..vectors.index import exact_search
from ..vectors.store import VECTORS, append_vector, compact, shape_of
from .base import Batch, Predictor
from .resizing import FittedToRecipe
from .spec import TaskImplementation


class Features(nn.Module):
    """A model's output as (N, D) features: ``output`` picked from a dict (a key) or a tuple
    (an index), a 4-D map averaged over its height and width."""

    def __init__(self, module: nn.Module, output: str | None):
        super().__init__()
        self.module = module
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return features_of(self.module(x), self.output)


def features_of(out: Any, output: str | None) -> torch.Tensor:
    """``out`` (a model's output) as (N, D); TorchinferError saying what to pick otherwise."""
    if isinstance(out, Mapping):
        if output is None or output not in out:
            raise TorchinferError(f"the model returns a dict ({', '.join(map(str, out))}): "
                                  "name the output to embed with --output KEY")
        out = out[output]
    elif isinstance(out, (tuple, list)):
        if output is None or not output.lstrip("-").isdigit() or \
                not -len(out) <= int(output) < len(out):
            raise TorchinferError(f"the model returns {len(out)} outputs: name the one to "
                                  "embed with --output INDEX (0 is the first)")
        out = out[int(output)]
    elif output is not None:
        raise TorchinferError(f"--output {output}: the model returns one tensor, not a dict "
                              "or a tuple")
    if not isinstance(out, torch.Tensor):
        raise TorchinferError(f"the output to embed is a {type(out).__name__}, not a tensor")
    if out.ndim == 4:  # a feature map: global average pooling
        return out.mean(dim=(2, 3))
    if out.ndim != 2:
        raise TorchinferError(f"the output to embed has shape {tuple(out.shape)}; expected "
                              "(N, D), or (N, C, H, W) feature maps (averaged over space)")
    return out


def without_classifier(module: nn.Module, sample: torch.Tensor, own: bool) -> nn.Module | None:
    """``module`` with its last ``nn.Linear`` replaced by the identity, when a forward pass on
    ``sample`` shows that layer's output is the model's (a classifier head); None otherwise.
    ``own``: the module is this predictor's to change, else it is copied first."""
    linears = [(name, m) for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None
    name, last = linears[-1]
    seen: list[Any] = []
    handle = last.register_forward_hook(lambda m, args, out: seen.append(out))
    try:
        with torch.inference_mode():
            out = module(sample)
    finally:
        handle.remove()
    if not seen or not isinstance(out, torch.Tensor) or out.ndim != 2 or \
            not isinstance(seen[-1], torch.Tensor) or seen[-1].shape != out.shape or \
            not torch.equal(seen[-1], out):
        return None
    stripped = module if own else copy.deepcopy(module)
    parent_name, _, child = name.rpartition(".")
    parent = stripped.get_submodule(parent_name) if parent_name else stripped
    setattr(parent, child, nn.Identity())
    return stripped


def embedding_module(model: LoadedModel, output: str | None) -> nn.Module:
    """The module whose output is the vector (see the module's docstring). A model that
    says it is an embedding model (its card, a transformers base model) keeps its output."""
    if output is None and model.task != "embed":
        side = model.preprocess.crop_size or (model.preprocess.nominal_side,) * 2
        sample = torch.randn(1, 3, *side, generator=torch.Generator().manual_seed(0))
        stripped = without_classifier(model.module.eval(), sample, own=model.source is not None)
        if stripped is not None:
            return Features(stripped, None)
    return Features(model.module, output)


class EmbedPredictor(FittedToRecipe, Predictor[Embedding]):
    """Runs a model for its features with the preprocessing of its weights (timm's transform,
    a transformers processor, torchvision's recipe)."""

    task = "embed"
    shrinks_images = True

    def __init__(self, model: LoadedModel, *, output: str | None = None, **kwargs: Any):
        if output is not None and not isinstance(output, str):
            raise OptionError(f"output must be a key or an index as text, got {output!r}")
        self.output = output
        super().__init__(replace(model, module=embedding_module(model, output)), **kwargs)
        self.fit_to_recipe(model.preprocess)  # the module gives (N, D): a row per picture

    def postprocess(self, raw: list[torch.Tensor], batch: Batch) -> list[Embedding]:
        return [unit_vector(source, features) for source, features in zip(batch.sources, raw)]

    def failed(self, source: str, reason: str) -> Embedding:
        return Embedding(source=source, error=reason)


def unit_vector(source: str, features: torch.Tensor) -> Embedding:
    """``features`` as a result: float32, divided by its length (a zero vector stays zero)."""
    vector = features.detach().float().reshape(-1).cpu().numpy()
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    unit = vector / norm if norm > 0 else vector
    return Embedding(source=source, vector=unit.astype(np.float32), norm=norm)


def read_embed_head(head: Any, output: Any, sources: Sequence[str], letterboxes: Sequence[Any],
                    input_size: tuple[int, int]) -> list[Embedding]:
    """A multi-head model's embedding head: its (N, D) output, or (N, C, H, W) averaged over
    the letterboxed input, one vector per image."""
    rows = features_of(output, None)
    return [unit_vector(source, row) for source, row in zip(sources, rows)]


# --- what predict writes ------------------------------------------------------------------------

def write_vector(result: Embedding, out: Path, name: str, options: Mapping[str, Any]
                 ) -> tuple[Mapping[str, str], Mapping[str, Any]]:
    """The vector as the next row of ``embeddings.npy``; the record says which (``row``)."""
    assert result.vector is not None
    return {}, {"row": append_vector(out / VECTORS, result.vector)}


def gather_vectors(out: Path) -> Mapping[str, str]:
    """After a run: ``embeddings.npy`` holds the rows its records name, in their order (rows
    a killed or resumed run left unnamed are dropped, and the records renumbered)."""
    vectors, predictions = out / VECTORS, out / "predictions.jsonl"
    if not vectors.is_file():
        return {}
    records = read_jsonl(predictions)
    named = [r["row"] for r in records if isinstance(r.get("row"), int)]
    rows, _ = shape_of(vectors)
    if named != list(range(rows)):
        compact(vectors, named)
        renumbered = iter(range(len(named)))
        write_jsonl_atomic(predictions, [{**r, "row": next(renumbered)}
                                         if isinstance(r.get("row"), int) else r
                                         for r in records])
    return {"embeddings": str(vectors)}


def draw_embedding(image: Image.Image, result: Embedding) -> Image.Image:
    """The image with its vector's first values as a strip of grey cells along the bottom
    (a glance tells identical vectors apart from different ones)."""
    picture = image.convert("RGB").copy()
    assert result.vector is not None
    cells = result.vector[:64]
    w, h = picture.size
    cell = max(1, w // max(1, len(cells)))
    strip = max(4, h // 24)
    draw = ImageDraw.Draw(picture)
    scale = float(np.abs(cells).max()) or 1.0
    for i, v in enumerate(cells):
        grey = int(round(127.5 + 127.5 * float(v) / scale))
        draw.rectangle([i * cell, h - strip, (i + 1) * cell - 1, h - 1], fill=(grey,) * 3)
    return picture


def describe(result: Embedding) -> tuple[str, ...]:
    return (str(result.dim), f"{result.norm:.4g}")


# --- evaluation: retrieval on an ImageFolder --------------------------------------------------

@dataclass(kw_only=True)
class RetrievalReport(EvalReport):
    """Each image is a query against all the others: recall@k is the share of queries with an
    image of their own class among their k nearest (by cosine, the query left out)."""

    task: ClassVar[str] = "embed"

    recall: dict[int, float | None] = field(default_factory=dict)
    per_class_recall1: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self._common(),
                "metrics": {f"recall@{k}": None if v is None else round(v, 6)
                            for k, v in self.recall.items()},
                "per_class": {"recall@1": {c: None if v is None else round(v, 6)
                                           for c, v in self.per_class_recall1.items()}},
                **self._tail()}

    def summary(self) -> list[tuple[str, str]]:
        return [(f"recall@{k} (%)", "-" if v is None else f"{100 * v:.2f}")
                for k, v in self.recall.items()]

    def headline(self) -> tuple[str, float | None]:
        r1 = self.recall.get(1)
        return f"recall@1 {'-' if r1 is None else f'{100 * r1:.1f}%'}", r1

    def per_class(self) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        return (("class", "recall@1 (%)"),
                [(c, "-" if v is None else f"{100 * v:.1f}")
                 for c, v in self.per_class_recall1.items()])


RECALL_AT = (1, 5)


def read_retrieval_data(data: Any, **_: Any) -> ImageFolder:
    """The ImageFolder at ``data`` (a class per folder); a DatasetError says what is wrong."""
    if isinstance(data, ImageFolder):
        return data
    if data is None:
        raise DatasetError("eval embed needs --data: a folder with a sub-folder of images per "
                           "class")
    return read_image_folder(data)


def evaluate_retrieval(predictor: Any, data: Any, *, limit: int | None = None,
                       batch_size: int | None = None, progress: Any = None) -> RetrievalReport:
    """recall@1 and recall@5 of ``predictor``'s vectors on the ImageFolder ``data``."""
    start = time.perf_counter()
    dataset = read_retrieval_data(data)
    samples = limited(dataset.samples, limit)
    vectors: list[np.ndarray] = []
    classes: list[str] = []
    failures: list[dict[str, str]] = []
    for i, result in predict_paths(predictor, [s[0] for s in samples], batch_size=batch_size,
                                   progress=progress):
        if not isinstance(result, Embedding) or result.vector is None:
            failures.append(failure_record(result))
            continue
        vectors.append(result.vector)
        classes.append(samples[i][1])
    recall: dict[int, float | None] = dict.fromkeys(RECALL_AT, None)
    per_class: dict[str, float | None] = dict.fromkeys(dataset.classes, None)
    if len(vectors) > 1:
        matrix = np.stack(vectors)
        found = exact_search(matrix, matrix, max(RECALL_AT) + 1)
        labels = np.asarray(classes)
        own = np.arange(len(matrix))[:, None]
        # the query itself left out (it may tie with an exact copy: only its own row goes)
        rows = [r[r != i][:max(RECALL_AT)] for i, r in zip(own[:, 0], found.rows)]
        hits = np.array([[labels[r[:k]].tolist().count(labels[i]) > 0 for k in RECALL_AT]
                         for i, r in enumerate(rows)])
        recall = {k: float(hits[:, j].mean()) for j, k in enumerate(RECALL_AT)}
        for name in dataset.classes:
            mine = labels == name
            per_class[name] = float(hits[mine, 0].mean()) if mine.any() else None
    return RetrievalReport(data=str(dataset.root), model=predictor.model.name,
                           weights=predictor.model.weights, images=len(samples),
                           failures=failures, seconds=time.perf_counter() - start,
                           options=predictor_options(predictor), recall=recall,
                           per_class_recall1=per_class)


TASK = TaskImplementation(
    result=Embedding, predictors=(EmbedPredictor,),
    # a module that brings no recipe: torchvision's classification one (resize 256, crop 224)
    preprocess=PreprocessConfig.default(), output_name="embedding",
    read_dataset=read_retrieval_data, evaluator=evaluate_retrieval, describe=describe,
    draw=draw_embedding, write=write_vector, finish=gather_vectors, head_ranks=(2, 4),
    read_head=read_embed_head)
