"""A ``predict embed`` run folder as a search index: its vectors (``embeddings.npy``), which
input each row is (``predictions.jsonl``'s ``row``), and how the vectors were made (the run's
fingerprint in ``run.json``: the model, its weights and options, so that a query image is
embedded by the same model the same way)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TorchinferError
from ..runner.sinks import read_jsonl
from .index import Neighbours, nearest
from .store import VECTORS, read_vectors

# what a run's fingerprint holds beyond the options the model is loaded with
_RUN_KEYS = frozenset({"task", "model", "weights", "video_stride", "save_vis", "save_masks",
                       "sources"})


@dataclass(frozen=True)
class RunIndex:
    """``vectors`` (N, D) float32 memory-mapped; ``sources[i]`` the input of row i."""

    folder: Path
    vectors: np.ndarray
    sources: tuple[str, ...]
    fingerprint: dict[str, Any]

    @classmethod
    def open(cls, folder: str | os.PathLike) -> RunIndex:
        """The finished run in ``folder``; TorchinferError (one line) saying what is missing."""
        root = Path(folder)
        vectors_file, records_file = root / VECTORS, root / "predictions.jsonl"
        if not vectors_file.is_file() or not records_file.is_file():
            partial = (root / "predictions.jsonl.partial").is_file()
            raise TorchinferError(
                f"{root} is not a finished embed run (no {VECTORS} and predictions.jsonl"
                f"{'; the run was interrupted: finish it with --resume' if partial else ''})"
                f"; make one with: torchinfer predict embed IMAGES -m MODEL --out {root}")
        try:
            fingerprint = json.loads((root / "run.json").read_text("utf-8"))["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError):
            raise TorchinferError(f"{root}/run.json is missing or not a run's record") from None
        vectors = read_vectors(vectors_file)
        sources: list[str | None] = [None] * len(vectors)
        for record in read_jsonl(records_file):
            row = record.get("row")
            if isinstance(row, int):
                if not 0 <= row < len(vectors):
                    raise TorchinferError(f"{records_file}: row {row} is beyond the "
                                          f"{len(vectors)} vectors of {vectors_file}")
                sources[row] = str(record["source"])
        if any(s is None for s in sources):
            raise TorchinferError(f"{vectors_file} has rows no record names: the run did not "
                                  "finish (run it again with --resume)")
        return cls(root, vectors, tuple(s for s in sources if s is not None), fingerprint)

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def row_of(self, source: str) -> int | None:
        """The row of an input named as the run named it, or as the same file."""
        if source in self._by_source:
            return self._by_source[source]
        try:
            return self._by_source.get(os.path.realpath(source))
        except (OSError, ValueError):
            return None

    @cached_property
    def _by_source(self) -> dict[str, int]:
        """Each source, as named and resolved, to its first row (built on the first lookup)."""
        rows: dict[str, int] = {}
        for i, s in enumerate(self.sources):
            rows.setdefault(s, i)
            rows.setdefault(os.path.realpath(s), i)
        return rows

    def search(self, queries: np.ndarray, k: int, method: str = "auto") -> Neighbours:
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise TorchinferError(f"queries must be (Q, {self.dim}) vectors, got "
                                  f"{tuple(queries.shape)}")
        return nearest(self.folder / VECTORS, self.vectors, queries, k, method)

    def model_request(self) -> tuple[str, str, str | None, dict[str, Any]]:
        """(task, model, weights, load options) that embedded the vectors; TorchinferError
        when a file among them changed since (its vectors would not be comparable)."""
        fp = self.fingerprint
        options = {k: _unstamped(v, k) for k, v in fp.items() if k not in _RUN_KEYS}
        weights = fp.get("weights")
        return (str(fp.get("task")), str(_unstamped(fp.get("model"), "model")),
                None if weights is None else str(_unstamped(weights, "weights")), options)


def _unstamped(value: Any, what: str) -> Any:
    """A fingerprint's file stamp ({path, size, mtime_ns}) -> its path, if the file is the same."""
    if not (isinstance(value, dict) and {"path", "size", "mtime_ns"} <= value.keys()):
        return value
    path = str(value["path"])
    try:
        st = os.stat(path)
    except OSError:
        raise TorchinferError(f"the {what} file the index was made with is gone: {path}") from None
    if (st.st_size, st.st_mtime_ns) != (value["size"], value["mtime_ns"]):
        raise TorchinferError(f"the {what} file {path} changed since the index was made: "
                              "embed the images again (predict embed --exist-ok)")
    return path
