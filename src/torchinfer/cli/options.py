"""Each command's options as one frozen object: parsed from text once, checked once, and turned
into the keyword arguments of the library call it makes.

Nothing here needs typer, rich or torch, so a server or a script can build the same objects
(``PredictOptions(task="classify", model="resnet18", sources=("a.jpg",), out=Path("runs"))``)
and get the command line's checks. A mistake raises :class:`~torchinfer.errors.OptionError`;
its message names the command-line option, because that is where most of them come from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from ..errors import OptionError
from ..manifests import accepted_options, task_manifest, task_names
from ..manifests.base import checked_values
from ..storage.uris import is_uri

Size = int | tuple[int, int]


# --- text -> values (what a command line or a form gives) -----------------------------------

def parse_floats(text: Optional[str], what: str) -> Optional[tuple[float, ...]]:
    if text is None:
        return None
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise OptionError(f"{what} must be comma-separated numbers, got {text!r}") from None


def parse_size(text: Optional[str]) -> Optional[Size]:
    if text is None:
        return None
    try:
        parts = [int(x) for x in text.replace("x", ",").split(",")]
    except ValueError:
        raise OptionError(f"--input-size must be N or H,W, got {text!r}") from None
    if min(parts) < 1:
        raise OptionError(f"--input-size must be positive, got {text!r}")
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return (parts[0], parts[1])
    raise OptionError(f"--input-size must be N or H,W, got {text!r}")


def parse_model_kwargs(text: Optional[str]) -> Optional[dict[str, Any]]:
    """``image_size=518,dropout=0.1`` or a JSON object: keyword arguments for the model's
    builder. Values are read as JSON when they parse (numbers, true/false, lists), else kept as
    text."""
    if text is None:
        return None
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise OptionError(f"--model-kwargs is not a JSON object ({exc})") from None
        if not isinstance(value, dict):
            raise OptionError("--model-kwargs must be a JSON object or k=v,k=v")
        return value
    kwargs: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise OptionError(f"--model-kwargs must be k=v,k=v, got {item!r}")
        try:
            kwargs[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            kwargs[key.strip()] = raw
    return kwargs


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(","))


def parse_batches(text: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise OptionError(f"--batch must be comma-separated ints, got {text!r}") from None
    if min(batches) < 1:
        raise OptionError(f"--batch sizes must be >= 1, got {text!r}")
    return batches


def _plain(value: Any) -> Any:
    """JSON-ready: what a run's fingerprint and the library's keyword arguments hold."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return dict(value)
    return str(value) if isinstance(value, Path) else value


def _pick(obj: Any, names: tuple[str, ...]) -> dict[str, Any]:
    # None means "the library's default", which a keyword left out gives as well
    return {name: getattr(obj, name) for name in names if getattr(obj, name) is not None}


# --- the options objects ---------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """Which model to build, and from what: what every command that builds one shares."""

    model: str
    weights: Optional[str] = None
    num_classes: Optional[int] = None
    trust_pickle: bool = False
    trust_code: bool = False
    model_kwargs: Optional[Mapping[str, Any]] = None

    def model_args(self) -> dict[str, Any]:
        """The keyword arguments of ``ti.inspect`` / ``ti.export`` that build the model."""
        return dict(num_classes=self.num_classes, trust_pickle=self.trust_pickle,
                    trust_code=self.trust_code,
                    model_kwargs=None if self.model_kwargs is None else dict(self.model_kwargs))


