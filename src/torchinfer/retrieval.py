"""Search a ``predict embed`` run: nearest neighbours of images or of the run's own rows
(``search``), and the near-duplicate pairs and groups among its inputs (``duplicates``).

A query image is embedded by the model that made the index, loaded with the options the run
recorded (``run.json``), so that its vector is comparable with the index's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import InputError, TorchinferError
from .runner.sinks import dumps, write_bytes_atomic
from .vectors.duplicates import Pair, contact_sheet, groups, near_pairs
from .vectors.run_index import RunIndex
from .vectors.store import VECTORS

# cosine similarity: the middle of the gap measured with the bundled shapes_embed on unseen
# scenes (least similar planted copy 0.966, most similar pair of other scenes 0.886;
# scripts/train_shapes.py --task embed --evaluate-only). Another model has its own gap:
# duplicates reports how near each input's nearest other is, to choose by
DEFAULT_THRESHOLD = 0.93


@dataclass(frozen=True)
class Match:
    row: int
    source: str
    similarity: float

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "source": self.source, "similarity": round(self.similarity, 6)}


@dataclass(frozen=True)
class QueryResult:
    """One query's nearest rows, best first; ``row``: the query's own row when it is one of
    the index's inputs (left out of its matches); ``error``: why it has none."""

    query: str
    matches: tuple[Match, ...] = ()
    row: int | None = None
    error: str | None = None
    method: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"query": self.query}
        if self.row is not None:
            out["row"] = self.row
        if self.error is not None:
            out["error"] = self.error
        else:
            out["method"] = self.method
            out["matches"] = [m.to_dict() for m in self.matches]
        return out


def search(queries: Sequence[str | int | os.PathLike | Image.Image],
           index: str | os.PathLike | RunIndex, *, k: int = 10, method: str = "auto",
           device: str = "auto", batch_size: int | None = None) -> list[QueryResult]:
    """The ``k`` nearest inputs of ``index`` (a ``predict embed`` run folder) to each query,
    by cosine similarity. A query is a row number of the index, an input the index holds (its
    stored vector), or an image (a path or a PIL image), embedded by the index's model."""
    run = index if isinstance(index, RunIndex) else RunIndex.open(index)
    vectors: list[np.ndarray | None] = []
    results: list[QueryResult] = []
    to_embed: list[tuple[int, Any, str]] = []
    for i, query in enumerate(queries):
        row = _row(run, query)
        name = query if isinstance(query, str) else \
            f"row {query}" if isinstance(query, int) else \
            os.fspath(query) if isinstance(query, os.PathLike) else f"image {i}"
        results.append(QueryResult(query=name, row=row))
        if row is not None:
            vectors.append(np.asarray(run.vectors[row], dtype=np.float32))
        else:
            vectors.append(None)
            to_embed.append((i, os.fspath(query) if isinstance(query, os.PathLike) else query,
                             name))
    if to_embed:
        predictor = _index_predictor(run, device=device, batch_size=batch_size)
        for (i, _, name), embedded in zip(to_embed, predictor([q for _, q, _ in to_embed])):
            if embedded.ok and embedded.dim != run.dim:
                raise TorchinferError(f"the index's model now gives {embedded.dim}-d vectors, "
                                      f"the index holds {run.dim}-d ones")
            if embedded.ok:
                vectors[i] = embedded.vector
            else:
                results[i] = QueryResult(query=name, error=embedded.error)
    asked = [i for i, v in enumerate(vectors) if v is not None]
    if asked:
        found = run.search(np.stack([vectors[i] for i in asked]), k + 1, method)
        for i, rows, scores in zip(asked, found.rows, found.scores):
            own = results[i].row
            matches = tuple(Match(int(r), run.sources[int(r)], float(s))
                            for r, s in zip(rows, scores) if r >= 0 and r != own)[:k]
            results[i] = QueryResult(query=results[i].query, row=own, matches=matches,
                                     method=found.method)
    return results


