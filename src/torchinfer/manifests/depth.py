"""Depth estimation: a depth map per image, at the image's own size. Its manifest and its
result type, both without torch: the server's process unpickles results and encodes their
OIP outputs without importing the predictor (``tasks/depth.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import TorchinferError
from ..results import Result
from .base import OutputTensor, TaskManifest, TaskOption, Tensor

KINDS = ("relative", "metric")


@dataclass(frozen=True, kw_only=True)
class Depth(Result):
    """``depth``: (H, W) float32 at the original image's size. ``kind``: "relative" (up to
    scale and shift, or inverse depth, as the model was trained) or "metric" (metres)."""

    depth: np.ndarray | None = field(default=None, compare=False, repr=False)
    kind: str = "relative"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kind not in KINDS:
            raise ValueError(f"{self.source}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.error is not None:
            if self.depth is not None:
                raise ValueError(f"{self.source}: a failed result carries no depth")
            return
        if self.depth is None or self.depth.ndim != 2 or self.depth.dtype != np.float32:
            got = "None" if self.depth is None else f"{self.depth.dtype} {self.depth.shape}"
            raise ValueError(f"{self.source}: depth must be a 2-D float32 array (H, W), got {got}")

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the original image."""
        if self.depth is None:
            raise TorchinferError(f"{self.source}: no depth ({self.error})")
        return int(self.depth.shape[0]), int(self.depth.shape[1])

    def stats(self) -> dict[str, float]:
        """min, median and max of the finite values."""
        assert self.depth is not None
        finite = self.depth[np.isfinite(self.depth)]
        if finite.size == 0:
            return {"min": float("nan"), "median": float("nan"), "max": float("nan")}
        return {"min": float(finite.min()), "median": float(np.median(finite)),
                "max": float(finite.max())}

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.ok:
            out["kind"] = self.kind
            out["size"] = list(self.size)
            out.update({k: round(v, 6) for k, v in self.stats().items()})
        return out




def encode(results: Sequence[Any]) -> dict[str, Tensor]:
    """The OIP outputs of depth maps (all succeeded): the maps padded with 0 to the largest,
    and each one's size."""
    n = len(results)
    h = max(r.depth.shape[0] for r in results)
    w = max(r.depth.shape[1] for r in results)
    maps = np.zeros((n, h, w), dtype=np.float32)
    for i, r in enumerate(results):
        maps[i, : r.depth.shape[0], : r.depth.shape[1]] = r.depth
    return {"depth": ("FP32", [n, h, w], maps),
            "size": ("INT64", [n, 2], [int(v) for r in results for v in r.depth.shape])}


MANIFEST = TaskManifest(
    name="depth",
    summary="Estimate depth: a map per image at its original size (maps/<name>.png, 16-bit, "
            "its scale in the record), with min, median and max.",
    implementation="torchinfer.tasks.depth:TASK",
    options=(TaskOption(name="depth_kind", type="str", default=None,
                        choices=("relative", "metric"),
                        help="What the model predicts: relative (depth up to scale and shift, "
                             "or inverse depth) or metric (metres). Default: what the model "
                             "says, else relative."),),
    save_options=(TaskOption(name="depth_format", type="str", default="png",
                             choices=("png", "npy", "none"),
                             help="The depth map per image: a 16-bit PNG (value x scale + "
                                  "offset, both in the record), float32 .npy, or none."),),
    columns=("min", "median", "max", "size"),
    outputs=(OutputTensor("depth", "FP32", (-1, -1, -1)), OutputTensor("size", "INT64", (-1, 2))),
    encode=encode, agreement=None, head=True, eval_data=("data",),
    eval_summary="AbsRel, RMSE and δ<1.25^k, per image then averaged; a relative model "
                 "aligned by least squares first.",
    eval_help="NYUv2's layout: rgb/<name>.jpg|png and depth/<name>.png (16-bit millimetres, "
              "0 = no depth) or depth/<name>.npy (metres).",
    eval_options=(TaskOption(name="max_depth", type="float", default=10.0, minimum=1e-3,
                             help="Depths beyond this (metres) are not scored; predictions "
                                  "are clipped to it (NYUv2: 10)."),
                  TaskOption(name="align", type="str", default="auto",
                             choices=("auto", "none", "depth", "disparity"),
                             help="Least-squares scale and shift before scoring: of the "
                                  "depth, of its inverse (a model that predicts disparity), "
                                  "or none; auto: depth for relative models, none for metric "
                                  "ones.")))
