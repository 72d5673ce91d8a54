"""Streaming ``Source`` items through a model in batches, with bounded memory, in input order.

The ``Streamer`` owns how decoding and the model share the machine: *in turn* (a batch per core
decoded at once while the model waits) or *overlapped* (decode threads work ahead while the
model runs on the other cores; when the next batch is not ready, the model's thread decodes a
later one itself instead of waiting). On the CPU the first batches of a stream measure both ways and
the faster is kept (``plan.py``); the choice belongs to the model (``model.pipeline``), since it
depends on the model's speed.

It works with anything shaped like ``BatchModel`` (a task's Predictor is one): the runner knows
nothing of tasks, and a server or a Ray actor can drive the same object batch by batch.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import torch

from .batches import Decoded, Timing
from .inputs import Source
from .plan import PROBE_FULL, PROBE_SPLIT, PipelinePlan, choose, in_turn, split_to_try, usable_cpus


class BatchModel(Protocol):
    """What the streamer drives: decode a list of sources into a batch, run a batch."""

    pipeline: PipelinePlan | None
    module: torch.nn.Module

    def decode(self, sources: list[Source]) -> Decoded: ...

    def run(self, decoded: Decoded, *, wait_s: float = 0.0,
            timings: list[Timing] | None = None) -> list[Any]: ...


Pairs = Iterator[tuple[Source, Any]]


class Streamer:
    """Yields (source, result) for every source, in order, ``batch_size`` at a time."""

    def __init__(self, model: BatchModel):
        self.model = model

    def stream(self, sources: Iterable[Source], batch_size: int) -> Pairs:
        chunks = _chunks(iter(sources), batch_size)
        if self.model.pipeline is None:
            self.model.pipeline = yield from self._probe(chunks)
        # not measured (too few good batches so far): the rest in turn, the next stream measures
        plan = self.model.pipeline or in_turn(usable_cpus(), "in turn: not measured yet")
        threads = size_session(self.model.module, plan.model_threads)
        if plan.overlapped:
            yield from self._overlapped(chunks, plan.decode_workers, threads)
        else:
            yield from self._in_turn(chunks, plan.decode_workers, threads)

    def _in_turn(self, chunks: Iterator[list[Source]], workers: int, threads: int | None,
                 timings: list[Timing] | None = None) -> Pairs:
        """Decode, then run the model, in turn: ``workers`` batches decoded at once, one per
        thread, while the model waits (fewer than 2: decoded on this thread)."""
        if workers < 2:
            for chunk in chunks:
                yield from self._run(self.model.decode(chunk), threads, 0.0, timings)
            return
        with _decode_pool(workers) as pool:
            while group := list(itertools.islice(chunks, workers)):
                t0 = time.perf_counter()
                decoded = list(pool.map(self.model.decode, group))
                wait_s = (time.perf_counter() - t0) / len(group)
                for batch in decoded:
                    yield from self._run(batch, threads, wait_s, timings)

    def _overlapped(self, chunks: Iterator[list[Source]], workers: int, threads: int | None,
                    timings: list[Timing] | None = None, steal: bool = True) -> Pairs:
        """Batches decoded by ``workers`` threads, at most ``workers + 1`` ahead, run in order.
        When the next batch is not decoded yet, the model's thread decodes a later one itself
        rather than wait (``steal``; a split of 2 cores into 1 + 1 is rarely balanced)."""
        with _decode_pool(workers) as pool:
            ahead: collections.deque[Future[Decoded]] = collections.deque()
            spare = workers + 1 if steal else 0  # how far ahead the model's thread decodes
            for chunk in chunks:
                ahead.append(pool.submit(self.model.decode, chunk))
                if len(ahead) > workers:
                    yield from self._run_next(ahead, threads, timings, chunks, spare)
            while ahead:
                yield from self._run_next(ahead, threads, timings, chunks, spare)

    def _probe(self, chunks: Iterator[list[Source]]
               ) -> Generator[tuple[Source, Any], None, PipelinePlan | None]:
        """Run the first batches in turn, then (if it may pay) overlapped, timed, and choose
        the plan. The first batch of each way is warm-up, not counted."""
        cores = usable_cpus()
        turns: list[Timing] = []
        threads = size_session(self.model.module, None)
        yield from self._in_turn(itertools.islice(chunks, PROBE_FULL), cores, threads, turns)
        if len(turns) < PROBE_FULL:
            return None
        decode_ms = _ms_per_image(turns, lambda t: t.decode_s)
        model_ms = min(t.main_s * 1000 / t.images for t in turns[1:])
        in_turn_ms = _ms_per_image(turns[1:], lambda t: t.wait_s + t.main_s)
        split = split_to_try(decode_ms, model_ms, cores)
        if not split:
            return choose(in_turn_ms, cores, detail=f"decode {decode_ms:.2f} + model "
                                                    f"{model_ms:.2f} ms/img")
        overlapped: list[Timing] = []
        threads = size_session(self.model.module, cores - split)
        # timed without the model's thread decoding: a probe of a few batches would credit it
        # with decodes the pipeline pays for later (the plan then only gains from it)
        yield from self._overlapped(itertools.islice(chunks, PROBE_SPLIT), split, threads,
                                    overlapped, steal=False)
        if len(overlapped) < 2:  # the warm-up batch alone says nothing
            return None
        return choose(in_turn_ms, cores, split,
                      _ms_per_image(overlapped[1:], lambda t: t.wait_s + t.main_s))

    def _run_next(self, ahead: collections.deque[Future[Decoded]], threads: int | None,
                  timings: list[Timing] | None, chunks: Iterator[list[Source]],
                  spare: int) -> list[tuple[Source, Any]]:
        t0 = time.perf_counter()
        # instead of waiting, decode a later batch here while fewer than ``spare`` are queued
        # (one batch more in memory than the decode threads alone keep); it joins the queue
        # in order, already done
        while not ahead[0].done() and len(ahead) <= spare:
            chunk = next(chunks, None)
            if chunk is None:
                break
            stolen: Future[Decoded] = Future()
            with torch_threads(1):
                stolen.set_result(self.model.decode(chunk))
            ahead.append(stolen)
        decoded = ahead.popleft().result()
        return self._run(decoded, threads, time.perf_counter() - t0, timings)

    def _run(self, decoded: Decoded, threads: int | None, wait_s: float,
             timings: list[Timing] | None) -> list[tuple[Source, Any]]:
        # torch's thread count is set for this thread around the model's own work only, and
        # given back before anything is yielded: the caller's code between results runs as it
        # would without us
        with torch_threads(threads):
            results = self.model.run(decoded, wait_s=wait_s, timings=timings)
        return list(zip(decoded.sources, results))


def size_session(module: torch.nn.Module, threads: int | None) -> int | None:
    """Give the model ``threads`` cores (None: all). An ONNX Runtime session is sized when it
    is built (``set_threads`` rebuilds it); its threads spin between calls, so torch, which
    then only normalises and postprocesses, keeps to one thread rather than spin against them
    (BENCHMARKS.md). Returns torch's thread count for the model's calls (None: as it is)."""
    set_threads = getattr(module, "set_threads", None)
    if set_threads is None:
        return threads
    set_threads(threads or usable_cpus())
    return 1


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """``threads`` intra-op threads for this thread meanwhile (None: unchanged)."""
    if threads is None or threads == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _decode_pool(workers: int) -> ThreadPoolExecutor:
    # one torch thread per decoder (stacking a batch is a torch op): their cores are counted in
    # the decode threads, not shared with the model's
    return ThreadPoolExecutor(max_workers=workers, initializer=torch.set_num_threads,
                              initargs=(1,), thread_name_prefix="torchinfer-decode")


def _ms_per_image(timings: list[Timing], seconds: Callable[[Timing], float]) -> float:
    return sum(seconds(t) for t in timings) * 1000 / sum(t.images for t in timings)


def _chunks(it: Iterator[Source], size: int) -> Iterator[list[Source]]:
    while chunk := list(itertools.islice(it, size)):
        yield chunk
