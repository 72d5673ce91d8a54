"""A folder of distinct shapes scenes with copies planted on purpose, and the list of the
planted pairs: what ``torchinfer duplicates`` must find, and nothing else.

Each planted original gets three copies, as duplicates arise in real collections: re-encoded
(a JPEG at quality ``REENCODE_QUALITY``), resized (to ``RESIZE`` of its sides) and cropped
(``CROP`` of its width and height cut away, at a random offset). ``view`` makes the same kinds
of copy at random strengths, for training an embedding that ignores them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from .shapes import generate_scene, jpeg_roundtrip, scene_rng

REENCODE_QUALITY = 60
RESIZE = 0.5
CROP = 0.05
KINDS = ("jpeg", "resized", "cropped")


def planted_copy(image: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """One copy of ``image`` of ``kind`` (``KINDS``)."""
    if kind == "jpeg":
        return jpeg_roundtrip(image, REENCODE_QUALITY)
    if kind == "resized":
        size = (max(1, round(image.width * RESIZE)), max(1, round(image.height * RESIZE)))
        return image.resize(size, Image.Resampling.BILINEAR)
    if kind == "cropped":
        w, h = image.size
        cw, ch = round(w * (1 - CROP)), round(h * (1 - CROP))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return image.crop((left, top, left + cw, top + ch))
    raise ValueError(f"unknown copy kind {kind!r}: one of {KINDS}")


def view(image: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    """A random copy of ``image`` at ``size`` x ``size``: up to twice ``CROP`` cut away, the
    resolution lowered down to a third, a JPEG at quality 30-95 half of the time."""
    w, h = image.size
    keep = rng.uniform(1 - 2 * CROP, 1.0, size=2)
    cw, ch = max(8, round(w * keep[0])), max(8, round(h * keep[1]))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = image.crop((left, top, left + cw, top + ch))
    low = rng.uniform(1 / 3, 1.0)
    if low < 0.95:
        out = out.resize((max(8, round(cw * low)), max(8, round(ch * low))),
                         Image.Resampling.BILINEAR)
    out = out.resize((size, size), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        out.save(buffer, "JPEG", quality=int(rng.integers(30, 96)))
        buffer.seek(0)
        out = Image.open(buffer).convert("RGB")
    return out


def write_duplicates(root: str | Path, n: int, seed: int, *, planted: int = 10,
                     size: int = 160) -> Path:
    """``n`` distinct scenes (``scene-<i>.png``) in ``root``, ``planted`` of them copied three
    ways (``scene-<i>.<kind>.jpg|png``), and ``planted.json``: the pairs a duplicate finder must
    report, as file names (every two files of one original)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 7])
    originals = set(rng.choice(n, min(planted, n), replace=False).tolist())
    pairs = []
    for i in range(n):
        scene = generate_scene(scene_rng(seed, i), size)
        name = f"scene-{i:04d}.png"
        scene.image.save(root / name)
        if i not in originals:
            continue
        names = [name]
        for kind in KINDS:
            copy_name = f"scene-{i:04d}.{kind}.{'jpg' if kind == 'jpeg' else 'png'}"
            if kind == "jpeg":  # encoded once, as a re-saved file is
                scene.image.save(root / copy_name, "JPEG", quality=REENCODE_QUALITY)
            else:
                planted_copy(scene.image, kind, rng).save(root / copy_name)
            names.append(copy_name)
        pairs += [[a, b] for j, a in enumerate(names) for b in names[j + 1:]]
    (root / "planted.json").write_text(json.dumps({"pairs": pairs}, indent=1))
    return root


def write_copies_folder(root: str | Path, n: int, seed: int, *, size: int = 160) -> Path:
    """``n`` scenes, each with its three copies, as an ImageFolder: ``root/scene-<i>/`` holds
    the scene and its copies, so that ``eval embed``'s recall@1 is "a picture's nearest other
    picture is a copy of the same scene"."""
    root = Path(root)
    rng = np.random.default_rng([seed, 8])
    for i in range(n):
        folder = root / f"scene-{i:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        scene = generate_scene(scene_rng(seed, i), size)
        scene.image.save(folder / "original.png")
        scene.image.save(folder / "jpeg.jpg", "JPEG", quality=REENCODE_QUALITY)
        for kind in ("resized", "cropped"):
            planted_copy(scene.image, kind, rng).save(folder / f"{kind}.png")
    return root
