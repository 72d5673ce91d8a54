"""OpenVINO models: ``OpenVinoModule`` runs a compiled model behind the ``nn.Module`` a
predictor calls, and ``load_openvino_model("model.xml")`` runs an IR file by its path, with the
task, labels and preprocessing of the card in its runtime info (written by
``torchinfer.exporters.openvino.export_openvino``).

Precision and threads are compile-time settings in OpenVINO: ``INFERENCE_PRECISION_HINT``
(f32 or bf16; OpenVINO's own default on a CPU with native bf16 is bf16, so fp32 is asked for
explicitly) and ``INFERENCE_NUM_THREADS``. ``set_threads`` compiles again with the new count.
One stream and the latency hint: the predictor hands over one batch at a time.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..devices import usable_cpus
from ..errors import MissingExtraError, TorchinferError, first_line
from .card import OPENVINO_RT_INFO_PATH, ModelCard, mark_set_prediction
from .config import PreprocessConfig
from .loaded import LoadedModel

# torchinfer's precision names -> OpenVINO's inference precision hints
# (an int8 model's quantised layers run in int8 whatever the hint; the rest in f32)
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}


def import_openvino() -> Any:
    """openvino, or an error naming the extra that installs it."""
    try:
        import openvino
    except ImportError as exc:
        raise MissingExtraError("openvino", "openvino") from exc
    return openvino


def openvino_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively here (it says so itself)."""
    ov = import_openvino()
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoModule(nn.Module):
    """A compiled OpenVINO model that a Predictor calls like the PyTorch model it replaces.

    ``forward`` takes an (N, C, H, W) float tensor (any memory format, on the CPU) and returns
    the first output as float32. Each calling thread gets its own infer request (a request
    runs one inference at a time; a server calls from several workers)."""

    def __init__(self, model: Any, source: str, precision: str = "fp32",
                 threads: int | None = None):
        super().__init__()
        self.ov_model, self.source, self.precision = model, source, precision
        self.threads: int | None = None
        self._local = threading.local()
        self._compile(threads)

    def _compile(self, threads: int | None) -> None:
        ov = import_openvino()
        config = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[self.precision],
                  "INFERENCE_NUM_THREADS": threads or usable_cpus(), "NUM_STREAMS": 1,
                  "PERFORMANCE_HINT": "LATENCY"}
        try:
            self.compiled = ov.Core().compile_model(self.ov_model, "CPU", config)
        except Exception as exc:  # an op OpenVINO cannot compile
            raise TorchinferError(f"{self.source}: OpenVINO cannot compile the model: "
                                  f"{first_line(exc)}") from exc
        self.threads = threads

    def set_threads(self, threads: int) -> None:
        """Run on ``threads`` threads (compiled again; nothing happens when unchanged)."""
        if threads != (self.threads or usable_cpus()):
            self._compile(threads)

    def compiled_threads(self) -> int:
        """The thread count OpenVINO reports for the compiled model."""
        return int(self.compiled.get_property("INFERENCE_NUM_THREADS"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # this thread's request, made from the current compilation (set_threads may have
        # compiled again since: a request and its outputs belong to one compilation)
        compiled = self.compiled
        pair = getattr(self._local, "pair", None)
        if pair is None or pair[0] is not compiled:
            pair = self._local.pair = (compiled, compiled.create_infer_request())
        request = pair[1]
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        try:
            request.infer({0: array}, share_inputs=True)
        except Exception as exc:  # OpenVINO's errors: wrong rank or shape
            raise TorchinferError(f"{self.source}: OpenVINO failed on an input of shape "
                                  f"{tuple(array.shape)}: {first_line(exc)}") from exc
        # the request reuses its output buffer on the next call: the result is copied out
        out = request.get_output_tensor(0).data
        return torch.from_numpy(np.array(out, dtype=np.float32, copy=True)).to(x.device)

    def extra_repr(self) -> str:
        return f"{self.source}, precision={self.precision}, threads={self.threads or 'all'}"


def load_openvino_model(path: str | Path, *, precision: str = "fp32") -> LoadedModel:
    """A LoadedModel that runs the IR at ``path`` (``.xml`` with its ``.bin`` beside it) on
    OpenVINO's CPU plugin. Task, labels and preprocessing come from the card in its runtime
    info; an IR without one gets torchvision's ImageNet preprocessing and no labels."""
    ov = import_openvino()
    path = Path(path)
    if not path.with_suffix(".bin").is_file():
        raise TorchinferError(f"{path}: its weights file {path.with_suffix('.bin').name} is "
                              "missing (an IR is the .xml and the .bin beside it)")
    try:
        model = ov.Core().read_model(str(path))
    except Exception as exc:
        raise TorchinferError(f"{path}: not an OpenVINO IR OpenVINO can read "
                              f"({first_line(exc)})") from exc
    keys = list(OPENVINO_RT_INFO_PATH)
    text = model.get_rt_info(keys).astype(str) if model.has_rt_info(keys) else ""
    card = ModelCard.from_openvino_rt_info(text, str(path))
    if len(model.inputs) != 1:
        raise TorchinferError(f"{path}: the model has {len(model.inputs)} inputs; torchinfer "
                              "feeds one image batch")
    module = OpenVinoModule(model, str(path), precision)
    mark_set_prediction(module, card)
    preprocess = card.preprocess or _default_preprocess(model)
    return LoadedModel(module=module, name=card.model_name or path.stem, task=card.task,
                       preprocess=preprocess,
                       labels=list(card.labels) if card.labels is not None else None,
                       weights=str(path), weights_format="openvino",
                       preprocess_from="weights" if card.preprocess else "default")


def _default_preprocess(model: Any) -> PreprocessConfig:
    """torchvision's classification defaults, cropped to the input's static (h, w) if any."""
    cfg = PreprocessConfig.default()
    shape = model.inputs[0].get_partial_shape()
    if shape.rank.is_static and shape.rank.get_length() == 4 and \
            shape[2].is_static and shape[3].is_static:
        cfg = cfg.with_overrides(input_size=(shape[2].get_length(), shape[3].get_length()))
    return cfg
