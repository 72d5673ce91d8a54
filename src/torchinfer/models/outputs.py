"""The one tensor a predictor reads from a model's output."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import TorchinferError


def main_output(raw: Any) -> torch.Tensor:
    """The main head's output: ``out`` of a torchvision segmentation dict (``aux`` only serves
    training), the first element of a tuple (GoogLeNet/Inception heads, Ultralytics' torch
    models), or the tensor itself."""
    if isinstance(raw, dict):
        if "out" not in raw:
            raise TorchinferError(f"the model returned a dict with {sorted(raw)}; expected an "
                                  "'out' entry")
        raw = raw["out"]
    elif isinstance(raw, (tuple, list)):
        raw = raw[0]
    if not isinstance(raw, torch.Tensor):
        raise TorchinferError(f"the model returned {type(raw).__name__}; expected a tensor")
    return raw
