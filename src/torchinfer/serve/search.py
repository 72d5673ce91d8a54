"""``POST /v1/search``: the nearest inputs of a ``predict embed`` run to a query image.

Each index (``--index NAME=RUN_DIR``) is searched with the vectors of the served model that
made it: the one with the run's model, weights and the options that shape the vectors
(input size, mean, std, the output read). A server without that model refuses to start,
since vectors from another model are not comparable. The vectors stay memory-mapped in this
process; the search runs on a thread, off the event loop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import TorchinferError
from ..manifests.base import json_form
from ..vectors.run_index import RunIndex
from .config import ModelSpec, ServeConfig

MAX_K = 1000
# the load options that change what the vectors are (the others change only speed)
SHAPING = ("input_size", "mean", "std", "output", "num_classes", "labels", "model_kwargs")


@dataclass(frozen=True)
class ServedIndex:
    name: str
    index: RunIndex
    model: str  # the served model that embeds queries

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "vectors": len(self.index),
                "dim": self.index.dim}


def open_indexes(config: ServeConfig) -> dict[str, ServedIndex]:
    """Each index of ``config``, paired with its model; TorchinferError naming what is missing."""
    opened = {}
    for spec in config.indexes:
        run = RunIndex.open(spec.folder)
        opened[spec.name] = ServedIndex(spec.name, run, _paired(spec.name, run, config.models))
    return opened


def _paired(name: str, run: RunIndex, models: tuple[ModelSpec, ...]) -> str:
    fp = run.fingerprint
    for m in models:
        # weights not named: the model brings its own (a bundled name, a folder), as it did
        if m.task not in (None, fp.get("task")) or not _same(m.model, fp.get("model")) or \
                (m.weights is not None and not _same(m.weights, fp.get("weights"))):
            continue
        if all(json_form(m.options.get(k)) == fp.get(k) for k in SHAPING if k in fp):
            return m.name
    weights = fp.get("weights")
    raise TorchinferError(f"index {name} was made by {_shown(fp.get('model'))}"
                          f"{'' if weights is None else ' with ' + _shown(weights)}"
                          f"{_options(fp)}: serve that model too (-m) to search it")


def _same(given: str | None, recorded: Any) -> bool:
    if isinstance(recorded, dict) and "path" in recorded:  # a file, stamped by the run
        return given is not None and os.path.realpath(given) == recorded["path"]
    return given == recorded


def _shown(value: Any) -> str:
    return str(value["path"]) if isinstance(value, dict) and "path" in value else str(value)


def _options(fp: dict[str, Any]) -> str:
    shaping = {k: fp[k] for k in SHAPING if fp.get(k) is not None}
    return f" ({', '.join(f'{k} {v}' for k, v in shaping.items())})" if shaping else ""


def checked_k(value: str | None) -> int:
    try:
        k = int(value) if value is not None else 10
    except ValueError:
        raise TorchinferError(f"k must be an integer, got {value!r}") from None
    if not 1 <= k <= MAX_K:
        raise TorchinferError(f"k must be in [1, {MAX_K}], got {k}")
    return k
