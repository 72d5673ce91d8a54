"""The ``torchinfer`` command: a thin layer over library calls.

Exit codes: 0 all inputs succeeded; 1 some inputs failed (``--allow-failures`` makes that 0);
2 a usage or configuration error (unknown model, unreadable weights, missing device).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import TorchinferError
from .options import (
    EXIT_CONFIG_ERROR,
    EXIT_INPUT_FAILED,
    AllowFailuresOpt,
    BackendOpt,
    BatchOpt,
    DecodeWorkersOpt,
    DeviceOpt,
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
    load_options,
    parse_class_ids,
    parse_floats,
    parse_model_kwargs,
    parse_size,
)

app = typer.Typer(help="PyTorch inference: preprocess -> model -> postprocess.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
predict_app = typer.Typer(help="Run a model over images and write the results.",
                          no_args_is_help=True)
app.add_typer(predict_app, name="predict")




def main() -> None:
    sys.exit(run())


def run(args: Optional[list[str]] = None) -> int:
    """Run the command line ``args`` (default: the process's); return the exit code. Every
    user mistake ends in one line on stderr and exit code 2, never a traceback."""
    try:
        code = app(args=args, standalone_mode=False)
    except typer.Abort:
        code = 1
    except TorchinferError as exc:
        # one line, as written: file names and hints may hold [brackets]
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False,
                          soft_wrap=True)
        code = EXIT_CONFIG_ERROR
    except Exception as exc:
        if not _is_usage_error(exc):
            raise
        code = _report_usage_error(exc)
    return code if isinstance(code, int) else 0


def _is_usage_error(exc: Exception) -> bool:
    # typer keeps click's exception classes private (typer.BadParameter is the one it
    # exports), so usage errors are told by their interface: a message and an exit code
    return callable(getattr(exc, "format_message", None)) and \
        isinstance(getattr(exc, "exit_code", None), int)


def _report_usage_error(exc: Exception) -> int:
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
        typer.echo(ctx.get_help())  # a bare command shows its help, as before
        return 0
    where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    err_console.print(f"[bold red]error:[/] {escape(exc.format_message())}{where}",  # type: ignore[attr-defined]
                      highlight=False, soft_wrap=True)
    return int(exc.exit_code)  # type: ignore[attr-defined]


@app.command()
def env(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Versions, devices and backends: can this machine run inference, and on what?"""
    from ..tools.env import environment

    info = environment()
    if as_json:
        console.print_json(json.dumps(info))
        return
    table = Table(show_header=False, box=None)
    for key, value in info.items():
        if key == "cuda_devices":
            value = "; ".join(f"cuda:{d['index']} {d['name']} {d['memory_gib']} GiB "
                              f"(sm {d['capability']})" for d in value) or "-"
        elif isinstance(value, list):
            value = ", ".join(value)
        table.add_row(key, escape("-" if value is None else str(value)))
    console.print(table)


@app.command()
def models(
    task: Annotated[Optional[str], typer.Option(help="classify, segment or detect.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the model names that can be built (torchvision's registry)."""
    from ..models import list_models

    entries = list_models(task)
    if as_json:
        console.print_json(json.dumps([e.to_dict() for e in entries]))
        return
    table = Table("name", "task", "params (M)", "default weights")
    for e in entries:
        params = f"{e.num_params / 1e6:.1f}" if e.num_params else "-"
        table.add_row(e.name, e.task, params, e.weights[0] if e.weights else "-")
    console.print(table)


@app.command("inspect")
def inspect_cmd(
    model: Annotated[str, typer.Argument(help="torchvision name, pkg.module:factory or model file.")],
    weights: Annotated[Optional[str], typer.Option("--weights", "-w", help="Weights file "
                       "(its size is reported).")] = None,
    input_size: Annotated[Optional[str], typer.Option(help="H or H,W (default: the size the "
                          "model's weights are used at).")] = None,
    input_shape: Annotated[Optional[str], typer.Option(help="Full shape, e.g. 1,3,224,224.")] = None,
    per_layer: Annotated[bool, typer.Option(help="Show the per-layer table.")] = False,
    depth: Annotated[Optional[int], typer.Option(help="Fold the table to this module depth "
                     "(default 2 with --per-layer).")] = None,
    other_ops: Annotated[bool, typer.Option(help="Also count elementwise work (not MACs).")] = False,
    num_classes: NumClassesOpt = None,
    trust_pickle: TrustOpt = False, trust_code: TrustCodeOpt = False,
    model_kwargs: ModelKwargsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Parameters, MACs (FLOPs = 2 x MACs), output shapes and memory, per layer."""
    from ..api import inspect

    if input_size is not None and input_shape is not None:
        raise typer.BadParameter("give --input-size or --input-shape, not both")
    shape = None
    if input_shape is not None:
        shape = tuple(int(v) for v in parse_floats(input_shape, "--input-shape") or ())
    if depth is None and per_layer:
        depth = 2
    report = inspect(model, weights, input_size=parse_size(input_size), input_shape=shape,
                     depth=depth if (per_layer or as_json) else 0, include_other_ops=other_ops,
                     num_classes=num_classes, trust_pickle=trust_pickle, trust_code=trust_code,
                     model_kwargs=parse_model_kwargs(model_kwargs))
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
    elif per_layer:
        console.print(report.to_rich_table(title=escape(f"{model} {report.input_shape}")))
    else:
        for line in report.summary_lines():
            console.print(line, highlight=False, markup=False)


@app.command("export")
def export_cmd(
    model: Annotated[str, typer.Argument(help="torchvision name, pkg.module:factory or model file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The file to write (.onnx, or "
                      ".pt for TorchScript).")],
    weights: Annotated[Optional[str], typer.Option("--weights", "-w", help="Weights file or "
                       "torchvision weights name.")] = None,
    input_size: Annotated[Optional[str], typer.Option(help="N or H,W (default: the weights' "
                          "own input size).")] = None,
    opset: Annotated[Optional[int], typer.Option(help="ONNX opset (default: the exporter's).")] = None,
    dynamic_batch: Annotated[bool, typer.Option(help="Leave the batch axis free.")] = True,
    half: Annotated[bool, typer.Option(help="fp16 weights and inputs (looser, stated tolerance).")] = False,
    export_format: Annotated[str, typer.Option("--format", help="onnx or torchscript.")] = "onnx",
    simplify: Annotated[bool, typer.Option(help="ONNX: simplify with onnxsim, then verify "
                        "the simplified graph (extra: simplify).")] = False,
    verify: Annotated[bool, typer.Option(help="Run PyTorch and ONNX Runtime on photographs "
                      "and compare.")] = True,
    num_classes: NumClassesOpt = None,
    trust_pickle: TrustOpt = False, trust_code: TrustCodeOpt = False,
    model_kwargs: ModelKwargsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Export to ONNX (or TorchScript) with labels and preprocessing embedded, and prove it
    equals PyTorch.

    Exits 1 when verification fails (the file is then kept as <name>.unverified.<ext>).
    """
    from ..api import export
    from ..exporters.onnx import ExportVerificationError
    from ..models.bundled import BUNDLED

    size = parse_size(input_size)
    trust = dict(trust_pickle=trust_pickle, trust_code=trust_code,
                 model_kwargs=parse_model_kwargs(model_kwargs))
    if weights is None and not Path(model).is_file() and model not in BUNDLED:
        err_console.print(f"[yellow]warning:[/] no --weights: exporting {escape(model)} with "
                          "random weights")
    try:
        size2 = (size, size) if isinstance(size, int) else size
        if export_format == "torchscript":
            if half or simplify or opset is not None or not dynamic_batch:
                raise typer.BadParameter("--half, --simplify, --opset and --no-dynamic-batch "
                                         "are ONNX options")
            report = export(model, output, weights, format="torchscript",
                            num_classes=num_classes, input_size=size2, verify=verify, **trust)
        else:
            report = export(model, output, weights, format=export_format,
                            num_classes=num_classes, input_size=size2, opset=opset,
                            dynamic_batch=dynamic_batch, half=half, verify=verify,
                            simplify=simplify, **trust)
    except ExportVerificationError as exc:
        err_console.print(f"[bold red]verification failed:[/] {escape(str(exc))}",
                          highlight=False)
        raise typer.Exit(EXIT_INPUT_FAILED) from None
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
    else:
        console.print(report.summary(), highlight=False, markup=False)


@app.command("bench")
def bench_cmd(
    model: Annotated[str, typer.Argument(help="torchvision name, pkg.module:factory or model file.")],
    weights: Annotated[Optional[str], typer.Option("--weights", "-w")] = None,
    task: Annotated[Optional[str], typer.Option(help="classify, segment or detect (default: "
                    "from the model name).")] = None,
    backend: Annotated[str, typer.Option(help="Comma-separated: torch, torchscript, "
                       "onnxruntime, auto.")] = "torch,torchscript,onnxruntime",
    precision: Annotated[str, typer.Option(help="Comma-separated: fp32, bf16, fp16.")] = "fp32",
    batch: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,16",
    device: DeviceOpt = "auto",
    images: Annotated[int, typer.Option(help="Images streamed per measurement.", min=1)] = 64,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds; the best is kept.", min=1)] = 3,
    input_size: InputSizeOpt = None,
    verify: VerifyBackendOpt = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Images/s of one model per backend x precision x batch, with the ratio to eager fp32."""
    from ..tools.bench import bench, format_report

    task = task or _task_of_name(model)
    try:
        batches = [int(b) for b in batch.split(",")]
    except ValueError:
        raise typer.BadParameter(f"--batch must be comma-separated ints, got {batch!r}") from None
    if min(batches) < 1:
        raise typer.BadParameter(f"--batch sizes must be >= 1, got {batch!r}")
    report = bench(task, model, weights, backends=[b.strip() for b in backend.split(",")],
                   precisions=[p.strip() for p in precision.split(",")], batches=batches,
                   device=device, images=images, rounds=rounds, verify=verify,
                   input_size=parse_size(input_size))
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
        return
    table = Table("backend", "precision", "batch", "img/s", "vs torch fp32", "preprocess ms",
                  "inference ms", "postprocess ms", "note",
                  title=f"{report.model} ({report.task}) on {report.device}: {report.images} "
                        f"images, best of {report.rounds}")
    for row in format_report(report):
        table.add_row(*map(escape, row))
    console.print(table)
    for note in report.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}")


def _task_of_name(model: str) -> str:
    from ..models import torchvision_task

    task = torchvision_task(model)
    if task is None and model.endswith(".onnx") and Path(model).is_file():
        from ..runtime.onnxruntime import load_onnx_model

        task = load_onnx_model(model, device="cpu").task
    if task is None:
        raise typer.BadParameter(f"cannot tell the task of {model}: pass --task")
    return task


@app.command()
def view(
    model: Annotated[str, typer.Argument(help=".onnx file, or a model to export first "
                     "(torchvision name, factory, file) with --weights.")],
    weights: Annotated[Optional[str], typer.Option("--weights", "-w")] = None,
    port: Annotated[int, typer.Option(help="Port on localhost.")] = 8080,
    browser: Annotated[bool, typer.Option(help="Open a browser tab.")] = True,
) -> None:
    """Show the network graph in Netron (pip install 'torchinfer[view]'), on localhost."""
    from ..tools.viewer import serve

    url = serve(model, weights, port=port, browse=browser, console=err_console)
    console.print(f"Netron: {url}  (Ctrl-C to stop)", highlight=False, markup=False)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


@app.command()
def demo(out: Annotated[Path, typer.Option(help="Where the results go.")] = Path("runs/demo")) -> None:
    """Run the main job on the bundled images and write results you can look at."""
    from ..tools.demo import run_demo

    summaries = run_demo(out, console=console)
    if any(s.failed for s in summaries):
        raise typer.Exit(EXIT_INPUT_FAILED)


@predict_app.command("classify")
def predict_classify(
    sources: Sources, model: ModelOpt, weights: WeightsOpt = None,
    num_classes: NumClassesOpt = None, labels: LabelsOpt = None,
    input_size: InputSizeOpt = None, mean: MeanOpt = None, std: StdOpt = None,
    top_k: Annotated[int, typer.Option(help="Classes per image.", min=1)] = 5,
    multi_label: Annotated[bool, typer.Option(help="Sigmoid per class instead of softmax.")] = False,
    device: DeviceOpt = "auto", batch_size: BatchOpt = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/classify"),
    save_vis: SaveVisOpt = False, trust_pickle: TrustOpt = False, strict: StrictOpt = True,
    max_pixels: MaxPixelsOpt = None, allow_failures: AllowFailuresOpt = False,
    quiet: QuietOpt = False, backend: BackendOpt = "torch", precision: PrecisionOpt = "fp32",
    verify_backend: VerifyBackendOpt = True, resume: ResumeOpt = False,
    video_stride: VideoStrideOpt = 1, decode_workers: DecodeWorkersOpt = None,
    exist_ok: ExistOkOpt = False, trust_code: TrustCodeOpt = False,
    model_kwargs: ModelKwargsOpt = None,
    jpeg_draft: Annotated[bool, typer.Option(help="Decode big JPEGs at 1/2-1/8 scale (libjpeg "
                          "DCT scaling), verified against a full decode on photographs: "
                          "faster, pixels not identical to torchvision's.")] = False,
) -> None:
    """Classify images: top-k labels and scores per image, one JSONL line per input."""
    def row(result) -> tuple[str, str]:
        return result.top1.label, f"{result.top1.score:.4f}"

    _predict("classify", sources, out, quiet, allow_failures, ("top-1", "score"), row,
             load_options(model=model, weights=weights, device=device, num_classes=num_classes,
                          labels=labels, input_size=input_size, mean=mean,
                          std=std, strict=strict, trust_pickle=trust_pickle,
                          trust_code=trust_code, model_kwargs=model_kwargs, top_k=top_k,
                          multi_label=multi_label, batch_size=batch_size,
                          max_pixels=max_pixels, backend=backend, precision=precision,
                          verify_backend=verify_backend, decode_workers=decode_workers,
                          jpeg_draft=jpeg_draft),
             save_vis=save_vis, resume=resume, exist_ok=exist_ok, video_stride=video_stride)


@predict_app.command("segment")
def predict_segment(
    sources: Sources, model: ModelOpt, weights: WeightsOpt = None,
    num_classes: NumClassesOpt = None, labels: LabelsOpt = None,
    input_size: InputSizeOpt = None, mean: MeanOpt = None, std: StdOpt = None,
    device: DeviceOpt = "auto", batch_size: BatchOpt = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/segment"),
    save_vis: SaveVisOpt = False,
    save_masks: Annotated[bool, typer.Option(help="Write masks/<name>.png: class indices as a "
                          "palette PNG (VOC colours).")] = False,
    trust_pickle: TrustOpt = False, strict: StrictOpt = True, max_pixels: MaxPixelsOpt = None,
    allow_failures: AllowFailuresOpt = False, quiet: QuietOpt = False,
    backend: BackendOpt = "torch", precision: PrecisionOpt = "fp32",
    verify_backend: VerifyBackendOpt = True, resume: ResumeOpt = False,
    video_stride: VideoStrideOpt = 1, decode_workers: DecodeWorkersOpt = None,
    exist_ok: ExistOkOpt = False, trust_code: TrustCodeOpt = False,
    model_kwargs: ModelKwargsOpt = None,
) -> None:
    """Segment images: a class per pixel at the original size; class areas in the JSONL."""
    def row(result) -> tuple[str, str]:
        return ", ".join(f"{a.label} {a.fraction:.0%}" for a in result.areas[:4]), \
            f"{result.size[1]}x{result.size[0]}"

    _predict("segment", sources, out, quiet, allow_failures, ("classes (area)", "size"), row,
             load_options(model=model, weights=weights, device=device, num_classes=num_classes,
                          labels=labels, input_size=input_size, mean=mean,
                          std=std, strict=strict, trust_pickle=trust_pickle,
                          trust_code=trust_code, model_kwargs=model_kwargs,
                          batch_size=batch_size, max_pixels=max_pixels, backend=backend,
                          precision=precision, verify_backend=verify_backend,
                          decode_workers=decode_workers),
             save_vis=save_vis, save_masks=save_masks, resume=resume, exist_ok=exist_ok,
             video_stride=video_stride)


@predict_app.command("detect")
def predict_detect(
    sources: Sources, model: ModelOpt, weights: WeightsOpt = None,
    num_classes: NumClassesOpt = None, labels: LabelsOpt = None,
    input_size: Annotated[Optional[str], typer.Option(help="Raw-tensor (YOLO) models: the "
                          "letterbox size, N or H,W (default 640).")] = None,
    conf: Annotated[float, typer.Option(help="Minimum score kept.", min=0.0, max=1.0)] = 0.25,
    iou: Annotated[float, typer.Option(help="NMS IoU threshold (raw-tensor models).", min=0.0,
                                       max=1.0)] = 0.45,
    max_det: Annotated[int, typer.Option(help="Most detections per image.", min=1)] = 300,
    classes: Annotated[Optional[str], typer.Option(help="Keep only these class ids, e.g. 0,2.")] = None,
    decoder: Annotated[str, typer.Option(help="auto, torchvision, yolov5 or yolov8.")] = "auto",
    device: DeviceOpt = "auto", batch_size: BatchOpt = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/detect"),
    save_vis: SaveVisOpt = False,
    save_masks: Annotated[bool, typer.Option(help="Write masks/<name>.png: instance i as "
                          "value i + 1 (models with masks).")] = False,
    trust_pickle: TrustOpt = False, strict: StrictOpt = True, max_pixels: MaxPixelsOpt = None,
    allow_failures: AllowFailuresOpt = False, quiet: QuietOpt = False,
    backend: BackendOpt = "torch", precision: PrecisionOpt = "fp32",
    verify_backend: VerifyBackendOpt = True, resume: ResumeOpt = False,
    video_stride: VideoStrideOpt = 1, decode_workers: DecodeWorkersOpt = None,
    exist_ok: ExistOkOpt = False, trust_code: TrustCodeOpt = False,
    model_kwargs: ModelKwargsOpt = None,
) -> None:
    """Detect objects: boxes in original pixels, JSONL plus coco_results.json."""
    def row(result) -> tuple[str, str]:
        best = ", ".join(f"{result.labels[i]} {result.scores[i]:.2f}" for i in range(min(3, len(result))))
        return str(len(result)), best

    class_ids = parse_class_ids(classes)
    _predict("detect", sources, out, quiet, allow_failures, ("objects", "best"), row,
             load_options(model=model, weights=weights, device=device, num_classes=num_classes,
                          labels=labels, input_size=input_size, strict=strict,
                          trust_pickle=trust_pickle, trust_code=trust_code,
                          model_kwargs=model_kwargs, conf=conf, iou=iou, max_det=max_det,
                          classes=class_ids, decoder=decoder, batch_size=batch_size,
                          max_pixels=max_pixels, backend=backend, precision=precision,
                          verify_backend=verify_backend, decode_workers=decode_workers),
             save_vis=save_vis, save_masks=save_masks, resume=resume, exist_ok=exist_ok,
             video_stride=video_stride)


def _predict(task: str, sources: list[str], out: Path, quiet: bool, allow_failures: bool,
             columns: tuple[str, str], describe, load_args: dict, **save) -> None:
    """Load, run over the sources with a progress bar, print a table, exit with the code."""
    from ..api import load

    model, weights = load_args.pop("model"), load_args.pop("weights")
    fingerprint = _fingerprint(load_args)
    predictor = load(task, model, weights, **load_args)
    if predictor.model.random_init and not quiet:
        err_console.print(f"[yellow]warning:[/] {escape(model)} has no weights: randomly initialised, "
                          "its predictions are meaningless (pass --weights)")
    rows: list[tuple[str, ...]] = []

    def show(result) -> None:
        if len(rows) < 50:
            ms = f"{sum(result.speed.values()):.1f}"
            rows.append((escape(result.source), *map(escape, describe(result)), ms) if result.ok
                        else (escape(result.source), "[red]failed[/]", "",
                              escape(result.error or "")))

    try:
        summary = _run_with_progress(predictor, sources, out, quiet, show,
                                     run_info={"task": task, "model": model, "weights": weights,
                                               "device": str(predictor.device)},
                                     fingerprint=fingerprint, **save)
    except KeyboardInterrupt:
        err_console.print(f"interrupted: every finished input is in {escape(str(out))}/predictions.jsonl."
                          "partial; the same command with --resume runs only the rest",
                          highlight=False)
        raise typer.Exit(130) from None
    if predictor.backend_report is not None and not quiet:
        err_console.print(predictor.backend_report.summary(), highlight=False, markup=False)
    if not quiet:
        table = Table("source", *columns, "ms/img", title=task)
        for r in rows:
            table.add_row(*r)
        if summary.total > len(rows):
            table.caption = escape(f"first {len(rows)} of {summary.total} rows; all in "
                                   f"{out}/predictions.jsonl")
        console.print(table)
    _finish(summary, out, allow_failures, quiet)


# Options that change how fast a run goes, not its answers: a resumed run may change them.
_SPEED_ONLY = frozenset({"device", "batch_size", "decode_workers", "verify_backend"})


def _fingerprint(load_args: dict) -> dict:
    """The options that decide a run's answers, as JSON: what --resume must find unchanged."""
    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return str(value) if isinstance(value, Path) else value

    return {k: plain(v) for k, v in sorted(load_args.items())
            if k not in _SPEED_ONLY and v is not None}


def _run_with_progress(predictor, sources, out, quiet, on_result, run_info, **save):
    """run_to_dir with a progress bar on a terminal, JSON progress lines on stderr otherwise
    (logs, pipes: every 2 s), nothing with --quiet."""
    from ..runner.run import count_inputs, run_to_dir

    total = count_inputs(sources, out, save.get("video_stride", 1))
    if quiet or total <= predictor.batch_size:
        return run_to_dir(predictor, sources, out, on_result=on_result, run_info=run_info, **save)
    start = time.perf_counter()
    done = 0
    if not err_console.is_terminal:
        last = [start]

        def line(result) -> None:
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

        def tick(result) -> None:
            nonlocal done
            on_result(result)
            done += 1
            progress.update(bar, advance=1, rate=done / max(time.perf_counter() - start, 1e-9))

        return run_to_dir(predictor, sources, out, on_result=tick, run_info=run_info, **save)


def _finish(summary, out: Path, allow_failures: bool, quiet: bool) -> None:
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


from .evaluate import eval_app  # noqa: E402  (torchinfer eval classify|segment|detect)

app.add_typer(eval_app, name="eval")


if __name__ == "__main__":
    main()
