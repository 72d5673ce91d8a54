"""One served model as the server's process sees it: its state, its request options, its
admission count, and what runs it.

``ModelHolder`` is the unit a server (this package's FastAPI app, or a Ray Serve replica)
needs: ``load()`` starts the model and waits until it is ready; ``predict_bytes`` checks an
encoded image's type and sends it to the model, which decodes it, batches it with others and
answers; ``close()`` drains. What runs the model is ``model_processes`` processes of its own
(process_client.py; the default, one) or, with 0, threads of this process (local.py). Either
way this module imports no torch: in the default, the server's process never loads it.

Per-request options are checked here (``request_options``: types, ranges, class ids against
the model's labels), before anything is sent, and go with the request as sorted pairs; the
model runs requests with equal options together and never applies one request's options to
another's image (engine.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ..errors import OptionError, TorchinferError
from ..manifests import task_manifest
from ..results import Result
from .batcher import JobTiming, QueueFull
from .config import ModelSpec, ServeConfig
from .metrics import ServerMetrics
from .process_client import ModelProcessClient
from .sniff import sniff_image

log = logging.getLogger("torchinfer.serve")


class ModelRunner(Protocol):
    """What runs a model: a model process (ModelProcessClient) or this process's threads
    (LocalModel)."""

    @property
    def pid(self) -> int | None: ...
    @property
    def depth(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    def start(self) -> None: ...
    def wait_ready(self) -> dict[str, Any]: ...
    def abort_loading(self) -> None: ...
    async def attach(self) -> None: ...
    async def predict(self, data: bytes, name: str, options: Any
                      ) -> tuple[Result, JobTiming]: ...
    async def draw(self, data: bytes, name: str, result: Result) -> bytes: ...
    def close(self, timeout: float | None = None) -> None: ...


class ModelHolder:
    """A model being served. ``state`` is "loading", "ready", "failed" or "closed";
    ``crashed`` is true once a model process died (the holder stays "failed")."""

    def __init__(self, spec: ModelSpec, config: ServeConfig, metrics: ServerMetrics | None = None,
                 on_failure: Callable[[str], None] | None = None):
        self.spec, self.config, self.metrics = spec, config, metrics
        self.on_failure = on_failure
        self.name = spec.name
        self.state = "loading"
        self.error: str | None = None
        self.crashed = False
        self.task: str | None = spec.task
        self.info: dict[str, Any] = {}  # what the model reported once loaded (describe)
        self.runners: list[ModelRunner] = []
        self.load_seconds: float | None = None
        self._start_error: Exception | None = None
        self._admitted = 0
        self._lock = threading.Lock()

    # --- loading --------------------------------------------------------------------------

    def start_loading(self) -> None:
        """Start what runs the model and return at once (a server starts every model's
        processes before waiting for any, so they load side by side)."""
        if self.runners or self._start_error is not None:
            return
        try:
            if self.config.model_processes == 0:
                from .local import LocalModel  # torch, in this process: only when asked for

                self.runners = [LocalModel(self.spec, self.config, self.metrics)]
            else:
                self.runners = [ModelProcessClient(self.spec, self.config, self.metrics,
                                                   on_exit=self._died)
                                for _ in range(self.config.model_processes)]
            for runner in self.runners:
                runner.start()
        except Exception as exc:  # reported by load()
            self._start_error = exc

    def load(self) -> None:
        """Start the model and wait until it is ready; on a failure ``state`` is "failed",
        ``error`` says why, and the error is raised as well."""
        t0 = time.perf_counter()
        self.start_loading()
        try:
            if self._start_error is not None:
                raise self._start_error
            infos = [runner.wait_ready() for runner in self.runners]
        except Exception as exc:
            self.state, self.error = "failed", str(exc) or type(exc).__name__
            for runner in self.runners:
                runner.close(timeout=5)
            raise
        self.info = infos[0]
        self.task = self.info.get("task") or self.task
        self.load_seconds = time.perf_counter() - t0
        if self.state == "loading":  # not closed or crashed meanwhile
            self.state = "ready"

    def abort_loading(self) -> None:
        """Stop a model still loading at once (the server is stopping)."""
        for runner in self.runners:
            runner.abort_loading()

    async def attach(self) -> None:
        """Bind the model's connection to the running loop now, rather than on the first
        request, so that a process dying while idle is noticed at once."""
        for runner in self.runners:
            await runner.attach()

    @property
    def max_batch_size(self) -> int:
        chosen = self.spec.max_batch_size or self.config.max_batch_size
        return int(chosen or self.info.get("max_batch_size") or 1)

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def depth(self) -> int:
        """Decoded requests waiting for a model worker."""
        return sum(runner.depth for runner in self.runners)

    # --- requests -------------------------------------------------------------------------

    def request_options(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The typed, checked per-request options of ``raw`` (text from a query or form, or
        JSON values), as the task's manifest declares them; an OptionError names a wrong one."""
        if not raw:
            return {}
        if self.task is None:
            raise OptionError(f"model {self.name} is not loaded yet: it takes no options now")
        out = task_manifest(self.task).request_options(raw, f"{self.task} model {self.name}: ")
        labels = self.info.get("labels")
        if out.get("classes") is not None and labels:
            unknown = sorted({c for c in out["classes"] if not 0 <= c < len(labels)})
            if unknown:
                raise OptionError(f"classes {unknown} are not among {self.name}'s "
                                  f"{len(labels)} classes (ids 0-{len(labels) - 1})")
        return out

    def admit(self) -> None:
        """Count a request in (QueueFull when ``max_queue`` are already in); pair with
        ``release``."""
        with self._lock:
            if self._admitted >= self.config.max_queue:
                raise QueueFull(f"model {self.name} has {self._admitted} requests in progress "
                                f"(max_queue {self.config.max_queue}): retry later")
            self._admitted += 1

    def release(self) -> None:
        with self._lock:
            self._admitted -= 1

    async def predict_bytes(self, data: bytes, name: str, options: Mapping[str, Any],
                            timeout_s: float | None = None) -> tuple[Result, JobTiming]:
        """One image's result and where its time went (queue wait, compute, batch size).
        Raises UnsupportedType (not an accepted image type), InputError for an image that
        cannot be decoded (its ``reason`` is the CLI record's), QueueFull, TimeoutError,
        ModelProcessDied."""
        if not self.runners or self.state != "ready":
            raise TorchinferError(f"model {self.name} is {self.state}")
        sniff_image(data)  # 415 here, before the bytes travel to the model
        # several processes: the one with the fewest requests in flight
        runner = min(self.runners, key=lambda r: r.in_flight) if len(self.runners) > 1 \
            else self.runners[0]
        return await asyncio.wait_for(
            runner.predict(data, name, tuple(sorted(options.items()))), timeout_s)

    async def draw_png(self, data: bytes, name: str, result: Result) -> bytes:
        """The annotated picture of ``result`` on its image, as PNG (drawn by the model's
        side, which reads the image as decoding did: orientation, pixel cap)."""
        if not self.runners:
            raise TorchinferError(f"model {self.name} is {self.state}")
        return await self.runners[0].draw(data, name, result)

    def _died(self, message: str) -> None:
        """A model process ended on its own: no answer will come from it."""
        if self.state == "closed":
            return
        self.state, self.error, self.crashed = "failed", message, True
        log.error(message)
        if self.on_failure is not None:
            self.on_failure(message)

    # --- what it is -----------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/models`` shows: task, labels, preprocessing, backend, batching, and
        the model's processes."""
        info: dict[str, Any] = {"name": self.name, "model": self.spec.model, "task": self.task,
                                "state": self.state, "ready": self.ready}
        if self.error:
            info["error"] = self.error
        if not self.info:
            return info
        info.update({k: v for k, v in self.info.items() if k != "task"})
        info["model_processes"] = self.config.model_processes
        info["pids"] = [r.pid for r in self.runners if r.pid is not None]
        return info

    def close(self, timeout: float | None = None) -> None:
        """Answer what is queued and stop what runs the model (blocks: off the event loop)."""
        if self.state != "failed":
            self.state = "closed"
        for runner in self.runners:
            runner.close(timeout)
