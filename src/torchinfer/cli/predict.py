"""``torchinfer predict classify|segment|detect``: run a model over images, write the results,
show progress and a table of the first results."""

from __future__ import annotations

import inspect
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..manifests import task_manifest, task_names
from ..storage.mirror import shown, staged
from ..storage.uris import is_uri
from .options import PredictOptions
from .params import (
    EXIT_INPUT_FAILED,
    AllowFailuresOpt,
    BackendOpt,
    BatchOpt,
    CalibrationOpt,
    DecodeWorkersOpt,
    DeviceOpt,
    ExactDecodeOpt,
    ExistOkOpt,
    InputSizeOpt,
    LabelsOpt,
    MaxPixelsOpt,
    MeanOpt,
    ModelKwargsOpt,
    ModelOpt,
    NumClassesOpt,
    PrecisionOpt,
    QuietOpt,
    ResumeOpt,
    SaveVisOpt,
    Sources,
    StdOpt,
    StrictOpt,
    TrustCodeOpt,
    TrustOpt,
    VerifyBackendOpt,
    VideoStrideOpt,
    WeightsOpt,
    console,
    err_console,
    option_parameter,
    parsed,
)

predict_app = typer.Typer(help="Run a model over images and write the results.",
                          no_args_is_help=True)

TABLE_ROWS = 50  # results shown in the table; all of them are in predictions.jsonl

# Where the model runs (--engine ray: torchinfer.distributed, on Ray Data).
EngineOpt = Annotated[str, typer.Option(help="local (this process) or ray (a pool of Ray "
                      "workers; needs the ray extra); same records either way.")]
AddressOpt = Annotated[Optional[str], typer.Option(help="--engine ray: the cluster, auto (the "
                       "one `ray start` began here) or ray://host:10001; default: a private "
                       "local Ray for this run.")]
WorkersOpt = Annotated[Optional[int], typer.Option(help="--engine ray: model workers (default: "
                       "one per CPU but one, or per GPU share).", min=1)]
GpusPerWorkerOpt = Annotated[float, typer.Option(help="--engine ray: GPUs each worker holds "
                             "(0.5: two workers share one).", min=0.0)]
ParquetOpt = Annotated[bool, typer.Option(help="Also write predictions.parquet.")]


# --- the commands ----------------------------------------------------------------------------
# One per task, made from its manifest: the parameters every task shares (the template below)
# with the task's own options and output flags among them. Each builds its PredictOptions from
# its parameters and hands it to predict().

def _shared(
    sources: Sources, model: ModelOpt, weights: WeightsOpt = None,
    num_classes: NumClassesOpt = None, labels: LabelsOpt = None,
    input_size: InputSizeOpt = None, mean: MeanOpt = None, std: StdOpt = None,
    device: DeviceOpt = "auto", batch_size: BatchOpt = None,
    out: Annotated[str, typer.Option(help="Output folder, or an object-storage URI "
                                     "(s3://bucket/run/, gs://...): written through a local "
                                     "copy, uploaded as the run goes.")] = "runs",
    save_vis: SaveVisOpt = False, trust_pickle: TrustOpt = False, strict: StrictOpt = True,
    max_pixels: MaxPixelsOpt = None, allow_failures: AllowFailuresOpt = False,
    quiet: QuietOpt = False, backend: BackendOpt = None, precision: PrecisionOpt = None,
    verify_backend: VerifyBackendOpt = True, exact_decode: ExactDecodeOpt = False,
    calibration: CalibrationOpt = None, resume: ResumeOpt = False,
    video_stride: VideoStrideOpt = 1, decode_workers: DecodeWorkersOpt = None,
    exist_ok: ExistOkOpt = False, trust_code: TrustCodeOpt = False,
    model_kwargs: ModelKwargsOpt = None, engine: EngineOpt = "local",
    address: AddressOpt = None, workers: WorkersOpt = None,
    gpus_per_worker: GpusPerWorkerOpt = 0.0, parquet: ParquetOpt = False,
) -> None:
    """The parameters of every ``predict`` command (the signature's template)."""


def predict_command(task: str) -> Callable[..., None]:
    """``torchinfer predict TASK``: the command of ``task``, from its manifest."""
    manifest = task_manifest(task)

    def command(**params: Any) -> None:
        predict(parsed(PredictOptions.from_cli, task=task, **params))

    shared = list(inspect.signature(_shared, eval_str=True).parameters.values())
    at = [p.name for p in shared].index("device")
    own = [option_parameter(o) for o in manifest.options if o.type != "any"]
    saves = [option_parameter(o) for o in manifest.save_options]
    out = next(p for p in shared if p.name == "out").replace(default=f"runs/{task}")
    params = [*shared[:at], *own, *(out if p.name == "out" else p for p in shared[at:])]
    vis = [p.name for p in params].index("save_vis")
    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [*params[:vis + 1], *saves, *params[vis + 1:]])
    command.__doc__ = manifest.summary
    command.__name__ = f"predict_{task}"
    return command


for _task in task_names():
    if _task != "multi":  # several models or heads: cli/multi.py has its command
        predict_app.command(_task)(predict_command(_task))


# --- running -------------------------------------------------------------------------------

