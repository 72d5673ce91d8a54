"""The library's front door: ``load`` (task + model -> predictor), ``inspect``, ``export``,
``evaluate``."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import TorchinferError
from .evaluation import EvalReport
from .exporters.onnx import ExportReport, export_onnx
from .exporters.torchscript import export_torchscript
from .inspection import ModelReport, inspect_model
from .models import LoadedModel, check_input_size, load_model, read_labels, torchvision_task
from .runtime.select import apply_backend
from .tasks import Predictor
from .tasks.classify import DRAFT_TOLERANCE, ClassificationPredictor
from .tasks.registry import task_spec


def load(task: str, model: str | Path | nn.Module, weights: str | Path | None = None, *,
         device: str | torch.device = "auto", num_classes: int | None = None,
         labels: str | Path | Sequence[str] | None = None,
         input_size: int | tuple[int, int] | None = None,
         mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
         strict: bool = True, trust_pickle: bool = False, trust_code: bool = False,
         model_kwargs: dict[str, Any] | None = None, backend: str = "torch",
         precision: str = "fp32", verify_backend: bool = True, **options: Any) -> Predictor:
    """Build the predictor for ``task`` ("classify", ...) around ``model`` + ``weights``.

    Preprocessing and labels come with the weights; ``labels`` (a list or a .txt/.json file),
    ``input_size``, ``mean`` and ``std`` override them. ``backend`` ("torch", "torchscript",
    "onnxruntime", "auto") and ``precision`` ("fp32", "bf16", "fp16") choose what runs the
    model, verified against float32 PyTorch on photographs (see ``runtime.select.apply_backend``).
    Other keyword arguments go to the task's predictor (e.g. ``top_k``, ``batch_size``,
    ``max_pixels``, ``bgr``). ``trust_pickle`` / ``trust_code``: see ``load_model`` (files
    run no code unless you opt in; SECURITY.md).
    """
    spec = task_spec(task)
    known = torchvision_task(str(model)) if isinstance(model, (str, Path)) else None
    if known is not None and known != task:  # refuse before spending time building it
        raise TorchinferError(f"{model} is a {known} model, not {task}: use task {known!r}")
    loaded = load_model(model, weights, num_classes=num_classes, strict=strict,
                        trust_pickle=trust_pickle, trust_code=trust_code, **(model_kwargs or {}))
    if loaded.task is not None and loaded.task != task:  # said by the file's own metadata
        raise TorchinferError(f"{model} is a {loaded.task} model, not {task}: use task "
                              f"{loaded.task!r}")
    base = loaded.preprocess
    if loaded.preprocess_from == "default":
        base = spec.preprocess  # nothing came with the weights: the task's defaults
    if input_size is not None:
        check_input_size(loaded, _pair(input_size))
    preprocess = base.with_overrides(
        input_size=input_size, mean=tuple(mean) if mean else None,
        std=tuple(std) if std else None)
    names = loaded.labels
    if labels is not None:
        names = read_labels(labels) if isinstance(labels, (str, Path)) else list(labels)
    loaded = replace(loaded, preprocess=preprocess, labels=names)
    predictor = spec.predictor_for(loaded, device=device, **options)
    if isinstance(predictor, ClassificationPredictor) and predictor.jpeg_draft and verify_backend:
        check = predictor.check_jpeg_draft()
        if not check.passed:
            raise TorchinferError(f"JPEG draft decoding changes this model's answers beyond "
                                  f"{DRAFT_TOLERANCE.describe('draft')} on the verification "
                                  f"photographs: {check.describe()} (decode in full, or pass "
                                  "verify_backend=False / --no-verify to use it anyway)")
    if loaded.weights_format != "onnx" or backend == "torchscript" or precision != "fp32":
        # (an .onnx file already runs on onnxruntime; other choices are refused there)
        apply_backend(predictor, backend, precision, verify_outputs=verify_backend)
    return predictor


def inspect(model: str | Path | nn.Module, weights: str | Path | None = None, *,
            input_size: int | tuple[int, int] | None = None,
            input_shape: Sequence[int] | None = None, depth: int | None = None,
            include_other_ops: bool = False, num_classes: int | None = None,
            trust_pickle: bool = False, trust_code: bool = False,
            model_kwargs: dict[str, Any] | None = None) -> ModelReport:
    """Parameters, MACs/FLOPs, shapes and memory per layer (see torchinfer.inspection).

    The input defaults to the size the model's weights are used at (their crop size for
    classification, their resize size for segmentation; 224 for detectors, which resize
    internally), batch 1.
    """
    loaded = load_model(model, weights, num_classes=num_classes, trust_pickle=trust_pickle,
                        trust_code=trust_code, **(model_kwargs or {}))
    if input_shape is None:
        h, w = _pair(input_size) if input_size is not None else _published_input_size(loaded)
        input_shape = (1, 3, h, w)
    check_input_size(loaded, (int(input_shape[-2]), int(input_shape[-1])))
    weights_file = Path(weights) if weights is not None and Path(weights).is_file() else None
    if weights_file is None and isinstance(model, (str, Path)) and Path(model).is_file():
        weights_file = Path(model)
    return inspect_model(loaded.module, input_shape=tuple(input_shape), depth=depth,
                         include_other_ops=include_other_ops, file_path=weights_file)


def _check_output_file(path: Path) -> None:
    if path.is_dir():
        raise TorchinferError(f"output {path} is a folder: name the file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TorchinferError(f"cannot create the folder of output {path}: "
                              f"{exc.strerror or exc}") from exc
    if not os.access(path.parent, os.W_OK):
        raise TorchinferError(f"cannot write output {path}: permission denied")


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _published_input_size(loaded: LoadedModel) -> tuple[int, int]:
    """The size the weights' own preprocessing feeds the model (square for a short-side resize)."""
    cfg = loaded.preprocess
    if cfg.crop_size is not None:
        return cfg.crop_size
    size = cfg.resize_size
    return _pair(size[0]) if len(size) == 1 else (size[0], size[1])


