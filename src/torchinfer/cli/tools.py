"""The commands around prediction: ``env``, ``models``, ``inspect``, ``export``, ``bench``,
``view`` and ``demo``. ``app.py`` registers them, in the order of :data:`COMMANDS`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .options import BenchOptions, ExportOptions, InspectOptions
from .params import (
    EXIT_INPUT_FAILED,
    DeviceOpt,
    InputSizeOpt,
    JsonOpt,
    ModelKwargsOpt,
    NumClassesOpt,
    TrustCodeOpt,
    TrustOpt,
    VerifyBackendOpt,
    WeightsOpt,
    console,
    err_console,
    parsed,
)

ModelArg = Annotated[str, typer.Argument(help="torchvision name, pkg.module:factory or model file.")]


def env(as_json: JsonOpt = False) -> None:
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


def models(
    task: Annotated[Optional[str], typer.Option(help="classify, segment or detect.")] = None,
    as_json: JsonOpt = False,
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


def inspect_cmd(
    model: ModelArg,
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
    as_json: JsonOpt = False,
) -> None:
    """Parameters, MACs (FLOPs = 2 x MACs), output shapes and memory, per layer."""
    options = parsed(InspectOptions.from_cli, **locals())
    from ..api import inspect

    report = inspect(options.model, options.weights, **options.inspect_kwargs())
    if options.as_json:
        console.print_json(json.dumps(report.to_dict()))
    elif options.per_layer:
        console.print(report.to_rich_table(title=escape(f"{options.model} {report.input_shape}")))
    else:
        for line in report.summary_lines():
            console.print(line, highlight=False, markup=False)


def export_cmd(
    model: ModelArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="The file to write (.onnx, "
                      ".pt for TorchScript, .xml for OpenVINO: its .bin goes beside it).")],
    weights: Annotated[Optional[str], typer.Option("--weights", "-w", help="Weights file or "
                       "torchvision weights name.")] = None,
    input_size: Annotated[Optional[str], typer.Option(help="N or H,W (default: the weights' "
                          "own input size).")] = None,
    opset: Annotated[Optional[int], typer.Option(help="ONNX opset (default: the exporter's).")] = None,
    dynamic_batch: Annotated[bool, typer.Option(help="Leave the batch axis free.")] = True,
    half: Annotated[bool, typer.Option(help="fp16 weights and inputs (looser, stated tolerance).")] = False,
    export_format: Annotated[str, typer.Option("--format", help="onnx, torchscript or "
                                               "openvino (an IR, extra: openvino).")] = "onnx",
    simplify: Annotated[bool, typer.Option(help="ONNX: simplify with onnxsim, then verify "
                        "the simplified graph (extra: simplify).")] = False,
    verify: Annotated[bool, typer.Option(help="Run PyTorch and the file's runtime on "
                      "photographs and compare.")] = True,
    num_classes: NumClassesOpt = None,
    trust_pickle: TrustOpt = False, trust_code: TrustCodeOpt = False,
    model_kwargs: ModelKwargsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Export to ONNX (or TorchScript, or OpenVINO IR) with labels and preprocessing embedded,
    and prove it equals PyTorch.

    Exits 1 when verification fails (the file is then kept as <name>.unverified.<ext>).
    """
    options = parsed(ExportOptions.from_cli, **locals())
    from ..api import export
    from ..exporters.onnx import ExportVerificationError
    from ..models.loader import holds_weights

    if options.weights is None and not holds_weights(options.model):
        err_console.print(f"[yellow]warning:[/] no --weights: exporting {escape(options.model)} "
                          "with random weights")
    try:
        report = export(options.model, options.output, options.weights, **options.export_kwargs())
    except ExportVerificationError as exc:
        err_console.print(f"[bold red]verification failed:[/] {escape(str(exc))}",
                          highlight=False)
        raise typer.Exit(EXIT_INPUT_FAILED) from None
    if options.as_json:
        console.print_json(json.dumps(report.to_dict()))
    else:
        console.print(report.summary(), highlight=False, markup=False)


def bench_cmd(
    model: ModelArg,
    weights: WeightsOpt = None,
    task: Annotated[Optional[str], typer.Option(help="classify, segment or detect (default: "
                    "from the model name).")] = None,
    backend: Annotated[str, typer.Option(help="Comma-separated: auto (the default every "
                       "command gets), torch, torchscript, onnxruntime, openvino, or a "
                       "plugin's.")] = "auto,torch,torchscript,onnxruntime,openvino",
    precision: Annotated[str, typer.Option(help="Comma-separated: fp32, bf16, fp16 (auto "
                         "always runs at auto).")] = "fp32,bf16",
    batch: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,16",
    device: DeviceOpt = "auto",
    images: Annotated[int, typer.Option(help="Images streamed per measurement.", min=1)] = 64,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds; the best is kept.", min=1)] = 3,
    input_size: InputSizeOpt = None,
    verify: VerifyBackendOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Images/s of one model per backend x precision x batch, with the ratio to eager fp32."""
    options = parsed(BenchOptions.from_cli, **locals())
    if options.task is None:
        options = replace(options, task=_task_of_name(options.model))
    from ..tools.bench import bench, format_report

    report = bench(**options.bench_kwargs())
    if options.as_json:
        console.print_json(json.dumps(report.to_dict()))
        return
    table = Table("backend", "precision", "batch", "img/s", "vs torch fp32", "preprocess ms",
                  "inference ms", "postprocess ms", "note",
                  title=f"{report.model} ({report.task}) on {report.device}: {report.images} "
                        f"images, best of {report.rounds}", caption=escape(report.cpu))
    for row in format_report(report):
        table.add_row(*map(escape, row))
    console.print(table)
    for note in report.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}")


def _task_of_name(model: str) -> str:
    from ..models import model_task

    task = model_task(model)
    if task is None and model.endswith(".onnx") and Path(model).is_file():
        from ..models.onnx import load_onnx_model

        task = load_onnx_model(model, device="cpu").task
    if task is None:
        raise typer.BadParameter(f"cannot tell the task of {model}: pass --task")
    return task


def view(
    model: Annotated[str, typer.Argument(help=".onnx file, or a model to export first "
                     "(torchvision name, factory, file) with --weights.")],
    weights: WeightsOpt = None,
    port: Annotated[int, typer.Option(help="Port on localhost.")] = 8080,
    browser: Annotated[bool, typer.Option(help="Open a browser tab.")] = True,
) -> None:
    r"""Show the network graph in Netron (pip install 'torchinfer\[view]'), on localhost."""
    from ..tools.viewer import serve

    url = serve(model, weights, port=port, browse=browser, console=err_console)
    console.print(f"Netron: {url}  (Ctrl-C to stop)", highlight=False, markup=False)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def demo(out: Annotated[Path, typer.Option(help="Where the results go.")] = Path("runs/demo")) -> None:
    """Run the main job on the bundled images and write results you can look at."""
    from ..tools.demo import run_demo

    summaries = run_demo(out, console=console)
    if any(s.failed for s in summaries):
        raise typer.Exit(EXIT_INPUT_FAILED)


# name -> command, in the order `torchinfer --help` lists them
COMMANDS: dict[str, Callable[..., Any]] = {
    "env": env, "models": models, "inspect": inspect_cmd, "export": export_cmd,
    "bench": bench_cmd, "view": view, "demo": demo,
}
