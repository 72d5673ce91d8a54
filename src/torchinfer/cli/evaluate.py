"""``torchinfer eval classify|segment|detect MODEL --data ...``: score a model on labelled data.

A thin layer over ``torchinfer.evaluation``: each command builds one :class:`EvalOptions`.
Exit codes: 0 evaluated; 1 some images could not be processed (they are listed;
``--allow-failures`` makes that 0); 2 a usage, model or data error (the message names the file
and the problem).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import TorchinferError
from ..manifests import task_manifest, task_names
from .options import EvalOptions
from .params import (
    EXIT_CONFIG_ERROR,
    EXIT_INPUT_FAILED,
    AllowFailuresOpt,
    BackendOpt,
    BatchOpt,
    DeviceOpt,
    ExactDecodeOpt,
    InputSizeOpt,
    LabelsOpt,
    MeanOpt,
    ModelKwargsOpt,
    NumClassesOpt,
    PrecisionOpt,
    QuietOpt,
    StdOpt,
    StrictOpt,
    TrustCodeOpt,
    TrustOpt,
    VerifyBackendOpt,
    WeightsOpt,
    console,
    err_console,
    option_parameter,
    parsed,
)

eval_app = typer.Typer(help="Evaluate a model on labelled data: accuracy, mIoU, COCO mAP.",
                       no_args_is_help=True)

MAX_CLASS_ROWS = 100

ModelArg = Annotated[str, typer.Argument(help="torchvision name, pkg.module:factory, or a model "
                     "file (TorchScript, .onnx).", show_default=False)]
LimitOpt = Annotated[Optional[int], typer.Option(help="Evaluate only the first N images.",
                     min=1)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
OutOpt = Annotated[Optional[Path], typer.Option(help="Also write the report to <out>/eval.json.")]


@eval_app.command("classify")
def eval_classify(
    model: ModelArg,
    data: Annotated[Path, typer.Option(help="ImageFolder: <data>/<class name>/<images>; "
                                            "folder names are the model's class names.")],
    weights: WeightsOpt = None, num_classes: NumClassesOpt = None, labels: LabelsOpt = None,
    input_size: InputSizeOpt = None, mean: MeanOpt = None, std: StdOpt = None,
    device: DeviceOpt = "auto", batch_size: BatchOpt = None, limit: LimitOpt = None,
    as_json: JsonOpt = False, out: OutOpt = None, trust_pickle: TrustOpt = False,
    strict: StrictOpt = True, allow_failures: AllowFailuresOpt = False, quiet: QuietOpt = False,
    backend: BackendOpt = None, precision: PrecisionOpt = None,
    verify_backend: VerifyBackendOpt = True, exact_decode: ExactDecodeOpt = False,
    trust_code: TrustCodeOpt = False,
    model_kwargs: ModelKwargsOpt = None,
) -> None:
    """Top-1/top-5 accuracy, per-class accuracy and the confusion matrix."""
    evaluate(parsed(EvalOptions.from_cli, task="classify", **locals()))


@eval_app.command("segment")
def eval_segment(
    model: ModelArg,
    data: Annotated[Path, typer.Option(help="VOC layout: JPEGImages/<id>.jpg, "
                                            "SegmentationClass/<id>.png (255 = ignore).")],
    split: Annotated[Optional[str], typer.Option(help="Use ImageSets/Segmentation/<split>.txt "
                     "(default: every mask in SegmentationClass).")] = None,
    weights: WeightsOpt = None, num_classes: NumClassesOpt = None, labels: LabelsOpt = None,
    input_size: InputSizeOpt = None, mean: MeanOpt = None, std: StdOpt = None,
    device: DeviceOpt = "auto", batch_size: BatchOpt = None, limit: LimitOpt = None,
    as_json: JsonOpt = False, out: OutOpt = None, trust_pickle: TrustOpt = False,
    strict: StrictOpt = True, allow_failures: AllowFailuresOpt = False, quiet: QuietOpt = False,
    backend: BackendOpt = None, precision: PrecisionOpt = None,
    verify_backend: VerifyBackendOpt = True, exact_decode: ExactDecodeOpt = False,
    trust_code: TrustCodeOpt = False,
    model_kwargs: ModelKwargsOpt = None,
) -> None:
    """mIoU, pixel accuracy and per-class IoU, at the original image resolution."""
    evaluate(parsed(EvalOptions.from_cli, task="segment", **locals()))


@eval_app.command("detect")
def eval_detect(
    model: ModelArg,
    data: Annotated[Optional[Path], typer.Option(
        help="A folder holding annotations.json (COCO) and images/, or the annotations "
             "file.")] = None,
    annotations: Annotated[Optional[Path], typer.Option(help="COCO annotations file.")] = None,
    images: Annotated[Optional[Path], typer.Option(
        help="Folder the file_name entries are in.")] = None,
    weights: WeightsOpt = None, num_classes: NumClassesOpt = None, labels: LabelsOpt = None,
    input_size: InputSizeOpt = None,
    conf: Annotated[float, typer.Option(help="Minimum score kept (low, so the precision-recall "
                    "curve runs out).", min=0.0, max=1.0)] = 0.001,
    iou: Annotated[float, typer.Option(help="NMS IoU threshold (raw-tensor models).",
                                       min=0.0, max=1.0)] = 0.6,
    max_det: Annotated[int, typer.Option(help="Most detections per image (COCO scores 100).",
                                           min=1)] = 100,
    decoder: Annotated[str, typer.Option(help="auto, torchvision, yolov5, yolov8, yolov8-seg, "
                       "yolov5-seg, yolov8-pose or yolov8-obb.")] = "auto",
    device: DeviceOpt = "auto", batch_size: BatchOpt = None, limit: LimitOpt = None,
    as_json: JsonOpt = False, out: OutOpt = None, trust_pickle: TrustOpt = False,
    strict: StrictOpt = True, allow_failures: AllowFailuresOpt = False, quiet: QuietOpt = False,
    backend: BackendOpt = None, precision: PrecisionOpt = None,
    verify_backend: VerifyBackendOpt = True, exact_decode: ExactDecodeOpt = False,
    trust_code: TrustCodeOpt = False,
    model_kwargs: ModelKwargsOpt = None,
) -> None:
    """COCO mAP@[.5:.95], mAP@.5, mAP@.75 and per-category AP (pycocotools)."""
    evaluate(parsed(EvalOptions.from_cli, task="detect", **locals()))


def _shared(
    model: ModelArg, data: Path,
    weights: WeightsOpt = None, num_classes: NumClassesOpt = None, labels: LabelsOpt = None,
    input_size: InputSizeOpt = None, mean: MeanOpt = None, std: StdOpt = None,
    device: DeviceOpt = "auto", batch_size: BatchOpt = None, limit: LimitOpt = None,
    as_json: JsonOpt = False, out: OutOpt = None, trust_pickle: TrustOpt = False,
    strict: StrictOpt = True, allow_failures: AllowFailuresOpt = False, quiet: QuietOpt = False,
    backend: BackendOpt = None, precision: PrecisionOpt = None,
    verify_backend: VerifyBackendOpt = True, exact_decode: ExactDecodeOpt = False,
    trust_code: TrustCodeOpt = False, model_kwargs: ModelKwargsOpt = None,
) -> None:
    """The parameters of a generated ``eval`` command (the signature's template)."""


def eval_command(task: str) -> Callable[..., None]:
    """``torchinfer eval TASK`` from the task's manifest: ``--data`` in its layout, its
    evaluator's options and its own, over the parameters every eval command takes."""
    manifest = task_manifest(task)

    def command(**params: Any) -> None:
        evaluate(parsed(EvalOptions.from_cli, task=task, **params))

    shared = list(inspect.signature(_shared, eval_str=True).parameters.values())
    data = shared[1].replace(annotation=Annotated[Path, typer.Option(help=manifest.eval_help)])
    own = [option_parameter(o) for o in (*manifest.eval_options, *manifest.options)
           if o.type != "any"]
    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [shared[0], data, *own, *shared[2:]])
    command.__doc__ = f"Score a {task} model on labelled data."
    command.__name__ = f"eval_{task}"
    return command


