"""``torchinfer predict multi`` and ``torchinfer eval multi``: a multi-head model (its heads
from its file, ``--head`` or ``--heads FILE``), or several models over one decode
(``-m`` repeated).

    torchinfer predict multi scenes/ -m shapes_multitask --save-vis --save-masks
    torchinfer predict multi scenes/ -m my_net.onnx --head cls=classify:labels.txt \\
        --head seg=segment:voc --head det=detect:coco80:yolov8 --head-option det.conf=0.4
    torchinfer predict multi scenes/ -m shapes_classifier -m shapes_detector
    torchinfer eval multi shapes_multitask --data shape=cls/ --data mask=voc/ --data objects=coco/
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import OptionError
from ..manifests import is_task
from .evaluate import JsonOpt, LimitOpt, ModelArg, OutOpt, evaluate
from .options import EvalOptions, PredictOptions
from .params import (
    AllowFailuresOpt,
    BatchOpt,
    DecodeWorkersOpt,
    DeviceOpt,
    ExactDecodeOpt,
    ExistOkOpt,
    InputSizeOpt,
    MaxPixelsOpt,
    MeanOpt,
    ModelKwargsOpt,
    QuietOpt,
    ResumeOpt,
    SaveVisOpt,
    Sources,
    StdOpt,
    StrictOpt,
    TrustCodeOpt,
    TrustOpt,
    WeightsOpt,
    parsed,
)
from .predict import predict

HeadOpt = Annotated[Optional[list[str]], typer.Option(
    "--head", help="A head: NAME=TASK, then optional :PART items, each a labels file or "
    "voc/coco/coco80/imagenet, yolov5|yolov8, output=KEY or option=value; repeated (default: "
    "the heads the model file names).")]
HeadsFileOpt = Annotated[Optional[Path], typer.Option(
    "--heads", help="A YAML or JSON file listing the heads (name, task, output, labels, "
    "options).")]
HeadOptionOpt = Annotated[Optional[list[str]], typer.Option(
    "--head-option", help="One head's option, HEAD.KEY=VALUE (e.g. objects.conf=0.5), repeated.")]


@dataclass(frozen=True, kw_only=True)
class MultiOptions:
    """What turns a multi command's parameters into a predictor: the models, the heads."""

    models: tuple[str, ...]
    heads: tuple[str, ...] = ()
    heads_file: Optional[Path] = None
    head_options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.models) > 1 and (self.heads or self.heads_file or self.head_options):
            raise OptionError("--head/--heads/--head-option describe one multi-head model; "
                              "several models (-m repeated) are each their own head")
        if self.heads and self.heads_file is not None:
            raise OptionError("give --head (repeated) or --heads FILE, not both")
        for text in self.head_options:
            key, eq, _ = text.partition("=")
            if not eq or "." not in key:
                raise OptionError(f"--head-option {text}: write HEAD.KEY=VALUE, e.g. "
                                  "objects.conf=0.5")

    def build(self, load_kwargs: dict[str, Any], weights: Optional[str]) -> Any:
        """The predictor: a multi-head model, or a group of single-task models."""
        from ..api import load, load_group
        from ..tasks.heads import parse_head_argument, read_head_file

        if len(self.models) > 1:
            if weights is not None:
                raise OptionError("--weights names one model's file: give each model as its "
                                  "own file (-m path), or run one model")
            shared = {k: v for k, v in load_kwargs.items()
                      if k in ("device", "batch_size", "max_pixels", "decode_workers", "top_k",
                               "multi_label", "conf", "iou", "max_det", "classes",
                               "exact_decode")}
            return load_group(dict(_member(m) for m in self.models), **shared)
        heads: Any = None
        if self.heads:
            heads = [parse_head_argument(h) for h in self.heads]
        elif self.heads_file is not None:
            heads = read_head_file(self.heads_file)
        head_options: dict[str, dict[str, Any]] = {}
        for text in self.head_options:
            key, _, value = text.partition("=")
            head, _, option = key.partition(".")
            head_options.setdefault(head, {})[option] = _value(value)
        return load("multi", self.models[0], weights, heads=heads, head_options=head_options,
                    **load_kwargs)


def _member(text: str) -> tuple[str, Any]:
    """NAME=[TASK:]MODEL or [TASK:]MODEL -> (head name, model or (task, model))."""
    name, eq, rest = text.partition("=")
    if not eq:
        name, rest = "", text
    task, colon, model = rest.partition(":")
    member: Any = (task, model) if colon and is_task(task) else rest
    return name or Path(model if colon and is_task(task) else rest).stem, member


