"""How a stream shares the cores between decoding and the model.

Two ways to run on C cores: *in turn* (decode a batch, then run the model on all C cores) or
*overlapped* (k threads decode the next batches while the model runs on the other C - k cores).
Which wins depends on the model and the pictures, so on the CPU we measure the first batches in
turn and predict both from what they cost per image: in turn takes ``decode + main``, overlapped
``max(decode / k, main * C / (C - k))`` (main = prepare + forward + postprocess on the calling
thread, assumed to scale with its thread count). Giving each side its own cores matters: threads
that share cores with a spinning OpenMP pool wait for each other (BENCHMARKS.md).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import torch

# Overlap only when predicted clearly faster: the prediction assumes linear thread scaling.
OVERLAP_MARGIN = 0.9
# Batches run in turn and timed before the plan is chosen; the first is warm-up and not used.
PROBE_BATCHES = 3
MAX_GPU_DECODE_WORKERS = 8


@dataclass(frozen=True)
class PipelinePlan:
    """What a stream runs with: ``decode_workers`` threads decoding ahead of the model (0: in
    turn) and ``model_threads`` intra-op threads for the model (None: as they are)."""

    decode_workers: int
    model_threads: int | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def usable_cpus() -> int:
    """The cores this process may run on (a container or taskset can allow fewer than
    os.cpu_count() reports)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def fixed_plan(device: torch.device, decode_workers: int | None) -> PipelinePlan | None:
    """The plan when nothing needs measuring, or None when the first batches must decide."""
    cores = usable_cpus()
    if device.type != "cpu":
        # the model runs on the accelerator: the cores are the decoders'
        workers = decode_workers if decode_workers is not None else \
            max(1, min(MAX_GPU_DECODE_WORKERS, cores - 1))
        return PipelinePlan(workers, None, f"{device.type}: {workers} decode threads")
    if decode_workers is not None:
        threads = max(1, cores - decode_workers) if decode_workers else None
        return PipelinePlan(decode_workers, threads, "decode_workers given")
    if cores < 2:
        return PipelinePlan(0, None, "one core: decoding in turn")
    return None


def plan_from_timings(decode_ms: float, main_ms: float, cores: int | None = None) -> PipelinePlan:
    """Choose in turn or overlapped from the measured cost per image (see the module doc)."""
    cores = cores or usable_cpus()
    in_turn = decode_ms + main_ms
    costs = {k: max(decode_ms / k, main_ms * cores / (cores - k)) for k in range(1, cores)}
    measured = f"decode {decode_ms:.2f} + model {main_ms:.2f} ms/img on {cores} cores"
    if not costs:
        return PipelinePlan(0, None, f"in turn: {measured}")
    k = min(costs, key=costs.__getitem__)
    if costs[k] > OVERLAP_MARGIN * in_turn:
        return PipelinePlan(0, None, f"in turn ({in_turn:.2f} ms/img predicted, overlapped "
                                     f"{costs[k]:.2f}): {measured}")
    return PipelinePlan(k, cores - k, f"overlapped, {k} decode + {cores - k} model threads "
                                      f"({costs[k]:.2f} ms/img predicted, in turn "
                                      f"{in_turn:.2f}): {measured}")