def _row(run: RunIndex, query: Any) -> int | None:
    if isinstance(query, bool):
        raise TorchinferError(f"a query is a row, a file or an image, not {query!r}")
    if isinstance(query, (int, np.integer)):
        if not 0 <= int(query) < len(run):
            raise TorchinferError(f"row {query} is not in the index ({len(run)} rows)")
        return int(query)
    if isinstance(query, (str, os.PathLike)):
        return run.row_of(os.fspath(query))
    return None


def _index_predictor(run: RunIndex, **speed: Any) -> Any:
    from .api import load
    from .models.loader import holds_weights

    task, model, weights, options = run.model_request()
    options.update({k: v for k, v in speed.items() if v is not None})
    # a run records the weights file it read; a model that brings its own (a bundled name, a
    # folder) is named alone, its file checked unchanged by model_request
    return load(task, model, None if holds_weights(model) else weights, **options)


@dataclass
class DuplicatesReport:
    """``pairs`` (rows a < b, similarity), ``groups`` (rows), and the files written."""

    threshold: float
    images: int
    pairs: list[Pair] = field(default_factory=list)
    groups: list[list[int]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    nearest: dict[str, float] = field(default_factory=dict)  # percentiles of the nearest's


def duplicates(index: str | os.PathLike | RunIndex, *, threshold: float = DEFAULT_THRESHOLD,
               out: str | os.PathLike | None = None, sheets: bool = True,
               method: str = "auto") -> DuplicatesReport:
    """Near-duplicate pairs (cosine similarity >= ``threshold``) and groups among the inputs
    of ``index``; written to ``out`` (default: ``<index>/duplicates``): ``pairs.jsonl``,
    ``groups.jsonl`` and, with ``sheets``, a contact sheet per group (``group-0001.jpg``)."""
    run = index if isinstance(index, RunIndex) else RunIndex.open(index)
    pairs = near_pairs(run.vectors, threshold, method=method, path=run.folder / VECTORS)
    found = groups(len(run), pairs)
    report = DuplicatesReport(threshold=threshold, images=len(run), pairs=pairs, groups=found,
                              nearest=_nearest_percentiles(run, method))
    folder = Path(out) if out is not None else run.folder / "duplicates"
    folder.mkdir(parents=True, exist_ok=True)
    src = run.sources
    report.files["pairs"] = str(write_bytes_atomic(folder / "pairs.jsonl", b"".join(
        dumps({"a": src[p.a], "b": src[p.b], "rows": [p.a, p.b],
               "similarity": round(p.similarity, 6)}).encode() + b"\n" for p in pairs)))
    lines = []
    for number, members in enumerate(found, 1):
        line: dict[str, Any] = {"group": number, "size": len(members),
                                "sources": [src[r] for r in members], "rows": members}
        if sheets:
            try:
                line["sheet"] = str(contact_sheet([src[r] for r in members],
                                                  folder / f"group-{number:04d}.jpg"))
            except (InputError, OSError) as exc:
                line["sheet_error"] = str(exc)
        lines.append(dumps(line).encode() + b"\n")
    report.files["groups"] = str(write_bytes_atomic(folder / "groups.jsonl", b"".join(lines)))
    return report


def _nearest_percentiles(run: RunIndex, method: str) -> dict[str, float]:
    """How similar each input is to its nearest other input (a sample of 2,000 of them):
    what a threshold should sit above, for this model."""
    n = len(run)
    if n < 2:
        return {}
    sample = np.random.default_rng(0).choice(n, min(n, 2000), replace=False)
    found = run.search(np.asarray(run.vectors[np.sort(sample)]), 2, method)
    own = np.sort(sample)[:, None]
    best = np.where(found.rows[:, 0:1] == own, found.scores[:, 1:2], found.scores[:, 0:1])[:, 0]
    return {f"p{q}": round(float(np.nanpercentile(best, q)), 4) for q in (5, 50, 95)}
