"""``torchinfer eval TASK MODEL --data ...``: score a model on labelled data.

A thin layer over ``torchinfer.evaluation``: one command per task, made from its manifest
(``eval_command``), each building one :class:`EvalOptions`.
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
    """``torchinfer eval TASK`` from the task's manifest: ``--data`` in its layout, the
    options of its evaluation and the task's own, over the parameters every eval command
    takes. The task's options default to what its evaluation customarily runs with
    (``TaskImplementation.evaluation_options``: detection down to conf 0.001)."""
    manifest = task_manifest(task)

    def command(**params: Any) -> None:
        evaluate(parsed(EvalOptions.from_cli, task=task, **params))

    shared = list(inspect.signature(_shared, eval_str=True).parameters.values())
    parts = [n for n in manifest.eval_data if n not in ("data", "split")]
    data = Annotated[Optional[Path], typer.Option(help=manifest.eval_help)] if parts else \
        Annotated[Path, typer.Option(help=manifest.eval_help)]
    data_param = shared[1].replace(annotation=data, default=None if parts else shared[1].default)
    own = [option_parameter(o) for o in manifest.eval_options]
    own += [option_parameter(o, default=None) for o in manifest.options if o.type != "any"]
    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [shared[0], data_param, *own, *shared[2:]])
    command.__doc__ = manifest.eval_summary or f"Score a {task} model on labelled data."
    command.__name__ = f"eval_{task}"
    return command


def add_generated_commands() -> None:
    """An eval command for every task that reads a labelled layout and has no command of its
    own (multi-head models: cli/multi.py)."""
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
