"""Near-duplicate pairs and groups among a run's vectors, and a contact sheet of each group.

A pair is two inputs whose vectors' cosine similarity is at least the threshold; a group is a
connected set of pairs (copies of copies end up together). Up to ``EXACT_LIMIT`` vectors every
pair is compared, a block of rows at a time; above it, each vector's ``NEIGHBOURS`` nearest
from the approximate index are (a group larger than that is still joined through its pairs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputError, TorchinferError
from ..runner.images import ImageLoader
from ..runner.sinks import save_image_atomic
from .index import EXACT_LIMIT, ann_available, ann_index, ann_search

NEIGHBOURS = 32  # per vector, with the approximate index
PAIR_BLOCK = 2048  # rows compared with all the others at a time by the exact pass
MAX_PAIRS = 10_000_000  # a threshold so low that everything pairs is refused, not listed
THUMB = 160  # pixels: a contact sheet's cell
SHEET_COLUMNS = 6
SHEET_MAX = 48  # images on one group's sheet (the rest are listed in the JSONL)


@dataclass(frozen=True)
class Pair:
    a: int
    b: int
    similarity: float


def near_pairs(vectors: np.ndarray, threshold: float, *, method: str = "auto",
               path: Path | None = None) -> list[Pair]:
    """Every pair (a < b) with cosine similarity >= ``threshold``, most similar first."""
    if not -1.0 <= threshold <= 1.0:
        raise TorchinferError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    n = len(vectors)
    use_ann = method == "ann" or (method == "auto" and n > EXACT_LIMIT and ann_available())
    found: list[Pair] = []
    if use_ann:
        if path is None:
            raise TorchinferError("approximate pairs need the vectors' file")
        index = ann_index(path, vectors)
        for start in range(0, n, PAIR_BLOCK):
            block = np.asarray(vectors[start:start + PAIR_BLOCK], dtype=np.float32)
            near = ann_search(index, block, min(NEIGHBOURS + 1, n))
            for i, (rows, scores) in enumerate(zip(near.rows, near.scores)):
                a = start + i
                found += [Pair(a, int(b), float(s)) for b, s in zip(rows, scores)
                          if b > a and s >= threshold]
            _check_count(len(found), threshold)
    else:
        for start in range(0, n, PAIR_BLOCK):
            block = np.asarray(vectors[start:start + PAIR_BLOCK], dtype=np.float32)
            sims = block @ np.asarray(vectors, dtype=np.float32).T
            rows, cols = np.nonzero(sims >= threshold)
            keep = cols > rows + start
            found += [Pair(int(r + start), int(c), float(sims[r, c]))
                      for r, c in zip(rows[keep], cols[keep])]
            _check_count(len(found), threshold)
    return sorted(found, key=lambda p: (-p.similarity, p.a, p.b))


def _check_count(count: int, threshold: float) -> None:
    if count > MAX_PAIRS:
        raise TorchinferError(f"more than {MAX_PAIRS:,} pairs at threshold {threshold}: it is "
                              "too low to mean 'duplicate'; raise it")


def groups(n: int, pairs: Sequence[Pair]) -> list[list[int]]:
    """The connected sets of two or more rows, largest first (each sorted)."""
    parent = list(range(n))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        ra, rb = root(p.a), root(p.b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = {}
    for row in {r for p in pairs for r in (p.a, p.b)}:
        members.setdefault(root(row), []).append(row)
    return sorted((sorted(m) for m in members.values()), key=lambda g: (-len(g), g[0]))


def contact_sheet(sources: Sequence[str], path: Path, loader: ImageLoader | None = None) -> Path:
    """The images of one group side by side, each captioned with its file name (one that
    cannot be read is a grey cell saying so)."""
    loader = loader or ImageLoader()
    shown = list(sources)[:SHEET_MAX]
    columns = min(SHEET_COLUMNS, len(shown))
    rows = -(-len(shown) // columns)
    caption = 14
    sheet = Image.new("RGB", (columns * THUMB, rows * (THUMB + caption)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, source in enumerate(shown):
        x, y = (i % columns) * THUMB, (i // columns) * (THUMB + caption)
        try:
            image = loader.load(source, source, min_short_side=THUMB)
            image.thumbnail((THUMB - 4, THUMB - 4))
            sheet.paste(image, (x + (THUMB - image.width) // 2, y + (THUMB - image.height) // 2))
        except (InputError, OSError) as exc:
            draw.rectangle([x + 2, y + 2, x + THUMB - 3, y + THUMB - 3], fill=(200, 200, 200))
            draw.text((x + 6, y + THUMB // 2), str(getattr(exc, "reason", exc))[:24],
                      fill=(0, 0, 0))
        draw.text((x + 4, y + THUMB), Path(source).name[:26], fill=(0, 0, 0))
    return save_image_atomic(sheet, path, quality=90)
