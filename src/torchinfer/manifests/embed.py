"""Image embeddings: one L2-normalised vector per image, for search, duplicates and clustering.
Its manifest and its result type, both without torch (the server's process encodes the OIP
output without importing the predictor, ``tasks/embed.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..results import Result
from .base import OutputTensor, TaskManifest, TaskOption, Tensor


@dataclass(frozen=True, kw_only=True)
class Embedding(Result):
    """``vector``: (D,) float32 of unit length (cosine similarity is then a dot product).
    ``norm``: the length of the model's output before it was normalised (near 0: the vector's
    direction means little)."""

    vector: np.ndarray | None = field(default=None, compare=False, repr=False)
    norm: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.error is not None:
            if self.vector is not None:
                raise ValueError(f"{self.source}: a failed result carries no vector")
            return
        if self.vector is None or self.vector.ndim != 1 or self.vector.dtype != np.float32:
            got = "None" if self.vector is None else f"{self.vector.dtype} {self.vector.shape}"
            raise ValueError(f"{self.source}: vector must be a 1-D float32 array, got {got}")

    @property
    def dim(self) -> int:
        return 0 if self.vector is None else int(self.vector.shape[0])

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.ok:
            out["dim"] = self.dim
            out["norm"] = round(self.norm, 6)
        return out


def encode(results: Sequence[Any]) -> dict[str, Tensor]:
    """The OIP output of embeddings (all succeeded): the vectors, [N, D]."""
    vectors = np.stack([r.vector for r in results]).astype(np.float32)
    return {"embedding": ("FP32", list(vectors.shape), vectors)}


MANIFEST = TaskManifest(
    name="embed",
    summary="Embed images: an L2-normalised vector per image (embeddings.npy; each record's "
            "row names its vector), for torchinfer search and duplicates.",
    implementation="torchinfer.tasks.embed:TASK",
    options=(TaskOption(name="output", type="str", default=None,
                        help="The model output to read: a key of a dict output or the index "
                             "of a tuple's (default: the pre-logits features of a classifier, "
                             "else the output itself). 4-D feature maps are averaged over "
                             "space."),),
    columns=("dim", "norm"),
    outputs=(OutputTensor("embedding", "FP32", (-1, -1)),),
    encode=encode, agreement=None, head=True, reads_models_of=("classify",),
    # the vectors, and the approximate index torchinfer search builds beside them
    run_files=("embeddings.npy", "embeddings.npy.usearch", "embeddings.npy.usearch.json"),
    eval_summary="Retrieval: recall@1 and recall@5 (a nearest neighbour of each image, itself "
                 "left out, is of its class), per class.",
    eval_help="ImageFolder: <data>/<class name>/<images>; the folder names are the classes.")
