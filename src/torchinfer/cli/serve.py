"""``torchinfer serve``: the models behind HTTP (torchinfer.serve), until SIGTERM or Ctrl-C."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .params import (
    BackendOpt,
    BatchOpt,
    DeviceOpt,
    MaxPixelsOpt,
    PrecisionOpt,
    TrustCodeOpt,
    TrustOpt,
    VerifyBackendOpt,
    err_console,
)

DEFAULT_PORT = 8000


def serve(
    model: Annotated[Optional[list[str]], typer.Option(
        "--model", "-m", help="A model to serve, repeatable: [NAME=][TASK:]MODEL, e.g. "
        "shapes_detector, detect:shapes_detector, fast=classify:net.onnx (the task is read "
        "from the model's metadata when omitted).")] = None,
    model_repository: Annotated[Optional[list[str]], typer.Option(
        "--model-repository", help="A folder of models that may be loaded and unloaded on "
        "request (POST /v2/repository/models/NAME/load), repeatable; nothing else is.")] = None,
    index: Annotated[Optional[list[str]], typer.Option(
        "--index", help="A predict embed output folder to search at /v1/search, repeatable: "
        "[NAME=]RUN_DIR; the model that made it must be served too.")] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", "-c", help="A JSON or YAML file: models (model, task, name, weights, "
        "options) and limits; command-line options override its limits.")] = None,
    host: Annotated[Optional[str], typer.Option(help="Address to bind (default 127.0.0.1; any "
                    "other needs an API key).")] = None,
    port: Annotated[Optional[int], typer.Option(help=f"Port (default {DEFAULT_PORT}).")] = None,
    grpc_port: Annotated[Optional[int], typer.Option(
        help="Also serve the Open Inference Protocol over gRPC on this port (Triton's is "
        "8001; off unless given), with the same models, limits and key.")] = None,
    api_key: Annotated[Optional[str], typer.Option(
        envvar="TORCHINFER_API_KEY", show_envvar=True, show_default=False,
        help="Key every request but liveness must send (Authorization: Bearer KEY); "
        "prefer the environment variable, which other users cannot read in ps.")] = None,
    max_batch_size: Annotated[Optional[int], typer.Option(
        help="Most requests per model call (default: the model's batch size).", min=1)] = None,
    max_delay_ms: Annotated[Optional[float], typer.Option(
        help="How long an idle model waits to fill a batch (default 2).", min=0)] = None,
    max_queue: Annotated[Optional[int], typer.Option(
        help="Requests in progress per model before 503 (default 128).", min=1)] = None,
    timeout: Annotated[Optional[float], typer.Option(
        help="Seconds a request may take before 504 (default 30).", min=0.001)] = None,
    max_body_mb: Annotated[Optional[float], typer.Option(
        help="Largest request body in MB (default 20).", min=0.001)] = None,
    decode_threads: Annotated[Optional[int], typer.Option(
        help="Threads decoding requests per model, beside the model (default: as predict "
        "shares the cores; 0: the model's worker decodes what it takes, in turn).",
        min=0)] = None,
    model_threads: Annotated[Optional[int], typer.Option(
        help="Torch threads of each model worker (default: as predict shares the cores, "
        "leaving one to HTTP and decoding on a CPU).", min=1)] = None,
    model_workers: Annotated[Optional[int], typer.Option(
        help="Batches of each model run at once, each on --model-threads (default: on a CPU "
        "the cores left after one for HTTP and decoding, over the model threads: 1 on 2 "
        "cores; 1 on a GPU).", min=1)] = None,
    model_processes: Annotated[Optional[int], typer.Option(
        help="Processes running each model, each decoding and batching its share of the "
        "requests (default 1; 0: run the model in the server's process, on threads).",
        min=0)] = None,
    device: DeviceOpt = "auto", batch_size: BatchOpt = None, backend: BackendOpt = None,
    precision: PrecisionOpt = None, verify_backend: VerifyBackendOpt = True,
    max_pixels: MaxPixelsOpt = None, trust_pickle: TrustOpt = False,
    trust_code: TrustCodeOpt = False,
    warmup: Annotated[bool, typer.Option(help="Run photographs through each model before "
                      "it is ready (and measure the core split, as predict does).")] = True,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
    engine: Annotated[str, typer.Option(help="local: this process; ray: Ray Serve replicas "
                      "of the same app (the ray extra).")] = "local",
    address: Annotated[Optional[str], typer.Option(help="--engine ray: the Ray cluster (auto, "
                       "ray://host:10001); default a private local Ray.")] = None,
    replicas: Annotated[int, typer.Option(help="--engine ray: replicas, each holding every "
                        "model.", min=1)] = 1,
    gpus_per_replica: Annotated[float, typer.Option(help="--engine ray: GPUs per replica.",
                                                    min=0.0)] = 0.0,
    proxies: Annotated[str, typer.Option(help="--engine ray: where Ray's HTTP proxies run: "
                       "every-node (each node with a replica: any node is an entry point) "
                       "or head (one entry point; several nodes on one machine cannot share "
                       "a port).")] = "every-node",
) -> None:
    """Serve models over HTTP: dynamic batching, Open Inference Protocol v2, /metrics, a web
    page at /. Binds 127.0.0.1 unless told otherwise; SIGTERM drains requests in flight."""
    from ..errors import OptionError, TorchinferError
    from ..manifests import task_names
    from ..serve.config import IndexSpec, ModelSpec, ServeConfig, check_address, read_config

    if engine not in ("local", "ray"):
        raise OptionError(f"--engine must be local or ray, got {engine!r}")
    if engine == "local" and (address is not None or replicas != 1 or gpus_per_replica
                              or proxies != "every-node"):
        raise OptionError("--address, --replicas, --gpus-per-replica and --proxies need "
                          "--engine ray")
    if engine == "ray" and (grpc_port is not None or model_repository):
        # (a load request would reach one replica of several)
        raise OptionError("--grpc-port and --model-repository are served by --engine local "
                          "only")

    base = read_config(config) if config is not None else ServeConfig(models=())
    api_key = api_key or os.environ.get("TORCHINFER_API_KEY") or None
    check_address(host or base.host, api_key)  # at once, before torch is imported

    specs = list(base.models) + [ModelSpec.parse(m, task_names()) for m in model or ()]
    shared: dict[str, Any] = {"device": device, "backend": backend, "precision": precision,
                              "verify_backend": verify_backend, "trust_pickle": trust_pickle,
                              "trust_code": trust_code}
    if batch_size is not None:
        shared["batch_size"] = batch_size
    # a model's own options (from the file) win over the command line's
    specs = [ModelSpec(model=s.model, task=s.task, name=s.name, weights=s.weights,
                       options={**shared, **s.options}, max_batch_size=s.max_batch_size,
                       max_delay_ms=s.max_delay_ms) for s in specs]
    indexes = tuple(base.indexes) + tuple(IndexSpec.parse(i) for i in index or ())
    settings = base.with_overrides(
        models=tuple(specs), indexes=indexes, host=host, grpc_port=grpc_port,
        model_repository=tuple(base.model_repository) + tuple(model_repository or ()),
        port=port, max_batch_size=max_batch_size,
        max_delay_ms=max_delay_ms, max_queue=max_queue, timeout_s=timeout,
        max_body_bytes=int(max_body_mb * 1024 * 1024) if max_body_mb else None,
        decode_threads=decode_threads, model_threads=model_threads,
        model_workers=model_workers, model_processes=model_processes, max_pixels=max_pixels,
        warmup=None if warmup else False,
        api_key=api_key).check()
    if engine == "ray":  # the same app in Ray Serve replicas (torchinfer.distributed.serve)
        from ..distributed.serve import Replicas
        from ..distributed.serve import run as run_on_ray

        run_on_ray(settings, Replicas(replicas, cpus_per_replica=1.0,
                                      gpus_per_replica=gpus_per_replica, proxies=proxies),
                   address=address)
        return
    failures = run_server(settings, access_log=access_log)
    if failures:
        raise TorchinferError(failures[0])


def run_server(settings: Any, *, access_log: bool = False) -> list[str]:
    """Serve until SIGTERM / Ctrl-C (uvicorn waits for the requests in flight, then the app
    drains its queues); a model that fails to load, or whose process dies, stops the server
    (exit code 2, the reason on one line), so that a supervisor starts it again. Returns
    those reasons (none after a plain stop)."""
    import uvicorn

    from ..serve.app import build_app
    from ..serve.server import Server

    holder: list[Any] = []
    failures: list[str] = []

    def failed(message: str) -> None:
        failures.append(message)
        if holder:
            holder[0].should_exit = True

    server = Server(settings, on_failure=failed)
    app = build_app(settings, server)
    where = f"http://{settings.host}:{settings.port}"
    err_console.print(f"serving {', '.join(server.holders)} on {where} (page {where}/, "
                      f"metrics {where}/metrics); loading...", highlight=False)
    uv = uvicorn.Server(uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="info",
        access_log=access_log, timeout_graceful_shutdown=int(settings.timeout_s) + 5,
        server_header=False))
    holder.append(uv)
    uv.run()
    return failures
