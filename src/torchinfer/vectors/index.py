"""Nearest neighbours by cosine over a run's vectors (unit length: cosine is a dot product).

Exact search multiplies the queries by the vectors a block at a time (memory stays bounded
whatever the number of vectors). Above ``EXACT_LIMIT`` vectors, an approximate HNSW index
(usearch, the ``search`` extra) answers instead; it is saved beside the vectors
(``embeddings.npy.usearch``) with the vectors file's size and time, and rebuilt when they
change. ``BENCHMARKS.md`` has the queries per second of both and the recall of the second.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TorchinferError

# vectors up to this many are searched exactly by default (benchmarks/embed.py: at 10^5
# 512-d vectors an exact query still answers in milliseconds; past it, HNSW's do)
EXACT_LIMIT = 100_000
BLOCK_ROWS = 32_768  # vectors multiplied at a time by the exact search
METHODS = ("auto", "exact", "ann")
# HNSW's settings: edges per node, and the candidate lists while adding and searching
# (benchmarks/embed.py: recall@10 >= 0.99 at 10^6 vectors with these)
CONNECTIVITY = 32
EXPANSION_ADD = 128
EXPANSION_SEARCH = 256


@dataclass(frozen=True)
class Neighbours:
    """For each query, its k nearest vectors: ``rows`` (Q, k) int64 and ``scores`` (Q, k)
    cosine similarities, best first (-1 rows, NaN scores where fewer than k exist)."""

    rows: np.ndarray
    scores: np.ndarray
    method: str


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> Neighbours:
    """The ``k`` vectors of highest dot product with each query; ties to the lower row."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n, q = len(vectors), len(queries)
    k_eff = min(k, n)
    best_scores = np.full((q, 0), -np.inf, np.float32)
    best_rows = np.zeros((q, 0), np.int64)
    for start in range(0, n, BLOCK_ROWS):
        block = np.asarray(vectors[start:start + BLOCK_ROWS], dtype=np.float32)
        sims = queries @ block.T
        take = min(k_eff, sims.shape[1])
        part = np.argpartition(-sims, take - 1, axis=1)[:, :take] if take < sims.shape[1] \
            else np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
        best_scores = np.concatenate([best_scores, np.take_along_axis(sims, part, 1)], axis=1)
        best_rows = np.concatenate([best_rows, part + start], axis=1)
        order = np.lexsort((best_rows, -best_scores), axis=1)[:, :k_eff]
        best_scores = np.take_along_axis(best_scores, order, 1)
        best_rows = np.take_along_axis(best_rows, order, 1)
    return _padded(best_rows, best_scores, k, "exact")


def _padded(rows: np.ndarray, scores: np.ndarray, k: int, method: str) -> Neighbours:
    if rows.shape[1] < k:
        pad = k - rows.shape[1]
        rows = np.concatenate([rows, np.full((len(rows), pad), -1, np.int64)], axis=1)
        scores = np.concatenate([scores, np.full((len(scores), pad), np.nan, np.float32)], axis=1)
    return Neighbours(rows.astype(np.int64), scores.astype(np.float32), method)


def ann_available() -> bool:
    try:
        import usearch.index  # noqa: F401
    except ImportError:
        return False
    return True


def _stamp(path: Path) -> dict[str, Any]:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "connectivity": CONNECTIVITY, "expansion_add": EXPANSION_ADD}


def ann_index(path: Path, vectors: np.ndarray, threads: int = 0) -> Any:
    """The HNSW index of the vectors file ``path``: the one saved beside it when it was built
    from this very file (size and time), else built now and saved."""
    try:
        from usearch.index import Index
    except ImportError:
        raise TorchinferError("approximate search needs usearch: pip install "
                              "'torchinfer[search]' (or use --method exact)") from None
    saved, stamp_file = Path(f"{path}.usearch"), Path(f"{path}.usearch.json")
    stamp = _stamp(path)
    index = Index(ndim=vectors.shape[1], metric="ip", dtype="f32", connectivity=CONNECTIVITY,
                  expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)
    try:
        if json.loads(stamp_file.read_text()) == stamp and saved.is_file():
            index.load(str(saved))
            index.expansion_search = EXPANSION_SEARCH
            return index
    except (OSError, ValueError, RuntimeError):
        pass  # missing, stale or unreadable: built again
    index.add(np.arange(len(vectors), dtype=np.uint64), np.ascontiguousarray(vectors),
              threads=threads)
    tmp = saved.with_name(f".{saved.name}.tmp")
    index.save(str(tmp))
    os.replace(tmp, saved)
    stamp_file.write_text(json.dumps(stamp))
    return index


def ann_search(index: Any, queries: np.ndarray, k: int, threads: int = 0) -> Neighbours:
    found = index.search(np.ascontiguousarray(queries, dtype=np.float32), k, threads=threads)
    keys = np.asarray(found.keys).reshape(len(queries), -1).astype(np.int64)
    distances = np.asarray(found.distances, dtype=np.float32).reshape(len(queries), -1)
    # several queries give usearch's BatchMatches (with counts); one, a Matches holding only
    # the neighbours found
    counts = np.asarray(found.counts) if hasattr(found, "counts") else np.array([keys.shape[1]])
    scores = 1.0 - distances  # usearch's "ip" distance is 1 - dot
    for i, c in enumerate(counts):
        keys[i, c:], scores[i, c:] = -1, np.nan
    return _padded(keys[:, :k], scores[:, :k], k, "ann")


def nearest(path: Path, vectors: np.ndarray, queries: np.ndarray, k: int,
            method: str = "auto") -> Neighbours:
    """The ``k`` nearest of ``vectors`` (the rows of the file ``path``) to each query: exact
    up to ``EXACT_LIMIT`` vectors (or where usearch is not installed), HNSW above it;
    ``method`` "exact" or "ann" forces one."""
    if method not in METHODS:
        raise TorchinferError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if k < 1:
        raise TorchinferError(f"k must be at least 1, got {k}")
    if method == "ann" or (method == "auto" and len(vectors) > EXACT_LIMIT and ann_available()):
        return ann_search(ann_index(path, vectors), queries, k)
    return exact_search(vectors, queries, k)
