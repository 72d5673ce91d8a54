"""Getting a model ready to trace: one tensor output, its task, the preprocessing and input
size the file is made for, a fixed dummy input, and the tolerance it is verified with."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import TorchinferError
from ..manifests import task_names
from ..models import LoadedModel, PreprocessConfig
from ..models.outputs import main_output
from ..tasks.detect import has_torchvision_detection_transform
from ..verify import FP16_TOLERANCE, FP32_TOLERANCE, Tolerance
from .common import ExportError, cpu_eval


class MainOutput(nn.Module):
    """The model with one tensor output: a segmentation dict's ``out`` (``aux`` only serves
    training), a tuple's first element (GoogLeNet/Inception heads), or the tensor itself."""

    def __init__(self, model: nn.Module, task: str):
        super().__init__()
        self.model = model
        self.task = task
        # A new Module is in training mode, and torch.onnx.export restores the mode it found
        # after tracing: recursively, so a training-mode wrapper would leave the caller's model
        # in training mode (BatchNorm on batch statistics) after the export.
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return main_output(self.model(x))
        except TorchinferError as exc:
            raise ExportError(f"the {self.task} model's output: {exc}") from exc


def task_of(loaded: LoadedModel) -> str:
    """The task ``loaded`` exports as: its own, else classify or segment, probed from what
    the model returns."""
    task = loaded.task
    if task is None:
        task = probe_task(loaded)
    if task == "detect" and has_torchvision_detection_transform(loaded.module):
        # export_onnx takes these before asking (exporters.detectors); TorchScript and
        # OpenVINO files here hold one tensor output
        raise ExportError(f"{loaded.name}: torchvision detectors export to ONNX only (their "
                          "outputs are per-image lists of boxes)")
    if task not in task_names():
        raise ExportError(f"{loaded.name}: cannot export task {task!r}; "
                          f"supported: {', '.join(task_names())}")
    return task


def probe_task(loaded: LoadedModel) -> str:
    """A model not from the registry: 2-D logits mean classify, 4-D (or a dict with ``out``)
    mean segment."""
    h, w = static_size(loaded.preprocess) or (224, 224)
    module = cpu_eval(loaded.module)
    with torch.inference_mode():
        raw = module(torch.zeros(1, 3, h, w))
    if isinstance(raw, dict) and "out" in raw:
        return "segment"
    out = raw[0] if isinstance(raw, (tuple, list)) else raw
    if isinstance(out, torch.Tensor) and out.ndim in (2, 4):
        return "classify" if out.ndim == 2 else "segment"
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    raise ExportError(f"{loaded.name}: cannot tell its task from its output {got}; "
                      "expected (N, classes) logits or (N, classes, H, W)")


def export_preprocess(loaded: LoadedModel, input_size: tuple[int, int] | None
                       ) -> tuple[PreprocessConfig, tuple[int, int] | None]:
    """The preprocessing the file is exported for (``input_size`` overrides the weights'),
    and the (h, w) every input then has, or None when it varies."""
    preprocess = loaded.preprocess
    if input_size is not None:
        preprocess = preprocess.with_overrides(input_size=(int(input_size[0]),
                                                           int(input_size[1])))
    return preprocess, static_size(preprocess)


def dummy_input(preprocess: PreprocessConfig, static_hw: tuple[int, int] | None,
                 dtype: torch.dtype) -> torch.Tensor:
    """A fixed, seeded dummy batch of one: the same file for the same model, run after run."""
    h, w = static_hw or (preprocess.nominal_side,) * 2
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0)).to(dtype)


def static_size(cfg: PreprocessConfig) -> tuple[int, int] | None:
    """(h, w) every input has after this preprocessing, or None when it depends on the image
    (a short-side resize without a crop)."""
    if cfg.crop_size is not None:
        return (int(cfg.crop_size[0]), int(cfg.crop_size[1]))
    if len(cfg.resize_size) == 2:
        return (int(cfg.resize_size[0]), int(cfg.resize_size[1]))
    return None


def input_shape(static_hw: tuple[int, int] | None,
                 dynamic_batch: bool) -> tuple[int | str, ...]:
    hw: tuple[int | str, ...] = static_hw if static_hw is not None else ("height", "width")
    return ("batch" if dynamic_batch else 1, 3, *hw)


def tolerance_for(half: bool, atol: float | None, rtol: float | None,
               min_agreement: float | None) -> Tolerance:
    base = FP16_TOLERANCE if half else FP32_TOLERANCE
    return Tolerance(atol=base.atol if atol is None else float(atol),
                     rtol=base.rtol if rtol is None else float(rtol),
                     min_agreement=base.min_agreement if min_agreement is None
                     else float(min_agreement),
                     atol_per_std=base.atol_per_std and atol is None)  # a given atol is absolute
