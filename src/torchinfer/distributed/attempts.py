"""Which batches a job ran more than once, and why: when a worker is lost (killed, out of
memory, its node gone), Ray runs the batches it held again on another worker. Each worker
says here that it starts a batch, before running it; a batch started twice was retried. The
ledger is a small actor pinned to the driver's node, so that it outlives the workers' nodes.
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
    """What the starts say of retries: the batches started more than once, how many inputs
    they hold (``sizes``: inputs per batch), and the workers and nodes that started a batch
    whose answer came from another (lost ones)."""
    by_batch: dict[int, list[tuple[str, str]]] = {}
    for seq, worker, node in starts:
        by_batch.setdefault(seq, []).append((worker, node))
    again = sorted(seq for seq, tries in by_batch.items() if len(tries) > 1)
    lost_workers = {w for seq in again for w, _ in by_batch[seq][:-1]}
    lost_nodes = {n for seq in again for _, n in by_batch[seq][:-1]}
    return {"retried_batches": len(again),
            "retried_inputs": sum(sizes.get(seq, 0) for seq in again),
            "workers_lost": len(lost_workers), "nodes_of_lost_workers": len(lost_nodes),
            "nodes_used": len({n for _, _, n in starts})}