def _value(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def predict_multi(
    sources: Sources,
    model: Annotated[list[str], typer.Option(
        "--model", "-m", help="A multi-head model (name or file), or several single-task models "
        "(repeat -m; NAME=TASK:MODEL names a head and gives a task the file does not).")],
    weights: WeightsOpt = None, head: HeadOpt = None, heads: HeadsFileOpt = None,
    head_option: HeadOptionOpt = None,
    input_size: InputSizeOpt = None, mean: MeanOpt = None, std: StdOpt = None,
    top_k: Annotated[Optional[int], typer.Option(help="Classes per image, every classify head.",
                                                 min=1)] = None,
    conf: Annotated[Optional[float], typer.Option(help="Minimum score, every detect head.",
                                                  min=0.0, max=1.0)] = None,
    iou: Annotated[Optional[float], typer.Option(help="NMS IoU threshold, every detect head.",
                                                 min=0.0, max=1.0)] = None,
    max_det: Annotated[Optional[int], typer.Option(help="Most detections per image, every "
                                                   "detect head.", min=1)] = None,
    device: DeviceOpt = "auto", batch_size: BatchOpt = None,
    out: Annotated[str, typer.Option(help="Output folder, or an object-storage URI "
                                     "(s3://bucket/run/).")] = "runs/multi",
    save_vis: SaveVisOpt = False,
    save_masks: Annotated[bool, typer.Option(help="Write masks/<name>.<head>.png for every "
                          "head with masks.")] = False,
    trust_pickle: TrustOpt = False, strict: StrictOpt = True, max_pixels: MaxPixelsOpt = None,
    allow_failures: AllowFailuresOpt = False, quiet: QuietOpt = False,
    resume: ResumeOpt = False, decode_workers: DecodeWorkersOpt = None,
    exist_ok: ExistOkOpt = False, trust_code: TrustCodeOpt = False,
    model_kwargs: ModelKwargsOpt = None, exact_decode: ExactDecodeOpt = False,
) -> None:
    """Every head of a multi-head model (or every model) over one decode: one JSONL record per
    input holding each head's answer, masks, coco_results.json, all heads drawn on one picture."""
    multi = parsed(MultiOptions, models=tuple(model), heads=tuple(head or ()), heads_file=heads,
                   head_options=tuple(head_option or ()))
    options = parsed(PredictOptions.from_cli, task="multi", sources=sources,
                     model=" + ".join(model), weights=weights, input_size=input_size, mean=mean,
                     std=std, top_k=top_k, conf=conf, iou=iou, max_det=max_det, device=device,
                     batch_size=batch_size, out=out, save_vis=save_vis, save_masks=save_masks,
                     trust_pickle=trust_pickle, strict=strict, max_pixels=max_pixels,
                     allow_failures=allow_failures, quiet=quiet, resume=resume,
                     decode_workers=decode_workers, exist_ok=exist_ok, trust_code=trust_code,
                     model_kwargs=model_kwargs, exact_decode=exact_decode)
    predict(options, multi.build(options.load_kwargs(), weights))


@dataclass(frozen=True, kw_only=True)
class MultiEvalOptions(EvalOptions):
    """``eval multi``: data per head instead of one --data."""

    data_by_head: tuple[tuple[str, str], ...] = ()
    multi: Optional[MultiOptions] = None

    def __post_init__(self) -> None:
        if not self.data_by_head:
            raise OptionError("eval multi needs --data HEAD=PATH for the heads to score")

    def evaluate_kwargs(self) -> dict[str, Any]:
        kwargs = dict(weights=self.weights, limit=self.limit, data=dict(self.data_by_head),
                      **self.load_kwargs())
        if self.multi is not None and self.multi.heads:
            from ..tasks.heads import parse_head_argument

            kwargs["heads"] = [parse_head_argument(h) for h in self.multi.heads]
        elif self.multi is not None and self.multi.heads_file is not None:
            from ..tasks.heads import read_head_file

            kwargs["heads"] = read_head_file(self.multi.heads_file)
        return kwargs


def eval_multi(
    model: ModelArg,
    data: Annotated[list[str], typer.Option(help="HEAD=PATH, repeated: each head's data in its "
                    "task's layout (ImageFolder, VOC, COCO).")],
    weights: WeightsOpt = None, head: HeadOpt = None, heads: HeadsFileOpt = None,
    input_size: InputSizeOpt = None, mean: MeanOpt = None, std: StdOpt = None,
    device: DeviceOpt = "auto", batch_size: BatchOpt = None, limit: LimitOpt = None,
    as_json: JsonOpt = False, out: OutOpt = None, trust_pickle: TrustOpt = False,
    strict: StrictOpt = True, allow_failures: AllowFailuresOpt = False, quiet: QuietOpt = False,
    trust_code: TrustCodeOpt = False, model_kwargs: ModelKwargsOpt = None,
    exact_decode: ExactDecodeOpt = False,
) -> None:
    """Each head scored on its own data by its task's evaluator (accuracy, mIoU, COCO mAP)."""
    pairs = []
    for text in data:
        name, eq, path = text.partition("=")
        if not eq or not name or not path:
            raise typer.BadParameter(f"--data {text}: write HEAD=PATH")
        pairs.append((name, path))
    multi = parsed(MultiOptions, models=(model,), heads=tuple(head or ()), heads_file=heads)
    evaluate(parsed(MultiEvalOptions.from_cli, task="multi", model=model, weights=weights,
                    data_by_head=tuple(pairs), multi=multi, input_size=input_size, mean=mean,
                    std=std, device=device, batch_size=batch_size, limit=limit,
                    as_json=as_json, out=out, trust_pickle=trust_pickle, strict=strict,
                    allow_failures=allow_failures, quiet=quiet, trust_code=trust_code,
                    model_kwargs=model_kwargs, exact_decode=exact_decode))
