"""The typer declarations of the options only ``torchinfer serve`` takes (params.py holds the
ones several commands share). Nothing here imports torch: ``serve --help`` stays quick."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

DEFAULT_PORT = 8000

# --- what is served -------------------------------------------------------------------------
ModelsOpt = Annotated[Optional[list[str]], typer.Option(
    "--model", "-m", help="A model to serve, repeatable: MODEL, TASK:MODEL, NAME=MODEL or NAME=TASK:MODEL, e.g. "
    "shapes_detector, detect:shapes_detector, fast=classify:net.onnx (the task is read "
    "from the model's metadata when omitted).")]
RepositoryOpt = Annotated[Optional[list[str]], typer.Option(
    "--model-repository", help="A folder of models that may be loaded and unloaded on "
    "request (POST /v2/repository/models/NAME/load), repeatable; nothing else is.")]
IndexOpt = Annotated[Optional[list[str]], typer.Option(
    "--index", help="A predict embed output folder to search at /v1/search, repeatable: "
    "[NAME=]RUN_DIR; the model that made it must be served too.")]
ConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", "-c", help="A JSON or YAML file: models (model, task, name, weights, "
    "options) and limits; command-line options override its limits.")]

# --- where, and who may ask -----------------------------------------------------------------
HostOpt = Annotated[Optional[str], typer.Option(help="Address to bind (default 127.0.0.1; any "
                    "other needs an API key).")]
PortOpt = Annotated[Optional[int], typer.Option(help=f"Port (default {DEFAULT_PORT}).")]
GrpcPortOpt = Annotated[Optional[int], typer.Option(
    help="Also serve the Open Inference Protocol over gRPC on this port (Triton's is "
    "8001; off unless given), with the same models, limits and key.")]
ApiKeyOpt = Annotated[Optional[str], typer.Option(
    envvar="TORCHINFER_API_KEY", show_envvar=True, show_default=False,
    help="Key every request but liveness must send (Authorization: Bearer KEY); "
    "prefer the environment variable, which other users cannot read in ps.")]

# --- limits and batching --------------------------------------------------------------------
MaxBatchOpt = Annotated[Optional[int], typer.Option(
    help="Most requests per model call (default: the model's batch size).", min=1)]
MaxDelayOpt = Annotated[Optional[float], typer.Option(
    help="How long an idle model waits to fill a batch (default 2).", min=0)]
MaxQueueOpt = Annotated[Optional[int], typer.Option(
    help="Requests in progress per model before 503 (default 128).", min=1)]
TimeoutOpt = Annotated[Optional[float], typer.Option(
    help="Seconds a request may take before 504 (default 30).", min=0.001)]
MaxBodyOpt = Annotated[Optional[float], typer.Option(
    help="Largest request body in MB (default 20).", min=0.001)]

# --- how the cores are shared ---------------------------------------------------------------
DecodeThreadsOpt = Annotated[Optional[int], typer.Option(
    help="Threads decoding requests per model, beside the model (default: as predict "
    "shares the cores; 0: the model's worker decodes what it takes, in turn).", min=0)]
ModelThreadsOpt = Annotated[Optional[int], typer.Option(
    help="Torch threads of each model worker (default: as predict shares the cores, "
    "leaving one to HTTP and decoding on a CPU).", min=1)]
ModelWorkersOpt = Annotated[Optional[int], typer.Option(
    help="Batches of each model run at once, each on --model-threads (default: on a CPU "
    "the cores left after one for HTTP and decoding, over the model threads: 1 on 2 "
    "cores; 1 on a GPU).", min=1)]
ModelProcessesOpt = Annotated[Optional[int], typer.Option(
    help="Processes running each model, each decoding and batching its share of the "
    "requests (default 1; 0: run the model in the server's process, on threads).", min=0)]
WarmupOpt = Annotated[bool, typer.Option(help="Run photographs through each model before "
                      "it is ready (and measure the core split, as predict does).")]
AccessLogOpt = Annotated[bool, typer.Option(help="Log every request.")]

# --- Ray Serve ------------------------------------------------------------------------------
EngineOpt = Annotated[str, typer.Option(help="local: this process; ray: Ray Serve replicas "
                      "of the same app (the ray extra).")]
AddressOpt = Annotated[Optional[str], typer.Option(help="--engine ray: the Ray cluster (auto, "
                       "ray://host:10001); default a private local Ray.")]
ReplicasOpt = Annotated[int, typer.Option(help="--engine ray: replicas, each holding every "
                        "model.", min=1)]
GpusPerReplicaOpt = Annotated[float, typer.Option(help="--engine ray: GPUs per replica.",
                                                  min=0.0)]
ProxiesOpt = Annotated[str, typer.Option(help="--engine ray: where Ray's HTTP proxies run: "
                       "every-node (each node with a replica: any node is an entry point) "
                       "or head (one entry point; several nodes on one machine cannot share "
                       "a port).")]
