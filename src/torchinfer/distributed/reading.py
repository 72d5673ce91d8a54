"""The Ray tasks of a batch job: read each batch's files as bytes, and (when decoding is not
the model workers' job) decode and preprocess them.

A row of the job's dataset is one model batch: ``seq`` (its place in the input order),
``sources`` (the pickled ``Source`` list, as the driver expanded it) and, after reading,
``payload`` (the same sources with their bytes, or the decoded batch). Rows are pickled
bytes rather than Arrow columns because file names that are not UTF-8 (surrogate escapes)
must reach the records unchanged, and Arrow strings are UTF-8 only.

A file that cannot be read is not an error of the job: its source becomes "unreadable" with
the reason a local run would record ("file not found", "permission denied", "empty file (0
bytes)"...), worded by the same functions (``runner.sources``).
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np

from ..errors import first_line
from ..runner.inputs import Source
from ..runner.sources import open_error, unreadable
from ..storage.uris import is_uri, read_bytes
from ..storage.uris import unreadable as unreadable_uri

Rows = dict[str, np.ndarray]


def read_rows(rows: Rows, cwd: str) -> Rows:
    """Ray task: add ``payload``, each row's sources with their files' bytes. ``cwd``: the
    driver's working folder, which relative paths are relative to (a worker runs elsewhere)."""
    payload = [pickle.dumps([read_source(s, cwd) for s in pickle.loads(blob)])
               for blob in rows["sources"]]
    return {"seq": rows["seq"], "sources": rows["sources"], "payload": _objects(payload)}


def read_source(source: Source, cwd: str = "") -> Source:
    """An image file's bytes as an in-memory source of the same name; why it cannot be read
    as an unreadable one. Other sources pass as they are."""
    if not source.is_file or source.path is None:
        return source
    if is_uri(source.path):
        return _read_uri(source, source.path)
    path = os.path.join(cwd, source.path)
    reason = unreadable(path)  # one stat: missing, a folder, empty, a named pipe...
    if reason is not None:
        return Source(source.name, "unreadable", path=path, reason=reason)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return Source(source.name, "unreadable", path=path, reason=open_error(exc, path))
    return Source(source.name, "memory", path=path, data=data)


def _read_uri(source: Source, uri: str) -> Source:
    """An object on storage, read by the worker that runs the task (``storage.uris``)."""
    reason = unreadable_uri(uri)
    if reason is None:
        try:
            return Source(source.name, "memory", path=uri, data=read_bytes(uri))
        except OSError as exc:  # pyarrow's errors are OSErrors
            reason = first_line(exc)
    return Source(source.name, "unreadable", path=uri, reason=reason)


def decode_rows(rows: Rows, spec: Any) -> Rows:
    """Ray task: decode and preprocess each row's payload into the CPU batch the model runs
    (``Predictor.decode``), with the bytes dropped. ``spec``: the job's ``LoadSpec``."""
    from .actors import decoder_for

    predictor = decoder_for(spec)
    payload = []
    for blob in rows["payload"]:
        decoded = predictor.decode(pickle.loads(blob))
        decoded.sources = [without_data(s) for s in decoded.sources]
        payload.append(pickle.dumps(decoded))
    return {"seq": rows["seq"], "sources": rows["sources"], "payload": _objects(payload)}


def without_data(source: Source) -> Source:
    """The source less its bytes or pixels: what travels on once the batch is decoded."""
    return Source(source.name, source.kind, path=source.path, frame=source.frame,
                  reason=source.reason)


def _objects(values: list[bytes]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out
