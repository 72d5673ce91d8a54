"""What moves between decoding and the model: a preprocessed batch, and its timings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .inputs import Source


@dataclass
class Batch:
    """What preprocess hands to forward: the input tensor (CPU, any dtype) and, per image,
    whatever postprocess needs to map predictions back to the original image."""

    tensor: torch.Tensor
    sources: list[str]
    meta: list[Any]


@dataclass
class Decoded:
    """One batch of inputs after decoding and preprocessing (on the CPU), with its failures."""

    sources: list[Source]
    batch: Batch | None  # None when every input of the batch failed
    errors: dict[int, str]  # position in the batch -> reason
    preprocess_s: float


@dataclass(frozen=True)
class Timing:
    """One batch's seconds: decoding + preprocessing (on whichever thread did it), the model's
    side (prepare + forward + postprocess), and the model waiting for the decoders."""

    decode_s: float
    main_s: float
    wait_s: float
    images: int
