"""Shapes scenes with depth: flat shapes at known distances in front of a slanted, tiled
background, seen through haze, so the depth of every pixel is exact by construction.

A pinhole camera (focal length ``FOCAL`` x the short side, in pixels) looks at a background
whose depth varies linearly across the picture; each shape is a flat cut-out facing the camera
at its own distance, drawn farthest first, so a nearer shape occludes a farther one as it
would. Three cues say how far a thing is, as in photographs: the background is tiled with
squares of ``TILE`` metres, whose size in the picture shrinks with distance; a shape's size in
the picture is its physical size (``SHAPE_SIZE``, within 10 %) over its distance; and haze
blends every colour toward a grey ``HAZE`` by 1 - exp(-d / ``VISIBILITY``). A pixel's depth is
its shape's when the shape covers at least half of it, else the background's at the pixel's
centre.

Written in NYUv2's layout: ``root/rgb/<id>.png`` and ``root/depth/<id>.png`` (16-bit
millimetres), what ``torchinfer eval depth`` reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .shapes import CLASSES, background, coverage, draw_shape, finish_picture, scene_rng, shape_polygon

FOCAL = 0.9  # focal length over the picture's short side
HAZE = np.array([200.0, 205.0, 212.0], dtype=np.float32)
VISIBILITY = 6.0  # metres: a thing this far is 63% haze
TILE = 0.5  # metres: the side of the background's squares
PLANE_DEPTH = (5.0, 8.0)  # metres at the picture's centre
PLANE_SLOPE = 1.5  # most metres the plane recedes from the centre to an edge, each way
SHAPE_DEPTH = (1.2, 3.2)  # metres: always in front of the plane (at least 5 - 2 x 1.5 = 2 m)
SHAPE_SIZE = (0.41, 0.5)  # circumradius in metres
LAYOUT = ("rgb", "depth")  # NYUv2's folders: the pictures, the depth maps


@dataclass
class DepthScene:
    image: Image.Image  # RGB
    depth: np.ndarray  # (H, W) float32 metres
    classes: list[int]  # the shapes drawn, farthest first


def haze(colour: np.ndarray, depth: np.ndarray | float) -> np.ndarray:
    """``colour`` (..., 3) seen through haze at ``depth`` metres."""
    f = 1.0 - np.exp(-np.asarray(depth, dtype=np.float32) / VISIBILITY)
    return colour * (1.0 - f[..., None]) + HAZE * f[..., None]


def tiled(img: np.ndarray, depth: np.ndarray, focal: float,
          rng: np.random.Generator) -> np.ndarray:
    """``img`` (H, W, 3) with squares of ``TILE`` metres a side: a pixel at depth d shows the
    point (x - cx) d / f, (y - cy) d / f of the background, whose square is lighter or
    darker by a random amount."""
    h, w = depth.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    u = (xx - w / 2) * depth / focal / TILE + rng.uniform(0, 1)
    v = (yy - h / 2) * depth / focal / TILE + rng.uniform(0, 1)
    checker = (np.floor(u) + np.floor(v)) % 2 * 2 - 1  # -1 or +1
    return img + rng.uniform(20, 45) * checker[..., None]


def generate_depth_scene(rng: np.random.Generator, size: int | tuple[int, int] = 256, *,
                         max_shapes: int = 5, min_shapes: int = 1) -> DepthScene:
    """A scene of ``min_shapes``..``max_shapes`` shapes before a slanted plane, with its
    exact depth map."""
    h, w = (size, size) if isinstance(size, int) else size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    centre = rng.uniform(*PLANE_DEPTH)
    sx, sy = rng.uniform(-PLANE_SLOPE, PLANE_SLOPE, size=2)
    depth = (centre + 2 * sx * ((xx + 0.5) / w - 0.5) + 2 * sy * ((yy + 0.5) / h - 0.5))
    focal = FOCAL * min(h, w)
    img = haze(tiled(background(rng, h, w), depth, focal, rng), depth)
    n = int(rng.integers(min_shapes, max_shapes + 1))
    distances = np.sort(rng.uniform(*SHAPE_DEPTH, size=n))[::-1]  # farthest drawn first
    classes = []
    for z in distances:
        class_id = int(rng.integers(len(CLASSES)))
        r = min(focal * rng.uniform(*SHAPE_SIZE) / z, 0.45 * min(h, w))
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
        polygon = shape_polygon(class_id, (cx, cy), r, rng.uniform(0, 2 * np.pi),
                                star_inner=rng.uniform(0.38, 0.55))
        alpha = coverage(polygon, h, w)
        colour = haze(rng.uniform(0, 255, size=3).astype(np.float32), float(z))
        draw_shape(img, alpha, colour, rng, polygon)
        depth[alpha >= 0.5] = z
        classes.append(class_id)
    return DepthScene(finish_picture(rng, img), depth.astype(np.float32), classes)


def write_depth_scenes(root: str | Path, n: int, seed: int, *, size: int | tuple[int, int] = 256,
                       start: int = 0) -> Path:
    """``n`` scenes of dataset ``seed`` in NYUv2's layout: rgb/<id>.png, and depth/<id>.png in
    16-bit millimetres."""
    root = Path(root)
    for folder in LAYOUT:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        scene = generate_depth_scene(scene_rng(seed, i), size)
        scene.image.save(root / LAYOUT[0] / f"{i:06d}.png")
        millimetres = np.round(scene.depth * 1000.0).astype(np.uint16)
        Image.fromarray(millimetres).save(root / LAYOUT[1] / f"{i:06d}.png")
    return root