def predict(options: PredictOptions, predictor: Any = None) -> None:
    """Load (unless ``predictor`` is given, built from ``options``), run over the sources
    with a progress bar, print a table, exit with the code."""
    from ..api import load
    from ..runner.run import is_run_output
    from ..tasks.registry import task_spec

    task, quiet = options.task, options.quiet
    where = str(options.out)  # the folder or URI, as the user named it
    if predictor is None and options.engine == "ray":  # the same run, its batches on Ray Data
        from ..distributed import RayPredictor

        predictor = RayPredictor(task, options.model, options.weights, **options.ray_kwargs())
    if predictor is None:
        predictor = load(task, options.model, options.weights, **options.load_kwargs())
    if predictor.model.random_init and not quiet:
        err_console.print(f"[yellow]warning:[/] {escape(options.model)} has no weights: randomly "
                          "initialised, its predictions are meaningless (pass --weights)")
    spec = task_spec(task)  # its table: the columns and how one result fills them
    columns, describe = spec.columns, spec.describe
    rows: list[tuple[str, ...]] = []

    def show(result: Any) -> None:
        if len(rows) < TABLE_ROWS:
            ms = f"{sum(result.speed.values()):.1f}"
            rows.append((escape(result.source), *map(escape, describe(result)), ms) if result.ok
                        else (escape(result.source), "[red]failed[/]", "",
                              escape(result.error or "")))

    run_info = {"task": task, "model": options.model, "weights": options.weights,
                "device": str(predictor.device)}
    write = spec.implementation.write
    saves = dict(options.save_options)
    try:
        files = spec.manifest.run_files
        # a URI: a local copy of the run's own files, uploaded as the run goes
        with staged(options.out, lambda name: is_run_output(name, files)) as out:
            summary = _run_with_progress(
                predictor, list(options.sources), out, quiet, show, run_info=run_info,
                draw=spec.draw, write=None if write is None else
                (lambda result, folder, name: write(result, folder, name, saves)),
                files=spec.manifest.run_files, finish=spec.implementation.finish,
                named_as=where if is_uri(where) else None, **options.run_kwargs())
            if options.parquet:
                from ..distributed.parquet import write_parquet

                summary.outputs["parquet"] = shown(
                    where, out, write_parquet(out / "predictions.jsonl"))
    except KeyboardInterrupt:
        err_console.print(f"interrupted: every finished input is in {escape(where)}/"
                          "predictions.jsonl.partial; the same command with --resume runs only "
                          "the rest", highlight=False)
        raise typer.Exit(130) from None
    if predictor.backend_report is not None and not quiet:
        err_console.print(predictor.backend_report.summary(), highlight=False, markup=False)
    if not quiet:
        table = Table("source", *columns, "ms/img", title=task)
        for r in rows:
            table.add_row(*r)
        if summary.total > len(rows):
            table.caption = escape(f"first {len(rows)} of {summary.total} rows; all in "
                                   f"{where}/predictions.jsonl")
        console.print(table)
    _finish(summary, where, options.allow_failures, quiet)


def _run_with_progress(predictor: Any, sources: list[str], out: Path, quiet: bool,
                       on_result: Callable[[Any], None], run_info: dict[str, Any],
                       total: int | None = None, **save: Any) -> Any:
    """run_to_dir with a progress bar on a terminal, JSON progress lines on stderr otherwise
    (logs, pipes: every 2 s), nothing with --quiet. ``total``: the inputs if already counted."""
    from ..runner.run import count_inputs, run_to_dir

    if total is None:
        total = count_inputs(sources, save.get("named_as") or out, save.get("video_stride", 1))
    if quiet or total <= predictor.batch_size:
        return run_to_dir(predictor, sources, out, on_result=on_result, run_info=run_info, **save)
    start = time.perf_counter()
    done = 0
    if not err_console.is_terminal:
        last = [start]

        def line(result: Any) -> None:
            nonlocal done
            on_result(result)
            done += 1
            now = time.perf_counter()
            if now - last[0] >= 2.0 or done == total:
                last[0] = now
                rate = done / max(now - start, 1e-9)
                print(json.dumps({"progress": done, "total": total,
                                  "images_per_second": round(rate, 2),
                                  "eta_s": round((total - done) / rate, 1) if rate else None}),
                      file=sys.stderr, flush=True)

        return run_to_dir(predictor, sources, out, on_result=line, run_info=run_info, **save)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:.1f} img/s"), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        bar = progress.add_task("predicting", total=total, rate=0.0)

        def tick(result: Any) -> None:
            nonlocal done
            on_result(result)
            done += 1
            progress.update(bar, advance=1, rate=done / max(time.perf_counter() - start, 1e-9))

        return run_to_dir(predictor, sources, out, on_result=tick, run_info=run_info, **save)


def _finish(summary: Any, out: str, allow_failures: bool, quiet: bool) -> None:
    if not quiet:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in summary.stage_ms.items())
        if summary.draw_ms:
            stages += f", drawing {summary.draw_ms:.1f}"
        err_console.print(f"{summary.total} inputs, {summary.succeeded} ok, {summary.failed} failed "
                          f"in {summary.seconds:.2f} s ({summary.images_per_second:.1f} img/s; "
                          f"ms/img: {stages or '-'}) -> {escape(str(out))}", highlight=False)
        for failure in summary.failures[:10]:
            err_console.print(f"  [red]failed[/] {escape(failure['source'])}: "
                              f"{escape(failure['error'])}", highlight=False, soft_wrap=True)
    if summary.failed and not allow_failures:
        raise typer.Exit(EXIT_INPUT_FAILED)
