"""The model workers of a batch job: Ray actors each holding one predictor, built once.

What travels to a worker is a ``LoadSpec`` (the task, the model's name or path, the weights'
path and the options of ``torchinfer.api.load``), never a pickled model: each worker builds the
predictor itself, with the same checks (and the same refusal to run a file's code) as a local
run, so the weights must be readable at the same path on every node.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..runner.batches import Decoded
from ..runner.inputs import Source


@dataclass(frozen=True)
class LoadSpec:
    """``torchinfer.api.load(task, model, weights, **options)``, as plain values."""

    task: str
    model: str
    weights: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        from ..api import load

        return load(self.task, self.model, self.weights, **self.options)


class PredictorActor:
    """A callable class for ``Dataset.map_batches``: one predictor, built in ``__init__``; each
    call runs the rows it is given, one model batch per row, and returns their results.

    A row's ``payload`` is its sources with their bytes (decoded here, ``Predictor.decode``)
    or a batch already decoded by the decode tasks; either way ``Predictor.run`` gives one
    result per source, failures included, as a local run's streamer does.
    """

    def __init__(self, spec: LoadSpec, ledger: Any = None):
        import ray

        self.predictor = spec.load()
        # the backend measured (or recalled from this node's cache) before the first rows
        self.predictor.prepare()
        # which worker ran a batch, on which node: the job counts them (a pool stuck on one
        # worker shows), and the ledger (``attempts``) tells a retried batch
        context = ray.get_runtime_context()
        self.worker = context.get_actor_id() or ""
        self.node = context.get_node_id() or ""
        self.ledger = ledger

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.ledger is not None:  # said before the work: a worker lost midway has said it
            for seq in rows["seq"]:
                self.ledger.started.remote(int(seq), self.worker, self.node)
        results = []
        for blob in rows["payload"]:
            item = pickle.loads(blob)
            decoded = item if isinstance(item, Decoded) else self.predictor.decode(item)
            results.append(pickle.dumps(self.predictor.run(decoded)))
        out = np.empty(len(results), dtype=object)
        out[:] = results
        workers = np.empty(len(results), dtype=object)
        workers[:] = [self.worker] * len(results)
        return {"seq": rows["seq"], "sources": rows["sources"], "results": out,
                "worker": workers}


# One predictor per Ray worker process for the decode tasks (built on the first task, reused
# by the next ones the process runs): a task is stateless, and building a predictor per batch
# would cost more than decoding it. Keyed by the pickled spec.
_DECODERS: dict[bytes, Any] = {}


def decoder_for(spec: LoadSpec) -> Any:
    """The predictor whose ``decode`` a decode task uses (CPU; its model is never run)."""
    key = pickle.dumps(spec)
    if key not in _DECODERS:
        options = {**spec.options, "device": "cpu", "backend": "torch", "precision": "fp32",
                   "verify_backend": False}
        _DECODERS.clear()  # another job's in this process: keep one
        _DECODERS[key] = LoadSpec(spec.task, spec.model, spec.weights, options).load()
    return _DECODERS[key]


def sources_of(blob: bytes) -> list[Source]:
    sources: list[Source] = pickle.loads(blob)
    return sources
