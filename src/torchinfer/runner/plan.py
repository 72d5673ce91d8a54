"""How a stream shares the cores between decoding and the model.

Two ways to run on C cores. *In turn*: C batches are decoded at once, one per thread, while the
model waits, then the model runs them on every core. *Overlapped*: k threads decode the next
batches while the model runs on the other C - k cores. Which wins depends on the model and
the pictures, so on the CPU both are measured on the first batches of a stream. The first
batches run in turn and are timed: per image, decoding takes d (one thread) and the model m
(prepare + forward + postprocess on C threads). The k that minimises max(d / k, m * C / (C - k))
is the split worth trying (linear scaling, the pessimistic guess, rules out hopeless ones);
the next batches run that way, and the faster of the two measured costs per image is kept.
The two sides never run on the same core at once: threads that share cores with a spinning
OpenMP pool wait for each other (BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..devices import usable_cpus

# Overlap only when measured faster than in turn by more than the noise of a few batches.
OVERLAP_MARGIN = 0.95
# A split is not even tried when linear scaling predicts it this much slower than in turn.
HOPELESS = 1.5
# Batches timed in turn, then overlapped; the first of each warms up (kernel choice,
# allocations, TorchScript's profiling runs; the decode pool starting) and is not counted. A
# stream that ends before 2 overlapped batches leaves the choice to the next stream.
PROBE_FULL, PROBE_SPLIT = 4, 3
MAX_GPU_DECODE_WORKERS = 8


@dataclass(frozen=True)
class PipelinePlan:
    """What a stream runs with. Overlapped: ``decode_workers`` threads decode the next batches
    while the model runs on ``model_threads`` intra-op threads (None: its default, every core
    for ONNX Runtime, torch's setting for torch). In turn: ``decode_workers`` batches are
    decoded at once, one per thread, while the model waits, then the model runs them (0 or 1:
    decoding on the calling thread)."""

    decode_workers: int
    model_threads: int | None
    reason: str
    overlapped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fixed_plan(device: torch.device, decode_workers: int | None) -> PipelinePlan | None:
    """The plan when nothing needs measuring, or None when the first batches must decide."""
    cores = usable_cpus()
    if device.type != "cpu":
        # the model runs on the accelerator: the cores are the decoders'
        workers = decode_workers if decode_workers is not None else \
            max(1, min(MAX_GPU_DECODE_WORKERS, cores - 1))
        return PipelinePlan(workers, None, f"{device.type}: {workers} decode threads", True)
    if decode_workers == 0:
        return PipelinePlan(0, None, "decode_workers 0: decoding in turn, on this thread")
    if decode_workers is not None:
        return PipelinePlan(decode_workers, max(1, cores - decode_workers),
                            "decode_workers given", True)
    if cores < 2:
        return PipelinePlan(0, None, "one core: decoding in turn")
    return None


def in_turn(cores: int, reason: str) -> PipelinePlan:
    """Decoding in turn with the model, a batch per core at once."""
    return PipelinePlan(cores, None, reason)


def split_to_try(decode_ms: float, model_ms: float, cores: int) -> int:
    """The number of decode threads worth timing (0: none; see the module doc)."""
    costs = {k: max(decode_ms / k, model_ms * cores / (cores - k)) for k in range(1, cores)}
    if not costs:
        return 0
    k = min(costs, key=costs.__getitem__)
    return k if costs[k] < HOPELESS * (decode_ms + model_ms) else 0


def choose(in_turn_ms: float, cores: int, split: int = 0, overlapped_ms: float | None = None,
           detail: str = "") -> PipelinePlan:
    """In turn, or overlapped with ``split`` decode threads, from the measured wall time per
    image of the model's thread (the model + waiting for decoding) each way."""
    if not split or overlapped_ms is None:
        return in_turn(cores, f"in turn ({in_turn_ms:.2f} ms/img; {detail or 'no split'})")
    if overlapped_ms > OVERLAP_MARGIN * in_turn_ms:
        return in_turn(cores, f"in turn ({in_turn_ms:.2f} ms/img; overlapped "
                              f"{overlapped_ms:.2f})")
    return PipelinePlan(split, cores - split, f"overlapped, {split} decode + {cores - split} "
                                              f"model threads ({overlapped_ms:.2f} ms/img; in "
                                              f"turn {in_turn_ms:.2f})", True)
