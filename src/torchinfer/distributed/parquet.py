"""``predictions.parquet``: the records of ``predictions.jsonl`` as a table, for the tools that
read Parquet (pandas, DuckDB, Spark, Ray Data itself)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import TorchinferError
from ..runner.sinks import read_jsonl
from ..runner.sources import shown
from ..vectors.store import VECTORS, read_vectors


def write_parquet(jsonl: str | Path) -> Path:
    """Write ``predictions.parquet`` beside ``jsonl`` (atomically), one row per record, nested
    fields as Arrow structs and lists; a field a record lacks (``error`` of a success,
    ``topk`` of a failure) is null. Parquet strings are UTF-8: a file name that is not (kept
    as surrogate escapes in the JSONL) is written with ``\\xff``-style escapes. The records
    are read whole: about 1 KB of memory per record while writing. Beside a run's
    ``embeddings.npy`` (``predict embed``), each record's vector (its ``row``) is the column
    ``embedding``, a fixed-size list of float32."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise TorchinferError("Parquet output needs pyarrow: pip install 'torchinfer[ray]'") \
            from None
    jsonl = Path(jsonl)
    records = [_utf8(r) for r in read_jsonl(jsonl)]
    table = pa.Table.from_struct_array(pa.array(records)) if records else pa.table({})
    vectors_file = jsonl.parent / VECTORS
    if records and vectors_file.is_file():
        vectors = read_vectors(vectors_file)
        rows = [r.get("row") if isinstance(r.get("row"), int) else None for r in records]
        column = [None if i is None else vectors[i] for i in rows]
        table = table.append_column("embedding", pa.array(
            column, type=pa.list_(pa.float32(), vectors.shape[1])))
    out = jsonl.with_suffix(".parquet")
    tmp = out.with_name(f".{out.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(out)
    return out


def _utf8(value: Any) -> Any:
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, dict):
        return {k: _utf8(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_utf8(v) for v in value]
    return value
