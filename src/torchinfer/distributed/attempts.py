"""Which batches a job ran more than once: when a worker is lost (killed, out of memory, its
node gone), the job starts a new round from its first unanswered batch (``job``), and the
batches of that round that had started before, on any worker, run again. Each worker says
here that it starts a batch, before running it; a batch started twice ran twice. The ledger
is a small actor pinned to the driver's node, so that it outlives the workers' nodes.
"""

from __future__ import annotations

from typing import Any


class AttemptLedger:
    """A Ray actor: (batch, worker, node) of every start."""

    def __init__(self) -> None:
        self.starts: list[tuple[int, str, str]] = []

    def started(self, seq: int, worker: str, node: str) -> None:
        self.starts.append((seq, worker, node))

    def read(self) -> list[tuple[int, str, str]]:
        return list(self.starts)


def start_ledger(ray: Any) -> Any:
    """An ``AttemptLedger`` actor on the driver's node (no CPU held)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    return ray.remote(num_cpus=0)(AttemptLedger).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()


def retried(starts: list[tuple[int, str, str]], sizes: dict[int, int]) -> dict[str, Any]:
    """What the starts say: the batches started more than once and how many inputs they hold
    (``sizes``: inputs per batch), and how many nodes ran batches."""
    tries: dict[int, int] = {}
    for seq, _, _ in starts:
        tries[seq] = tries.get(seq, 0) + 1
    again = [seq for seq, n in tries.items() if n > 1]
    return {"retried_batches": len(again),
            "retried_inputs": sum(sizes.get(seq, 0) for seq in again),
            "nodes_used": len({node for _, _, node in starts})}
