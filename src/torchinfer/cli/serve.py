"""``torchinfer serve``: the models behind HTTP (torchinfer.serve), until SIGTERM or Ctrl-C."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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
from .serve_params import (
    AccessLogOpt,
    AddressOpt,
    ApiKeyOpt,
    ConfigOpt,
    DecodeThreadsOpt,
    EngineOpt,
    GpusPerReplicaOpt,
    GrpcPortOpt,
    HostOpt,
    IndexOpt,
    MaxBatchOpt,
    MaxBodyOpt,
    MaxDelayOpt,
    MaxQueueOpt,
    ModelProcessesOpt,
    ModelsOpt,
    ModelThreadsOpt,
    ModelWorkersOpt,
    PortOpt,
    ProxiesOpt,
    ReplicasOpt,
    RepositoryOpt,
    TimeoutOpt,
    WarmupOpt,
)

if TYPE_CHECKING:  # imported where used: --help imports none of the server
    from ..serve.config import IndexSpec, ModelSpec, ServeConfig


def serve(
    model: ModelsOpt = None, model_repository: RepositoryOpt = None, index: IndexOpt = None,
    config: ConfigOpt = None, host: HostOpt = None, port: PortOpt = None,
    grpc_port: GrpcPortOpt = None, api_key: ApiKeyOpt = None,
    max_batch_size: MaxBatchOpt = None, max_delay_ms: MaxDelayOpt = None,
    max_queue: MaxQueueOpt = None, timeout: TimeoutOpt = None, max_body_mb: MaxBodyOpt = None,
    decode_threads: DecodeThreadsOpt = None, model_threads: ModelThreadsOpt = None,
    model_workers: ModelWorkersOpt = None, model_processes: ModelProcessesOpt = None,
    device: DeviceOpt = "auto", batch_size: BatchOpt = None, backend: BackendOpt = None,
    precision: PrecisionOpt = None, verify_backend: VerifyBackendOpt = True,
    max_pixels: MaxPixelsOpt = None, trust_pickle: TrustOpt = False,
    trust_code: TrustCodeOpt = False, warmup: WarmupOpt = True, access_log: AccessLogOpt = False,
    engine: EngineOpt = "local", address: AddressOpt = None, replicas: ReplicasOpt = 1,
    gpus_per_replica: GpusPerReplicaOpt = 0.0, proxies: ProxiesOpt = "every-node",
) -> None:
    """Serve models over HTTP: dynamic batching, Open Inference Protocol v2, /metrics, a web
    page at /. Binds 127.0.0.1 unless told otherwise; SIGTERM drains requests in flight."""
    from ..errors import TorchinferError
    from ..serve.config import ServeConfig, check_address, read_config

    _check_engine(engine, address=address, replicas=replicas,
                  gpus_per_replica=gpus_per_replica, proxies=proxies, grpc_port=grpc_port,
                  model_repository=model_repository)
    base = read_config(config) if config is not None else ServeConfig(models=())
    api_key = api_key or os.environ.get("TORCHINFER_API_KEY") or None
    check_address(host or base.host, api_key)  # at once, before torch is imported

    shared: dict[str, Any] = {"device": device, "backend": backend, "precision": precision,
                              "verify_backend": verify_backend, "trust_pickle": trust_pickle,
                              "trust_code": trust_code}
    if batch_size is not None:
        shared["batch_size"] = batch_size
    settings = base.with_overrides(
        models=_model_specs(base, model or (), shared),
        indexes=_index_specs(base, index or ()), host=host, grpc_port=grpc_port,
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


def _check_engine(engine: str, *, address: str | None, replicas: int, gpus_per_replica: float,
                  proxies: str, grpc_port: int | None,
                  model_repository: list[str] | None) -> None:
    """Refuse the options the chosen engine does not take."""
    from ..errors import OptionError

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


def _model_specs(base: ServeConfig, models: Sequence[str], shared: dict[str, Any]
                 ) -> tuple[ModelSpec, ...]:
    """The config file's models, then the command line's, each with the command line's
    loading options (``shared``) under its own (a model's own options, from the file, win)."""
    from ..manifests import task_names
    from ..serve.config import ModelSpec

    specs = list(base.models) + [ModelSpec.parse(m, task_names()) for m in models]
    return tuple(ModelSpec(model=s.model, task=s.task, name=s.name, weights=s.weights,
                           options={**shared, **s.options}, max_batch_size=s.max_batch_size,
                           max_delay_ms=s.max_delay_ms) for s in specs)


def _index_specs(base: ServeConfig, indexes: Sequence[str]) -> tuple[IndexSpec, ...]:
    """The config file's search indexes, then the command line's."""
    from ..serve.config import IndexSpec

    return tuple(base.indexes) + tuple(IndexSpec.parse(i) for i in indexes)


def run_server(settings: ServeConfig, *, access_log: bool = False) -> list[str]:
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
