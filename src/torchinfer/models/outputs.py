"""The one tensor a predictor reads from a model's output."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import TorchinferError


def main_output(raw: Any, ndim: int | None = None, what: str = "the model") -> torch.Tensor:
    """The main head's output: ``out`` of a torchvision segmentation dict (``aux`` only serves
    training) or ``logits`` of a classifier's, the first element of a tuple (GoogLeNet/Inception
    heads, Ultralytics' torch models), or the tensor itself. ``ndim``: the rank the caller
    reads (2 for classifier logits, 4 for segmentation), checked with ``what`` in the error."""
    if isinstance(raw, dict):
        key = "out" if "out" in raw else "logits"
        if key not in raw:
            raise TorchinferError(f"the model returned a dict with {sorted(raw)}; expected an "
                                  "'out' or 'logits' entry")
        raw = raw[key]
    elif isinstance(raw, (tuple, list)):
        raw = raw[0]
    if not isinstance(raw, torch.Tensor):
        raise TorchinferError(f"{what} returned {type(raw).__name__}; expected a tensor")
    if ndim is not None and raw.ndim != ndim:
        raise TorchinferError(f"{what} output has shape {tuple(raw.shape)}; expected a "
                              f"{ndim}-d tensor")
    return raw
