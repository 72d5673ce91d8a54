"""Dynamic batching: the worker threads of one model turn its queued requests into batches.

The batcher runs where the model runs: in the model's own process (process_main.py; the
default) or in the server's process (``model_processes=0``). Requests arrive one image each,
into one bounded queue per model: decoded by the engine's decode threads, or still encoded
when the model decodes in turn (``decode_threads=0``: the worker decodes what it takes, see
engine.py). A free worker takes the oldest, then whatever else is queued, up to
``max_batch_size``; while the batch is short it waits for more at most ``max_delay_s`` after
the oldest arrived. Requests that arrive while the model runs a batch are queued and go
together into the next one, so under load batches fill without any waiting; the delay only
matters when the model is idle (see design notes for the measured default).

A model may have several workers (``workers``), all taking from the same queue: on a CPU
with spare cores, batches then run side by side, each worker on its own few torch threads
(set once in the worker's own thread by ``on_start``) rather than one OpenMP team spanning
them. The predictor is called from several threads at once then; its ``run`` keeps no
per-call state on the predictor (see engine.py for the one exception, the runtime's
first-batch hook).

The batch is then run in groups of equal request options (a request's ``conf`` or ``top_k``
never applies to another's image), each group as few model calls as the images allow
(``decoding.merge``). ``on_done`` hears of each group once its futures are set: a model
process sends the answers back from there.

Nothing here imports torch: the server's process uses the errors and ``JobTiming``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..errors import TorchinferError

log = logging.getLogger("torchinfer.serve")


class QueueFull(TorchinferError):
    """The model's queue holds as many requests as it may (the server answers 503)."""


class ShuttingDown(TorchinferError):
    """The worker no longer takes requests (the server answers 503)."""


@dataclass(frozen=True)
class JobTiming:
    """Where one request's time went in the model: waiting in the queue, the model call it
    shared, and how many requests shared it (the Server-Timing and X-Batch-Size headers)."""

    queue_wait_s: float
    compute_s: float
    batch_size: int


@dataclass
class Job:
    """One request's image on its way through the worker: its decoded batch of one (its bytes,
    ``Encoded``, until the worker decodes them when the model decodes in turn), its options
    (hashable; equal options may share a model call), the future its answer goes to, and
    ``key``, the caller's name for it (a model process: the request's number). The worker sets
    ``queue_wait_s``, ``compute_s`` and ``batch_size`` before answering."""

    decoded: Any
    options: Hashable
    key: Any = None
    future: Future[Any] = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)
    queue_wait_s: float = 0.0
    compute_s: float = 0.0
    batch_size: int = 0

    @property
    def timing(self) -> JobTiming:
        return JobTiming(self.queue_wait_s, self.compute_s, self.batch_size)


# run(jobs with equal options) -> one answer per job, in order (an exception: that job failed)
RunGroup = Callable[[list[Job]], list[Any]]
JobsHook = Callable[[list[Job]], None]


class Batcher:
    """The queue and workers of one model. ``submit`` from any thread; ``close`` drains.

    ``on_start`` runs first in each worker's own thread (the engine sets the worker's torch
    threads there, once, rather than around every call from several threads). ``on_batch``
    hears of each batch a worker takes (its jobs' queue waits set), ``on_done`` of each group
    once answered (futures set, ``compute_s`` too), ``on_depth`` of the queue's length
    whenever it changes (called under the queue's lock: it must only record the number)."""

    def __init__(self, name: str, run_group: RunGroup, *, max_batch_size: int,
                 max_delay_s: float, on_batch: JobsHook | None = None,
                 workers: int = 1, on_start: Callable[[], None] | None = None,
                 on_done: JobsHook | None = None,
                 on_depth: Callable[[int], None] | None = None):
        if workers < 1:
            raise ValueError(f"a model needs at least one worker, got {workers}")
        self.name = name
        self.run_group = run_group
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.on_batch = on_batch
        self.on_start = on_start
        self.on_done = on_done
        self.on_depth = on_depth
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._threads = [threading.Thread(target=self._work, daemon=True,
                                          name=f"torchinfer-model-{name}-{i}")
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    @property
    def workers(self) -> int:
        return len(self._threads)

    @property
    def depth(self) -> int:
        return len(self._queue)

    def submit(self, job: Job) -> Future[Any]:
        with self._cond:
            if self._closing:
                raise ShuttingDown("the server is shutting down")
            self._queue.append(job)
            if self.on_depth is not None:
                self.on_depth(len(self._queue))
            self._cond.notify()
        return job.future

    def close(self, timeout: float | None = None) -> None:
        """Answer everything queued, then stop the worker (a drain, not a drop)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        end = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if end is None else max(0.0, end - time.monotonic()))

    def _take(self) -> list[Job] | None:
        """The next batch, or None when closing and nothing is left."""
        with self._cond:
            while True:
                while not self._queue:
                    if self._closing:
                        return None
                    self._cond.wait()
                # another worker may take what this one waits on: then wait for the next
                while 0 < len(self._queue) < self.max_batch_size and not self._closing:
                    left = self._queue[0].enqueued + self.max_delay_s - time.perf_counter()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self._queue:
                    count = min(self.max_batch_size, len(self._queue))
                    batch = [self._queue.popleft() for _ in range(count)]
                    if self.on_depth is not None:
                        self.on_depth(len(self._queue))
                    if self._queue:  # more than one batch waits: a free worker takes the rest
                        self._cond.notify()
                    return batch

    def _work(self) -> None:
        if self.on_start is not None:
            try:
                self.on_start()
            except Exception:  # only a tuning step: the worker still answers
                log.exception("model %s: setting up a worker thread", self.name)
        while (jobs := self._take()) is not None:
            # a request whose client gave up (timeout) is dropped before the model sees it
            jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            if not jobs:
                continue
            start = time.perf_counter()
            for job in jobs:
                job.queue_wait_s = start - job.enqueued
                job.batch_size = len(jobs)
            if self.on_batch is not None:
                self.on_batch(jobs)
            for group in _by_options(jobs):
                self._run(group)

    def _run(self, group: list[Job]) -> None:
        t0 = time.perf_counter()
        try:
            answers = self.run_group(group)
        except BaseException as exc:  # the requests fail; the worker goes on
            for job in group:
                job.compute_s = time.perf_counter() - t0
                job.future.set_exception(exc)
        else:
            compute_s = time.perf_counter() - t0
            for job, answer in zip(group, answers):
                job.compute_s = compute_s
                if isinstance(answer, BaseException):  # this job alone failed
                    job.future.set_exception(answer)
                else:
                    job.future.set_result(answer)
        if self.on_done is not None:
            try:
                self.on_done(group)
            except Exception:  # a hook's failure must not stop the worker
                log.exception("model %s: after a batch", self.name)


def _by_options(jobs: list[Job]) -> list[list[Job]]:
    groups: dict[Hashable, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.options, []).append(job)
    return list(groups.values())