def add_generated_commands() -> None:
    """An eval command for every task that has an evaluator's layout and no command of its
    own above (a task added by its manifest)."""
    written = {c.name for c in eval_app.registered_commands}
    for task in task_names():
        if task not in written and task_manifest(task).eval_help:
            eval_app.command(task)(eval_command(task))


def evaluate(options: EvalOptions) -> None:
    """Evaluate with a progress bar, print the report (tables or JSON), write it with --out,
    exit with the code."""
    from ..api import evaluate as evaluate_model

    model, weights, out, quiet = options.model, options.weights, options.out, options.quiet
    try:
        with _progress(quiet) as progress:
            report = evaluate_model(options.task, model, progress=progress,
                                    **options.evaluate_kwargs())
    except TorchinferError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False,
                          soft_wrap=True)
        raise typer.Exit(EXIT_CONFIG_ERROR) from None
    if weights is None and report.weights is None and not quiet:
        err_console.print(f"[yellow]warning:[/] {escape(model)} has no weights: randomly initialised, "
                          "its scores are meaningless (pass --weights)")
    record = report.to_dict()
    if out is not None:
        from ..runner.sinks import write_json_atomic

        try:
            write_json_atomic(out / "eval.json", record)
        except OSError as exc:
            err_console.print(f"[bold red]error:[/] cannot write {escape(str(out / 'eval.json'))}: "
                              f"{escape(exc.strerror or str(exc))}", highlight=False)
            raise typer.Exit(EXIT_CONFIG_ERROR) from None
    if options.as_json:
        typer.echo(json.dumps(record, indent=2, ensure_ascii=False))
    elif not quiet:
        _print_tables(report, out)
    if not quiet:
        where = f" -> {out / 'eval.json'}" if out is not None else ""
        err_console.print(f"{report.evaluated} of {report.images} images of {report.data} scored"
                          + (f", {report.failed} failed" if report.failed else "")
                          + f" in {report.seconds:.1f} s{where}", highlight=False,
                          markup=False, soft_wrap=True)
        for warning in report.warnings:
            err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False,
                              soft_wrap=True)
        for failure in report.failures[:10]:
            err_console.print(f"  [red]failed[/] {escape(failure['source'])}: "
                              f"{escape(failure['error'])}",
                              highlight=False, soft_wrap=True)
        if report.failed > 10:
            err_console.print(f"  ... {report.failed - 10} more failures in the report",
                              highlight=False)
    if report.failed and not options.allow_failures:
        raise typer.Exit(EXIT_INPUT_FAILED)


