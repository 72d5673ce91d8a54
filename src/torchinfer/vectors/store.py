"""``embeddings.npy`` as a run writes it: a float32 (N, D) NumPy file that grows one row per
image and is a valid ``.npy`` after every row (its header is rewritten in place, so a run that
is killed leaves a file ``np.load`` reads, and ``--resume`` appends to it).

The header has a fixed size (``HEADER_BYTES``) so that the row count can grow without moving
the data. A row is written before its record: a run killed between the two leaves a row that
no record names, and ``compact`` drops such rows when the run finishes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import TorchinferError

VECTORS = "embeddings.npy"  # the file's name in a run folder
HEADER_BYTES = 128  # a multiple of 64, as NumPy aligns its own headers
MAGIC = b"\x93NUMPY\x01\x00"
COPY_ROWS = 65_536  # rows copied at a time by compact: memory stays bounded


def header(rows: int, dim: int) -> bytes:
    """A version 1.0 ``.npy`` header for a C-order little-endian float32 (rows, dim) array,
    padded to ``HEADER_BYTES``."""
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    room = HEADER_BYTES - len(MAGIC) - 2
    if len(text) + 1 > room:
        raise TorchinferError(f"{rows} x {dim} vectors do not fit one .npy header")
    body = (text.ljust(room - 1) + "\n").encode("latin1")
    return MAGIC + len(body).to_bytes(2, "little") + body


def shape_of(path: Path) -> tuple[int, int]:
    """(rows, dim) of a vectors file this module wrote; TorchinferError for any other file."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version != (1, 0):
                raise ValueError(f"format version {version}")
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            offset = f.tell()
    except (OSError, ValueError) as exc:
        raise TorchinferError(f"{path}: not a vectors file ({exc})") from None
    if offset != HEADER_BYTES or fortran or dtype != np.dtype("<f4") or len(shape) != 2:
        raise TorchinferError(f"{path}: not a vectors file written by torchinfer (float32 "
                              f"rows after a {HEADER_BYTES}-byte header)")
    return int(shape[0]), int(shape[1])


def append_vector(path: Path, vector: np.ndarray) -> int:
    """Append ``vector`` (D,) as the next row of ``path`` (created when missing); its row."""
    data = np.ascontiguousarray(vector, dtype="<f4")
    if data.ndim != 1 or data.size == 0:
        raise TorchinferError(f"a vector is 1-D, got shape {data.shape}")
    dim = int(data.shape[0])
    if not path.exists():
        with open(path, "xb") as f:
            f.write(header(0, dim))
    rows, have = shape_of(path)
    if have != dim:
        raise TorchinferError(f"{path} holds {have}-d vectors; this model gives {dim}-d ones")
    with open(path, "r+b") as f:
        f.seek(HEADER_BYTES + rows * 4 * dim)  # over a torn row a killed run left, if any
        f.write(data.tobytes())
        f.truncate()
        f.seek(0)
        f.write(header(rows + 1, dim))
    return rows


def read_vectors(path: Path) -> np.ndarray:
    """The (N, D) float32 rows of ``path``, memory-mapped (read-only)."""
    rows, dim = shape_of(path)
    if rows == 0:
        return np.zeros((0, dim), np.float32)
    return np.memmap(path, dtype="<f4", mode="r", offset=HEADER_BYTES, shape=(rows, dim))


def compact(path: Path, keep: Sequence[int]) -> None:
    """Rewrite ``path`` with only the rows ``keep``, in that order (atomically; a few rows at a
    time, whatever the file's size)."""
    rows, dim = shape_of(path)
    order = np.asarray(keep, dtype=np.int64)
    if order.size and (order.min() < 0 or order.max() >= rows):
        raise TorchinferError(f"{path} has {rows} rows; a record names row {int(order.max())}")
    if order.size == rows and np.array_equal(order, np.arange(rows)):
        return
    source = read_vectors(path)
    tmp = path.with_name(f".{path.name}.compact.tmp")  # a killed run's is cleared by --exist-ok
    with open(tmp, "wb") as f:
        f.write(header(len(order), dim))
        for start in range(0, len(order), COPY_ROWS):
            f.write(np.ascontiguousarray(source[order[start:start + COPY_ROWS]]).tobytes())
    del source
    os.replace(tmp, path)
