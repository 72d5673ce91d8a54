"""``torchinfer serve`` on Ray Serve: the local server's app, in replicas.

Each replica runs the app ``torchinfer.serve.build_app`` builds, unchanged: the same
endpoints (``/v1/models/{name}/predict``, the Open Inference Protocol v2, ``/metrics``, the web
page), the same API key on every path but liveness, the same body and pixel caps, queue
bound (503 with Retry-After), request timeout (504) and readiness (false until the models are
loaded). Ray Serve adds replicas (``num_replicas``), placement (CPUs and GPUs per replica) and
its HTTP proxy in front of them.

Batching stays ours (``serve.batcher``), not ``@serve.batch``: it decodes on threads while the
model runs (in the model's own process, started by the replica), bounds its queue and answers
503/504 by the local server's rules, and exports the batch-size and queue-wait metrics;
``@serve.batch`` would batch the raw requests before any of that, and a second batching layer
in front of ours would only add waiting. A replica whose model process died fails Ray's
health check (``check_health``), and Ray replaces it. Ray's own trap
is handled here: a replica admits only ``max_ongoing_requests`` requests at a time (default
5), and batches never fill beyond that (ray-project/ray#43288), so a replica admits as many as
its models' queues hold (``replica_admission``), and Ray's router queue in front of the
replicas is bounded by the same limit, past which Ray answers 503 too.

The replicas build their models themselves from the config (names and paths, never a pickled
model): on a cluster, weights must be readable at the same path on every node.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import OptionError
from ..serve import ServeConfig
from .cluster import ray_session

APP_NAME = "torchinfer"
PROXY_LOCATIONS = {"every-node": "EveryNode", "head": "HeadOnly"}  # ours -> Ray Serve's


class TorchinferReplica:
    """One replica: the local server's FastAPI app for ``config`` (built on the replica, whose
    lifespan loads the models and drains them at shutdown)."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.built_app: Any = None  # not "app": Ray's ingress wrapper has a property of that name

    def __serve_build_asgi_app__(self) -> Any:
        from ..serve import build_app

        self.built_app = build_app(self.config)
        return self.built_app

    def check_health(self) -> None:
        """Ray Serve's periodic question: a replica whose model process died cannot serve
        that model again, so it says so and Ray replaces it."""
        server = self.built_app.state.server if self.built_app is not None else None
        if server is not None and server.broken:
            failed = [h.error for h in server.holders.values() if h.crashed]
            raise RuntimeError("; ".join(str(e) for e in failed))


@dataclass(frozen=True)
class Replicas:
    """How many replicas, what each holds, and how many requests each admits."""

    replicas: int = 1
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    # where Ray's HTTP proxies run: "every-node" (each node with a replica), or "head"
    proxies: str = "every-node"

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise OptionError(f"--replicas must be >= 1, got {self.replicas}")
        if self.proxies not in PROXY_LOCATIONS:
            raise OptionError(f"--proxies must be {' or '.join(PROXY_LOCATIONS)}, got "
                              f"{self.proxies!r}")
        if self.cpus_per_replica <= 0 or self.gpus_per_replica < 0:
            raise OptionError("CPUs per replica must be > 0 and GPUs per replica >= 0")


def replica_admission(config: ServeConfig) -> int:
    """``max_ongoing_requests`` for a replica of ``config``: every request its models' queues
    can hold (so the local limits decide, not Ray's default of 5), and never below twice the
    largest batch, or batches could never fill (ray-project/ray#43288)."""
    batches = [m.max_batch_size or config.max_batch_size or 32 for m in config.models]
    return max(config.max_queue * len(config.models), 2 * max(batches))


def deployment(config: ServeConfig, replicas: Replicas | None = None) -> Any:
    """The Ray Serve application (bound deployment) serving ``config``."""
    from ray import serve

    config = located(config.check())
    replicas = replicas or Replicas()
    admission = replica_admission(config)
    actor_options: dict[str, Any] = {"num_cpus": replicas.cpus_per_replica}
    if replicas.gpus_per_replica:
        actor_options["num_gpus"] = replicas.gpus_per_replica
    ingress = serve.ingress()(TorchinferReplica)
    settings = serve.deployment(
        name=APP_NAME, num_replicas=replicas.replicas, max_ongoing_requests=admission,
        # Ray's router queue, in front of the replicas: bounded like ours (Ray answers 503)
        max_queued_requests=config.max_queue * len(config.models),
        ray_actor_options=actor_options,
        # the app drains its queues at shutdown: give it the server's own patience
        graceful_shutdown_timeout_s=max(5.0, config.timeout_s))
    return settings(ingress).bind(config)


def located(config: ServeConfig) -> ServeConfig:
    """``config`` with its model, weights and labels files named by absolute paths: a replica
    runs in another folder (on a cluster, another machine, where they must exist at the same
    place). Names ("resnet18") stay as they are."""
    from dataclasses import replace

    def where(value: Any) -> Any:
        return os.path.abspath(value) if isinstance(value, str) and os.path.exists(value) \
            else value

    models = tuple(replace(m, model=where(m.model), weights=where(m.weights),
                           options={k: where(v) if k == "labels" else v
                                    for k, v in m.options.items()})
                   for m in config.models)
    return replace(config, models=models)


@contextmanager
def serving(config: ServeConfig, replicas: Replicas | None = None, *,
            address: str | None = None) -> Iterator[str]:
    """Deploy ``config`` on Ray Serve for the duration of the block; yields the base URL.

    ``address``: as ``torchinfer.distributed`` jobs take it (None: a private local Ray, stopped
    afterwards). The proxy listens on ``config.host``:``config.port`` (127.0.0.1 by default;
    another address needs an API key, as for the local server: ``ServeConfig.check``). The
    application is deleted when the block ends.
    """
    config = config.check()
    replicas = replicas or Replicas()
    with ray_session(address):
        from ray import serve

        serve.start(http_options={"host": config.host, "port": config.port,
                                  "request_timeout_s": config.timeout_s + 5},
                    proxy_location=PROXY_LOCATIONS[replicas.proxies])
        try:
            serve.run(deployment(config, replicas), name=APP_NAME, route_prefix="/",
                      blocking=False)
            yield f"http://{config.host}:{config.port}"
        finally:
            serve.delete(APP_NAME)
            if address is None:
                serve.shutdown()


def run(config: ServeConfig, replicas: Replicas | None = None, *,
        address: str | None = None) -> None:
    """``torchinfer serve --engine ray``: serve until Ctrl-C or SIGTERM, then tear down."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with serving(config, replicas, address=address) as url:
            print(f"serving on {url} (Ray Serve, {(replicas or Replicas()).replicas} "
                  "replica(s)); Ctrl-C to stop", flush=True)
            try:
                stop.wait()
            except KeyboardInterrupt:
                pass
    finally:
        signal.signal(signal.SIGTERM, previous)
