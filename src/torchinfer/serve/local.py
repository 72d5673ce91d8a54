"""A model served in the server's own process, on threads (``model_processes=0``).

The engine (engine.py) runs beside the event loop: requests are decoded on its decode
threads and answered through its batcher's futures. One process, one GIL: HTTP, decoding and
the model's Python take turns on it, which is why a model process is the default on the CPU
(BENCHMARKS.md). This stays for what a second process cannot give: a test or a debugger
reaching the predictor itself, and a platform without spawn-able processes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..results import Result
from .batcher import Job, JobTiming
from .config import ModelSpec, ServeConfig
from .engine import Encoded, ModelEngine
from .metrics import ServerMetrics


class LocalModel:
    """The engine of one model in this process, behind the same calls as a model process."""

    def __init__(self, spec: ModelSpec, config: ServeConfig, metrics: ServerMetrics | None = None):
        self.name, self.metrics = spec.name, metrics
        self.engine = ModelEngine(spec, config, on_batch=self._batched, on_done=self._done)

    @property
    def pid(self) -> int | None:
        return None  # no process of its own

    @property
    def depth(self) -> int:
        return self.engine.batcher.depth if self.engine.batcher is not None else 0

    @property
    def in_flight(self) -> int:
        return self.depth

    def start(self) -> None:
        """Nothing to start ahead: ``wait_ready`` loads the model on the calling thread."""

    def wait_ready(self) -> dict[str, Any]:
        self.engine.load()
        return self.engine.describe()

    def abort_loading(self) -> None:
        """A load on this process's thread cannot be interrupted: the server waits for it."""

    async def attach(self) -> None:
        """Nothing to attach: the futures are bridged to whichever loop awaits them."""

    async def predict(self, data: bytes, name: str, options: Any
                      ) -> tuple[Result, JobTiming]:
        pool = self.engine.decode_pool
        assert pool is not None
        if self.engine.decodes_in_turn:  # the worker decodes it
            job = self.engine.submit(Encoded(data, name), options)
        else:
            decoded = await asyncio.get_running_loop().run_in_executor(
                pool, self.engine.decode, data, name)
            job = self.engine.submit(decoded, options)
        # a cancelled wait cancels the job's future: the worker then drops it unrun
        result = await asyncio.wrap_future(job.future)
        return result, job.timing

    async def draw(self, data: bytes, name: str, result: Result) -> bytes:
        pool = self.engine.decode_pool
        assert pool is not None
        return await asyncio.get_running_loop().run_in_executor(
            pool, self.engine.draw_png, data, name, result)

    def close(self, timeout: float | None = None) -> None:
        self.engine.close(timeout)

    def _batched(self, jobs: list[Job]) -> None:
        if self.metrics is not None:
            self.metrics.observe_batches(self.name, [(len(jobs), [j.queue_wait_s for j in jobs])],
                                         None)

    def _done(self, group: list[Job]) -> None:
        if self.metrics is not None:
            self.metrics.observe_batches(self.name, [], group[0].compute_s)
