"""The backend interface: what a runtime (eager PyTorch, TorchScript, ONNX Runtime, OpenVINO,
or a third party's) tells torchinfer about itself, and the one thing it does: build a module
that runs the model.

A built module is a drop-in ``nn.Module``: it takes the batch the predictor prepared (float32,
on the predictor's device, in the backend's ``layout``) and returns the model's outputs in
float32, whatever it computes in. Everything else (verifying it against float32 PyTorch on
photographs, timing it, remembering the verdict) is the same for every backend and lives in
``candidates`` and ``select``.

Threads: a backend that runs on torch's thread pool needs nothing; one whose runtime keeps a
pool of its own (ONNX Runtime, OpenVINO) returns a module with ``set_threads(n)``, and the
streamer sizes it as its plan says (decode threads + model threads), keeping torch to one
thread around it so the two pools do not spin against each other.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from ..errors import TorchinferError
from ..models import LoadedModel
from ..models.outputs import main_output

# int8: post-training quantisation, only with calibration images (``BuildRequest.calibration``)
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class BackendError(TorchinferError):
    """A backend cannot run this model, or computes something else than the float32 model."""


@dataclass(frozen=True)
class BuildRequest:
    """What a backend gets to build from."""

    loaded: LoadedModel  # as loaded: its name, weights file, preprocessing, heads
    module: nn.Module  # the float32 model as the predictor runs it (on device, folded)
    task: str
    precision: str
    device: torch.device
    example: torch.Tensor  # a prepared batch of photographs, in the backend's layout
    stamp: str | None  # runtime.memo.model_stamp: a key for the files the backend keeps
    # int8's calibration: prepared batches of the user's images (read when first called), and
    # a stamp of their folder; None when no calibration folder was given
    calibration: Callable[[], list[torch.Tensor]] | None = None
    calibration_stamp: str | None = None


class Backend(ABC):
    """One runtime. Subclasses set the class attributes and define ``precisions`` and
    ``build``; register an instance with ``runtime.registry.register_backend`` (or through
    the ``torchinfer.backends`` entry-point group)."""

    name: ClassVar[str]
    # The input layout the built module wants: "NCHW" for runtimes fed plain arrays; None
    # for torch-run modules (channels_last where the model has 2-D convolutions).
    layout: ClassVar[str | None] = None
    # (import name, extra) of the package it needs: without it the backend is unavailable and
    # says which extra installs it
    requires: ClassVar[tuple[str, str] | None] = None
    # Suffixes of the backend's own file format, which runs by path (``load_file``)
    file_suffixes: ClassVar[tuple[str, ...]] = ()

    def unavailable(self) -> str | None:
        """Why this backend cannot run here (None: it can)."""
        if self.requires is not None and importlib.util.find_spec(self.requires[0]) is None:
            return (f"{self.requires[0]} is not installed (pip install "
                    f"'torchinfer[{self.requires[1]}]')")
        return None

    @abstractmethod
    def precisions(self, device: torch.device) -> tuple[str, ...]:
        """The precisions it runs on ``device`` (fp32 first)."""

    @abstractmethod
    def build(self, request: BuildRequest) -> nn.Module:
        """The module that runs ``request.module`` in ``request.precision``; raise
        BackendError (or let the runtime's own error through) when it cannot."""

    def load_file(self, path: Path, device: torch.device) -> LoadedModel:
        """A model in the backend's own format, with the card it carries."""
        raise BackendError(f"backend {self.name} reads no model files")


class CastIO(nn.Module):
    """Runs ``model`` in ``dtype`` behind a float32 interface: the predictor prepares float32
    and reads float32, whatever the model computes in. Returns the main output only (a
    segmentation dict's ``out``, a tuple's first element)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return main_output(self.model(x.to(self.dtype))).float()
