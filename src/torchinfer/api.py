"""The library's front door: ``load`` (task + model -> predictor), ``inspect``, ``export``,
``evaluate``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .devices import resolve_device
from .errors import TorchinferError
from .evaluation import EvalReport
from .exporters.onnx import ExportReport, export_onnx
from .exporters.torchscript import export_torchscript
from .inspection import ModelReport, inspect_model, macs_by_head
from .models import (
    LoadedModel,
    check_input_size,
    load_model,
    model_task,
    read_labels,
    torchvision_task,
)
from .runtime.memo import memo_enabled, source_stamp
from .runtime.registry import backend_for_file
from .runtime.select import AUTO, Preparation, check_request, default_request
from .tasks import Predictor
from .tasks.group import PredictorGroup
from .tasks.heads import make_heads
from .tasks.registry import task_options, task_spec


def load(task: str, model: str | Path | nn.Module, weights: str | Path | None = None, *,
         device: str | torch.device = "auto", num_classes: int | None = None,
         labels: str | Path | Sequence[str] | None = None,
         input_size: int | tuple[int, int] | None = None,
         mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
         strict: bool = True, trust_pickle: bool = False, trust_code: bool = False,
         model_kwargs: dict[str, Any] | None = None, backend: str | None = None,
         precision: str | None = None, verify_backend: bool = True, memo: bool = True,
         calibration: str | Path | None = None, **options: Any) -> Predictor:
    """Build the predictor for ``task`` ("classify", ...) around ``model`` + ``weights``.

    Preprocessing and labels come with the weights; ``labels`` (a list or a .txt/.json file),
    ``input_size``, ``mean`` and ``std`` override them. ``model`` may also be a file in a
    backend's own format (an ONNX file, an OpenVINO ``.xml``), which runs on that backend.

    What runs the model: ``backend`` ("auto", "torch", "torchscript", "onnxruntime",
    "openvino" or a plugin's) and ``precision`` ("auto", "fp32", "bf16", "fp16"); None takes
    ``runtime.select.default_request()`` (auto and auto unless ``$TORCHINFER_BACKEND`` /
    ``$TORCHINFER_PRECISION`` say otherwise). ``auto`` measures the verified candidates and
    keeps the fastest (bf16 only where the CPU runs it natively and its answers agree with
    fp32 on the photographs). Loading only loads: the measuring, verifying and the reduced
    JPEG decode's check run before the first batch (or at ``predictor.prepare()``) and are
    remembered per model file and machine (``memo=False`` or ``$TORCHINFER_NO_MEMO=1``: not).
    A backend named is built and verified here (with the decode's check), so a refusal comes
    now. ``calibration``: a folder of the pictures the model will see, for int8 (OpenVINO
    with NNCF's post-training quantisation): int8 becomes a candidate, kept only where its
    decisions agree with fp32 on the photographs.
    Big JPEGs are decoded at a reduced scale unless ``exact_decode=True``.
    Other keyword arguments go to the task's predictor (e.g. ``top_k``, ``batch_size``,
    ``max_pixels``, ``bgr``). ``trust_pickle`` / ``trust_code``: see ``load_model`` (files
    run no code unless you opt in; SECURITY.md).
    """
    spec = task_spec(task)
    default_backend, default_precision = default_request()
    backend, precision = backend or default_backend, precision or default_precision
    check_request(backend, precision)
    runs = (task, *spec.manifest.reads_models_of)  # embed reads classifiers' features
    known = torchvision_task(str(model)) if isinstance(model, (str, Path)) else None
    if known is not None and known not in runs:  # refuse before spending time building it
        raise TorchinferError(f"{model} is a {known} model, not {task}: use task {known!r}")
    file = Path(model) if isinstance(model, (str, Path)) else None
    owner = backend_for_file(file) if file is not None and file.is_file() else None
    if owner is not None and device == "auto" and not owner.precisions(torch.device("cuda")):
        device = "cpu"  # a file only a CPU runtime reads (an OpenVINO IR)
    # stamped before it is read: a file replaced meanwhile never lends its stamp to the old
    # weights (what is remembered about the model is kept under it)
    source = source_stamp(model, weights) if memo_enabled(memo) else None
    if owner is not None and file is not None:  # a file in a backend's own format (OpenVINO)
        if weights is not None:
            raise TorchinferError(f"{model} holds its own weights (got {weights})")
        loaded = owner.load_file(file, resolve_device(device))
    else:
        loaded = load_model(model, weights, num_classes=num_classes, strict=strict,
                            trust_pickle=trust_pickle, trust_code=trust_code,
                            **(model_kwargs or {}))
    if loaded.task is not None and loaded.task not in runs:  # said by the file's own metadata
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
    predictor.preparation = Preparation(predictor, backend, precision, verify=verify_backend,
                                        memo=memo, calibration=Path(calibration) if calibration
                                        else None, source=source)
    if backend != AUTO:  # asked for by name: built and verified now, so a refusal comes now
        predictor.prepare()
    return predictor


# A member of a group: a model (its task known from its name or its file), or (task, model)
# or (task, model, weights)
GroupMember = str | Path | tuple[Any, ...]


def load_group(models: Mapping[str, GroupMember] | Sequence[GroupMember], *,
               device: str | torch.device = "auto", batch_size: int | None = None,
               max_pixels: int | None = None, decode_workers: int | None = None,
               exact_decode: bool = False, **options: Any) -> PredictorGroup:
    """Several single-task models over one decode (``tasks.group.PredictorGroup``): one
    ``MultiTask`` per input, a head per model, named by the mapping's keys (or after each
    model). ``options`` go to every member whose task takes them (``top_k``, ``conf``...)."""
    items = models.items() if isinstance(models, Mapping) else \
        [(None, m) for m in models]
    members: dict[str, Predictor] = {}
    for name, member in items:
        task, model, weights = _group_member(member)
        head = name or Path(str(model)).stem
        if head in members:
            raise TorchinferError(f"two models of the group are called {head!r}: name them "
                                  "(NAME=MODEL on the command line, a dict in Python)")
        taken = {k: v for k, v in options.items() if k in task_options(task)}
        members[head] = load(task, model, weights, device=device, batch_size=batch_size,
                             max_pixels=max_pixels, exact_decode=exact_decode, **taken)
        # the group reads each member's module and decoding as they are: chosen first
        members[head].prepare()
    return PredictorGroup(members, batch_size=batch_size, max_pixels=max_pixels,
                          decode_workers=decode_workers)


def _group_member(member: GroupMember) -> tuple[str, Any, Any]:
    if isinstance(member, tuple):
        if len(member) not in (2, 3):
            raise TorchinferError(f"a group member is (task, model) or (task, model, weights), "
                                  f"got {member!r}")
        return member[0], member[1], member[2] if len(member) == 3 else None
    task = model_task(member)
    if task is None:
        raise TorchinferError(f"the task of {member} is not known from its name or file: give "
                              "it as TASK:MODEL (or (task, model) in Python)")
    return task, member, None


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
    report = inspect_model(loaded.module, input_shape=tuple(input_shape), depth=depth,
                           include_other_ops=include_other_ops, file_path=weights_file)
    if loaded.heads is not None:  # what the trunk and each head cost
        rows = report.layers if depth is None else inspect_model(
            loaded.module, input_shape=tuple(input_shape)).layers
        heads = {h.name: h.output for h in make_heads(loaded.heads, loaded.name)}
        report = replace(report, head_macs=macs_by_head(loaded.module, input_shape, heads, rows))
    return report


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
    if not size:  # the image's own size
        return _pair(cfg.nominal_side)
    return _pair(size[0]) if len(size) == 1 else (size[0], size[1])


def export(model: str | Path | nn.Module, path: str | Path, weights: str | Path | None = None, *,
           format: str = "onnx", num_classes: int | None = None, trust_pickle: bool = False,
           trust_code: bool = False, model_kwargs: dict[str, Any] | None = None,
           heads: Sequence[Any] | None = None, **options: Any) -> ExportReport:
    """Export to ONNX (or ``format="torchscript"``, or ``"openvino"``: an IR ``.xml`` + ``.bin``)
    with the labels and preprocessing
    embedded, and (by default) prove the file gives PyTorch's outputs on real photographs; see
    ``torchinfer.exporters.onnx.export_onnx`` for ``input_size``, ``opset``, ``dynamic_batch``,
    ``half``, ``simplify``, ``verify`` and tolerances, ``export_torchscript`` for TorchScript.
    ``heads``: a multi-head model's heads (``tasks.heads``), when its file does not name them:
    one output per head, verified head by head, the heads in the file's card."""
    if format not in ("onnx", "torchscript", "openvino"):
        raise TorchinferError(f"unknown export format {format!r}: use onnx, torchscript or "
                              "openvino")
    _check_output_file(Path(path))  # before the minutes an export can take
    loaded = load_model(model, weights, num_classes=num_classes, trust_pickle=trust_pickle,
                        trust_code=trust_code, **(model_kwargs or {}))
    if heads is not None:  # a model of the caller's own, its heads written into the file
        loaded = replace(loaded, task="multi",
                         heads=tuple(h.to_dict() for h in make_heads(heads, loaded.name)))
    if loaded.heads is not None:
        # exported with the preprocessing ``load("multi", ...)`` gives it: the task's
        # letterbox unless its weights said otherwise, at the size asked for
        if loaded.preprocess_from == "default":
            loaded = replace(loaded, preprocess=task_spec("multi").preprocess)
        size = options.pop("input_size", None)
        if size is not None:
            loaded = replace(loaded, preprocess=loaded.preprocess.with_overrides(input_size=size))
    if options.get("input_size") is not None:
        check_input_size(loaded, _pair(options["input_size"]))
    if format == "torchscript":
        return export_torchscript(loaded, path, **options)
    if format == "openvino":
        from .exporters.openvino import export_openvino  # needs the openvino extra

        unsupported = sorted(set(options) - {"input_size", "verify", "verify_inputs", "batch_size"})
        if unsupported:
            raise TorchinferError(f"export to openvino does not take {', '.join(unsupported)}")
        return export_openvino(loaded, path, **options)
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
    classify top_k=5); pass them to override. The evaluator's own options (depth's
    ``max_depth``, ``align``) go to it."""
    spec = task_spec(task)
    # the evaluator's own options (its manifest's eval_options: depth's max_depth...)
    scoring = {o.name: o.check(options.pop(o.name)) for o in spec.manifest.eval_options
               if options.get(o.name) is not None}
    # read the layout first: a wrong path fails in a moment, before the model is built
    dataset = spec.read_dataset(data, split=split, annotations=annotations, images=images)
    predictor = load(task, model, weights, **{**spec.evaluation_options, **options})
    return spec.evaluator(predictor, dataset, limit=limit, progress=progress, **scoring)