def export(model: str | Path | nn.Module, path: str | Path, weights: str | Path | None = None, *,
           format: str = "onnx", num_classes: int | None = None, trust_pickle: bool = False,
           trust_code: bool = False, model_kwargs: dict[str, Any] | None = None,
           **options: Any) -> ExportReport:
    """Export to ONNX (or ``format="torchscript"``) with the labels and preprocessing
    embedded, and (by default) prove the file gives PyTorch's outputs on real photographs; see
    ``torchinfer.exporters.onnx.export_onnx`` for ``input_size``, ``opset``, ``dynamic_batch``,
    ``half``, ``simplify``, ``verify`` and tolerances, ``export_torchscript`` for TorchScript."""
    if format not in ("onnx", "torchscript"):
        raise TorchinferError(f"unknown export format {format!r}: use onnx or torchscript")
    _check_output_file(Path(path))  # before the minutes an export can take
    loaded = load_model(model, weights, num_classes=num_classes, trust_pickle=trust_pickle,
                        trust_code=trust_code, **(model_kwargs or {}))
    if options.get("input_size") is not None:
        check_input_size(loaded, _pair(options["input_size"]))
    if format == "torchscript":
        return export_torchscript(loaded, path, **options)
    return export_onnx(loaded, path, **options)


def evaluate(task: str, model: str | Path | nn.Module, data: str | Path | None = None,
             weights: str | Path | None = None, *, split: str | None = None,
             annotations: str | Path | None = None, images: str | Path | None = None,
             limit: int | None = None, progress: Callable[[int, int], None] | None = None,
             **options: Any) -> EvalReport:
    """Load ``model`` for ``task`` with ``load(task, model, weights, **options)`` and evaluate
    it on ``data``: an ImageFolder (classify), a VOC folder (segment, ``split`` optional) or a
    COCO folder / annotations file (detect; or ``annotations`` + ``images``). Each task runs
    with ``task_spec(task).evaluation_options`` (detect conf=0.001, max_det=100, iou=0.6;
    classify top_k=5); pass them to override."""
    spec = task_spec(task)
    # read the layout first: a wrong path fails in a moment, before the model is built
    dataset = spec.read_dataset(data, split=split, annotations=annotations, images=images)
    predictor = load(task, model, weights, **{**spec.evaluation_options, **options})
    return spec.evaluator(predictor, dataset, limit=limit, progress=progress)