@dataclass(frozen=True, kw_only=True)
class LoadOptions(ModelOptions):
    """What ``ti.load(task, model, weights, **kwargs)`` takes: preprocessing overrides, the
    device and backend, and the task's own options (None: the predictor's default)."""

    task: str
    labels: Optional[Path] = None
    input_size: Optional[Size] = None
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None
    device: str = "auto"
    batch_size: Optional[int] = None
    strict: bool = True
    backend: Optional[str] = None  # None: the library's default (runtime.select.default_request)
    precision: Optional[str] = None
    verify_backend: bool = True
    exact_decode: bool = False
    calibration: Optional[Path] = None  # images for int8 (OpenVINO)
    # the task's own (its manifest's: top_k for classify, conf for detect...), checked
    task_options: Mapping[str, Any] = field(default_factory=dict)
    # streaming (predict)
    max_pixels: Optional[int] = None
    decode_workers: Optional[int] = None

    _LOAD_ARGS = ("device", "num_classes", "labels", "input_size", "mean", "std", "strict",
                  "trust_pickle", "trust_code", "model_kwargs", "batch_size", "max_pixels",
                  "backend", "precision", "verify_backend", "decode_workers", "exact_decode",
                  "calibration")

    def __post_init__(self) -> None:
        accepted = accepted_options(self.task)
        for name in self.task_options:
            if name not in accepted:
                takers = [t for t in task_names() if name in accepted_options(t)]
                raise OptionError(f"{name} is an option of {' and '.join(takers)}, not of "
                                  f"{self.task}" if takers else
                                  f"{self.task} has no option {name}")
        checked = {k: accepted[k].check(v) for k, v in self.task_options.items()
                   if v is not None}
        object.__setattr__(self, "task_options", checked)

    @classmethod
    def split_task_options(cls, task: str, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` with the task's own moved into ``task_options`` (and, for ``predict``,
        its manifest's save options into ``save_options``), for a command whose parameters
        hold them all; ``eval``'s evaluator options into ``eval_options``."""
        mine = {f.name for f in fields(cls)}
        theirs = {k: options.pop(k) for k in list(options) if k not in mine
                  and k in accepted_options(task)}
        out = {**options, "task_options": {**options.get("task_options", {}), **theirs}}
        for kind in ("save_options", "eval_options"):  # predict's and eval's
            if kind in mine:
                named = {o.name for o in getattr(task_manifest(task), kind)} - mine
                out[kind] = {**options.get(kind, {}),
                             **{k: out.pop(k) for k in list(out) if k in named}}
        return out

    def load_kwargs(self) -> dict[str, Any]:
        """``ti.load(self.task, self.model, self.weights, **load_kwargs())``."""
        kwargs = _pick(self, self._LOAD_ARGS)
        if "model_kwargs" in kwargs:  # the type the library has always had
            kwargs["model_kwargs"] = _plain(kwargs["model_kwargs"])
        kwargs.update({k: _plain(v) for k, v in self.task_options.items()})
        return kwargs


@dataclass(frozen=True, kw_only=True)
class PredictOptions(LoadOptions):
    """``torchinfer predict <task>``: the model, the inputs and what the run writes."""

    sources: tuple[str, ...]
    out: Path | str  # a folder, or an object-storage URI (s3://bucket/run/): kept as written
    save_vis: bool = False
    save_masks: bool = False
    resume: bool = False
    exist_ok: bool = False
    video_stride: int = 1
    quiet: bool = False
    allow_failures: bool = False
    # where it runs (torchinfer.distributed for "ray"); not in the fingerprint: a job on Ray
    # resumes a local run and the other way round
    engine: str = "local"
    address: Optional[str] = None
    workers: Optional[int] = None
    gpus_per_worker: float = 0.0
    parquet: bool = False
    # what the task's manifest lets predict write beyond the records (depth_format...), checked
    save_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "save_options", checked_values(
            task_manifest(self.task).save_options, self.save_options,
            f"{self.task} writes no {{name}}"))
        if not is_uri(str(self.out)):
            object.__setattr__(self, "out", Path(self.out))
        if self.engine not in ("local", "ray"):
            raise OptionError(f"--engine must be local or ray, got {self.engine!r}")
        if self.engine == "local" and (self.address is not None or self.workers is not None
                                       or self.gpus_per_worker):
            raise OptionError("--address, --workers and --gpus-per-worker need --engine ray")

    def ray_kwargs(self) -> dict[str, Any]:
        """``torchinfer.distributed.RayPredictor(task, model, weights, **ray_kwargs())``."""
        return dict(address=self.address, workers=self.workers,
                    gpus_per_worker=self.gpus_per_worker, **self.load_kwargs())

    # options that change how fast a run goes, not its answers: a resumed run may change them
    _SPEED_ONLY = frozenset({"device", "batch_size", "decode_workers", "verify_backend"})

    @classmethod
    def from_cli(cls, *, task: str, sources: list[str], input_size: Optional[str] = None,
                 mean: Optional[str] = None, std: Optional[str] = None,
                 model_kwargs: Optional[str] = None, **options: Any) -> PredictOptions:
        """From the command's parameters, the text ones still text; the task's own options
        (its manifest's) among them."""
        return cls(task=task, sources=tuple(sources), input_size=parse_size(input_size),
                   mean=parse_floats(mean, "--mean"), std=parse_floats(std, "--std"),
                   model_kwargs=parse_model_kwargs(model_kwargs),
                   **cls.split_task_options(task, options))

    def run_kwargs(self) -> dict[str, Any]:
        """``runner.run.run_to_dir(predictor, sources, out, **run_kwargs())``, less the
        progress callback and run information the caller adds."""
        return dict(save_vis=self.save_vis, save_masks=self.save_masks, resume=self.resume,
                    exist_ok=self.exist_ok, video_stride=self.video_stride,
                    fingerprint={**self.fingerprint(), **dict(self.save_options)})

    def fingerprint(self) -> dict[str, Any]:
        """The options that decide a run's answers, as JSON: what --resume must find unchanged."""
        return {k: _plain(v) for k, v in sorted(self.load_kwargs().items())
                if k not in self._SPEED_ONLY}


@dataclass(frozen=True, kw_only=True)
class EvalOptions(LoadOptions):
    """``torchinfer eval <task>``: the model, the labelled data and where the report goes."""

    data: Optional[Path] = None
    split: Optional[str] = None  # segment
    annotations: Optional[Path] = None  # detect
    images: Optional[Path] = None  # detect
    limit: Optional[int] = None
    as_json: bool = False
    out: Optional[Path] = None
    quiet: bool = False
    allow_failures: bool = False
    # the evaluator's own (its manifest's eval_options: depth's max_depth...), checked
    eval_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "eval_options", checked_values(
            task_manifest(self.task).eval_options, self.eval_options,
            f"eval {self.task} has no option {{name}}"))
        names = task_manifest(self.task).eval_data  # data, or the parts it may be given in
        parts = [n for n in names if n not in ("data", "split")]
        if self.data is None and (not parts or any(getattr(self, n) is None for n in parts)):
            raise OptionError(f"give --data, or all of {', '.join('--' + n for n in parts)}"
                              if parts else f"eval {self.task} needs --data")
        for name in ("split", "annotations", "images"):
            if getattr(self, name) is not None and name not in names:
                takers = [t for t in task_names() if name in task_manifest(t).eval_data]
                raise OptionError(f"--{name} is an option of {' and '.join(takers)}")

    @classmethod
    def from_cli(cls, *, task: str, input_size: Optional[str] = None,
                 mean: Optional[str] = None, std: Optional[str] = None,
                 model_kwargs: Optional[str] = None, **options: Any) -> EvalOptions:
        return cls(task=task, input_size=parse_size(input_size),
                   mean=parse_floats(mean, "--mean"), std=parse_floats(std, "--std"),
                   model_kwargs=parse_model_kwargs(model_kwargs),
                   **cls.split_task_options(task, options))

    def evaluate_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``api.evaluate(self.task, self.model, **evaluate_kwargs(),
        progress=...)``."""
        data = task_manifest(self.task).eval_data
        return dict(weights=self.weights, limit=self.limit,
                    **{name: getattr(self, name) for name in data}, **self.load_kwargs(),
                    **self.eval_options)


@dataclass(frozen=True, kw_only=True)
class InspectOptions(ModelOptions):
    """``torchinfer inspect``: the input to count for and how much of the tree to show."""

    input_size: Optional[Size] = None
    input_shape: Optional[tuple[int, ...]] = None
    per_layer: bool = False
    depth: Optional[int] = None  # None: 2 with per_layer
    other_ops: bool = False
    as_json: bool = False

    def __post_init__(self) -> None:
        if self.input_size is not None and self.input_shape is not None:
            raise OptionError("give --input-size or --input-shape, not both")

    @classmethod
    def from_cli(cls, *, input_size: Optional[str] = None, input_shape: Optional[str] = None,
                 model_kwargs: Optional[str] = None, **options: Any) -> InspectOptions:
        shape = None
        if input_shape is not None:
            shape = tuple(int(v) for v in parse_floats(input_shape, "--input-shape") or ())
        return cls(input_size=parse_size(input_size), input_shape=shape,
                   model_kwargs=parse_model_kwargs(model_kwargs), **options)

    def inspect_kwargs(self) -> dict[str, Any]:
        """``ti.inspect(self.model, self.weights, **inspect_kwargs())``: the per-layer rows
        are counted only when they are shown (the table, or JSON)."""
        depth = 2 if self.depth is None and self.per_layer else self.depth
        return dict(input_size=self.input_size, input_shape=self.input_shape,
                    depth=depth if (self.per_layer or self.as_json) else 0,
                    include_other_ops=self.other_ops, **self.model_args())


@dataclass(frozen=True, kw_only=True)
class ExportOptions(ModelOptions):
    """``torchinfer export``: the file to write, its format and how it is checked."""

    output: Path
    input_size: Optional[Size] = None
    opset: Optional[int] = None
    dynamic_batch: bool = True
    half: bool = False
    export_format: str = "onnx"
    simplify: bool = False
    verify: bool = True
    as_json: bool = False

    def __post_init__(self) -> None:
        if self.export_format not in ("onnx", "torchscript", "openvino"):
            raise OptionError(f"--format must be onnx, torchscript or openvino, got "
                              f"{self.export_format!r}")
        if self.export_format != "onnx" and (self.half or self.simplify or self.opset is not None
                                             or not self.dynamic_batch):
            raise OptionError("--half, --simplify, --opset and --no-dynamic-batch are ONNX options")

    @classmethod
    def from_cli(cls, *, input_size: Optional[str] = None, model_kwargs: Optional[str] = None,
                 **options: Any) -> ExportOptions:
        return cls(input_size=parse_size(input_size),
                   model_kwargs=parse_model_kwargs(model_kwargs), **options)

    def export_kwargs(self) -> dict[str, Any]:
        """``ti.export(self.model, self.output, self.weights, **export_kwargs())``."""
        size = self.input_size
        kwargs = dict(format=self.export_format, input_size=(size, size) if isinstance(size, int) else size,
                      verify=self.verify, **self.model_args())
        if self.export_format == "onnx":
            kwargs.update(opset=self.opset, dynamic_batch=self.dynamic_batch, half=self.half,
                          simplify=self.simplify)
        return kwargs


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """``torchinfer bench``: one model over backends x precisions x batch sizes."""

    model: str
    weights: Optional[str] = None
    task: Optional[str] = None  # None: told by the model's name (the command does that)
    backends: tuple[str, ...] = ("auto", "torch", "torchscript", "onnxruntime", "openvino")
    precisions: tuple[str, ...] = ("fp32", "bf16")
    batches: tuple[int, ...] = (1, 16)
    device: str = "auto"
    images: int = 64
    rounds: int = 3
    input_size: Optional[Size] = None
    verify: bool = True
    as_json: bool = False

    def __post_init__(self) -> None:
        if not self.batches or min(self.batches) < 1:
            raise OptionError(f"--batch sizes must be >= 1, got {','.join(map(str, self.batches))!r}")
        for name in ("images", "rounds"):
            if getattr(self, name) < 1:
                raise OptionError(f"--{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_cli(cls, *, backend: str, precision: str, batch: str,
                 input_size: Optional[str] = None, **options: Any) -> BenchOptions:
        return cls(backends=parse_list(backend), precisions=parse_list(precision),
                   batches=parse_batches(batch), input_size=parse_size(input_size), **options)

    def bench_kwargs(self) -> dict[str, Any]:
        """``tools.bench.bench(**bench_kwargs())``; the task must be known by now."""
        if self.task is None:
            raise OptionError(f"cannot tell the task of {self.model}: pass --task")
        return dict(task=self.task, model=self.model, weights=self.weights,
                    backends=list(self.backends), precisions=list(self.precisions),
                    batches=list(self.batches), device=self.device, images=self.images,
                    rounds=self.rounds, verify=self.verify, input_size=self.input_size)