def _print_tables(report: Any, out: Optional[Path]) -> None:
    title = f"{report.task}: {report.model}"
    summary = Table("metric", "value", title=escape(title), title_justify="left")
    for name, value in report.summary():
        summary.add_row(escape(name), escape(value))
    console.print(summary)
    columns, rows = report.per_class()
    if rows:
        table = Table(*columns, title="per class", title_justify="left")
        for row in rows[:MAX_CLASS_ROWS]:
            table.add_row(*(escape(cell) for cell in row))
        if len(rows) > MAX_CLASS_ROWS:
            where = f"{out}/eval.json" if out is not None else "--json / --out"
            table.caption = escape(f"first {MAX_CLASS_ROWS} of {len(rows)} classes; all in "
                                   f"{where}")
        console.print(table)


class _progress:
    """A transient progress bar on stderr while images are evaluated (a no-op when quiet)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar: Optional[Progress] = None
        self.task: Any = None

    def __enter__(self) -> Optional[Callable[[int, int], None]]:
        if self.quiet:
            return None
        self.bar = Progress(TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=err_console, transient=True)
        self.bar.__enter__()

        def update(done: int, total: int) -> None:
            if self.task is None:
                self.task = self.bar.add_task("evaluating", total=total)
            self.bar.update(self.task, completed=done)

        return update

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
