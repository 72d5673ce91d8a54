"""Procedural "shapes" scenes: circles, squares, stars and triangles, drawn with their labels.

Every picture is made from a seed, so a dataset is a (seed, size) pair rather than files to
download: the bundled models were trained on it, and anyone can regenerate the exact images
they are evaluated on.

A scene is a textured background (a two-colour gradient, soft blotches and pixel noise) with
shapes drawn one after the other, each of a random size, rotation and colour; a later shape
occludes an earlier one. Each shape is rasterised at 4x and box-filtered down, which gives its
antialiased coverage of every pixel; the same coverage makes both the pixels (alpha
compositing) and the labels (a pixel belongs to the last shape that covers at least half of
it), so masks, boxes and pixels agree by construction. Boxes are the tight box of the VISIBLE
mask, after occlusion.

Writers put scenes on disk in the layouts the usual tools read:

- classification: ImageFolder, ``root/<class>/<index>.png``, one dominant shape per image;
- segmentation: VOC, ``root/JPEGImages/<id>.jpg``, ``root/SegmentationClass/<id>.png``
  (palette PNG of class indices, 0 = background), ``root/labels.txt``;
- detection: COCO, ``root/images/<id>.jpg`` and ``root/annotations.json`` (boxes x, y, w, h;
  masks as run-length encoding).

    python -m torchinfer.datasets --task detect --n 500 --seed 123 --out shapes-det
"""

from __future__ import annotations

import argparse
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Alphabetical, so torchvision's ImageFolder (which sorts class folders) gives the same indices.
CLASSES: tuple[str, ...] = ("circle", "square", "star", "triangle")

SUPERSAMPLE = 4  # sub-pixels per pixel side when rasterising a shape
MIN_CONTRAST = 90.0  # least RGB distance between a shape and what it is drawn on
MIN_VISIBLE = 0.6  # a shape is placed only if every shape stays at least this visible
JPEG_QUALITY = 90


@dataclass
class Instance:
    """One drawn shape: its class, outline as drawn, and the pixels still visible."""

    class_id: int  # index into CLASSES
    polygon: np.ndarray  # (K, 2) float x, y in pixels (pixel (r, c) spans [c, c+1) x [r, r+1))
    colour: tuple[int, int, int]
    mask: np.ndarray  # (H, W) bool, visible pixels after occlusion by later shapes
    drawn_area: int  # pixels the whole shape covered before anything occluded it

    @property
    def label(self) -> str:
        return CLASSES[self.class_id]

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def visible_fraction(self) -> float:
        return self.area / max(self.drawn_area, 1)

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """Tight (x0, y0, x1, y1) of the visible mask, pixel edges (x1, y1 exclusive)."""
        rows = np.flatnonzero(self.mask.any(axis=1))
        cols = np.flatnonzero(self.mask.any(axis=0))
        if len(rows) == 0:
            return (0, 0, 0, 0)
        return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


@dataclass
class Scene:
    image: Image.Image  # RGB
    instances: list[Instance]

    def label_map(self) -> np.ndarray:
        """(H, W) uint8 semantic labels: 0 background, 1 + class_id for each shape class."""
        out = np.zeros((self.image.height, self.image.width), dtype=np.uint8)
        for inst in self.instances:
            out[inst.mask] = inst.class_id + 1
        return out


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for picture ``index`` of the dataset ``seed``: each picture depends only on
    the pair, so pictures can be made in any order, or in parallel, and come out the same."""
    return np.random.default_rng([seed, index])


def shape_polygon(class_id: int, centre: tuple[float, float], radius: float, angle: float,
                  star_inner: float = 0.45) -> np.ndarray:
    """Outline of a regular shape of circumradius ``radius`` (a circle is a 64-gon: at most a
    quarter of a pixel from the true circle at the sizes drawn here)."""
    name = CLASSES[class_id]
    if name == "circle":
        n, radii = 64, np.ones(64)
    elif name == "square":
        n, radii = 4, np.ones(4)
    elif name == "triangle":
        n, radii = 3, np.ones(3)
    elif name == "star":
        n, radii = 10, np.tile([1.0, star_inner], 5)
    else:  # pragma: no cover - CLASSES and this function change together
        raise ValueError(f"no outline for class {name!r}")
    theta = angle + 2 * np.pi * np.arange(n) / n
    return np.stack([centre[0] + radius * radii * np.cos(theta),
                     centre[1] + radius * radii * np.sin(theta)], axis=1)


def coverage(polygon: np.ndarray, height: int, width: int,
             supersample: int = SUPERSAMPLE) -> np.ndarray:
    """(H, W) float32 fraction of each pixel inside ``polygon``, from ``supersample``² sub-pixels
    (only the polygon's bounding box is rasterised)."""
    out = np.zeros((height, width), dtype=np.float32)
    x0 = max(int(math.floor(polygon[:, 0].min())), 0)
    y0 = max(int(math.floor(polygon[:, 1].min())), 0)
    x1 = min(int(math.ceil(polygon[:, 0].max())) + 1, width)
    y1 = min(int(math.ceil(polygon[:, 1].max())) + 1, height)
    if x1 <= x0 or y1 <= y0:
        return out
    s = supersample
    canvas = Image.new("L", ((x1 - x0) * s, (y1 - y0) * s), 0)
    # PIL fills the sub-pixels whose centres (integer coordinates) lie inside, and those an
    # edge passes through: shift by half a sub-pixel so sub-pixel u covers [u/s, (u+1)/s) of
    # the image (edges come out at most one sub-pixel fuller)
    points = [((x - x0) * s - 0.5, (y - y0) * s - 0.5) for x, y in polygon]
    ImageDraw.Draw(canvas).polygon(points, fill=255)
    sub = np.asarray(canvas, dtype=np.float32).reshape(y1 - y0, s, x1 - x0, s)
    out[y0:y1, x0:x1] = sub.mean(axis=(1, 3)) / 255.0
    return out


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Soft random blotches in [-1, 1]: a coarse random grid, upsampled bicubically."""
    grid = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((width, height), Image.BICUBIC)
    return np.clip(np.asarray(img), -1.5, 1.5)


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32: a linear gradient between two random colours plus soft blotches."""
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (np.cos(angle) * xx / width + np.sin(angle) * yy / height)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0 + (c1 - c0) * t[..., None]
    blotches = _smooth_noise(rng, height, width, int(rng.integers(3, 9)))
    tint = rng.uniform(-1, 1, size=3)
    img = img + rng.uniform(10, 45) * blotches[..., None] * tint
    return img.astype(np.float32)


def _pick_colour(rng: np.random.Generator, avoid: list[np.ndarray]) -> np.ndarray:
    """A colour at least MIN_CONTRAST from every colour in ``avoid`` (best of a few tries)."""
    best, best_d = None, -1.0
    for _ in range(30):
        colour = rng.uniform(0, 255, size=3)
        d = min((float(np.linalg.norm(colour - a)) for a in avoid), default=1e9)
        if d >= MIN_CONTRAST:
            return colour
        if d > best_d:
            best, best_d = colour, d
    return best  # type: ignore[return-value]


def _boxes_near(a: np.ndarray, b: np.ndarray, margin: float) -> bool:
    """Whether the bounding boxes of two outlines come within ``margin`` pixels."""
    return bool(a[:, 0].min() - margin <= b[:, 0].max() and b[:, 0].min() - margin <= a[:, 0].max()
                and a[:, 1].min() - margin <= b[:, 1].max()
                and b[:, 1].min() - margin <= a[:, 1].max())


def finish_picture(rng: np.random.Generator, img: np.ndarray) -> Image.Image:
    sigma = rng.uniform(0, 10)
    img = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), mode="RGB")


def draw_shape(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray, rng: np.random.Generator,
          polygon: np.ndarray) -> None:
    """Composite a shape filled with ``colour`` plus a gentle linear shading, in place (only
    inside the outline's bounding box, where the coverage can be non-zero)."""
    h, w = alpha.shape
    x0, y0 = polygon.min(axis=0)
    x1, y1 = polygon.max(axis=0)
    c0, r0 = max(int(x0), 0), max(int(y0), 0)
    c1, r1 = min(int(math.ceil(x1)) + 1, w), min(int(math.ceil(y1)) + 1, h)
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    span = max(x1 - x0, y1 - y0, 1.0)
    t = (np.cos(angle) * (xx - (x0 + x1) / 2) + np.sin(angle) * (yy - (y0 + y1) / 2)) / span
    fill = colour + rng.uniform(0, 30) * t[..., None]  # t in about [-0.7, 0.7]
    a = alpha[r0:r1, c0:c1, None]
    window = img[r0:r1, c0:c1]
    window *= 1 - a
    window += a * fill


def generate_scene(rng: np.random.Generator, size: int | tuple[int, int] = 256, *,
                   max_shapes: int = 6, min_shapes: int = 1,
                   radius: tuple[float, float] = (0.05, 0.22)) -> Scene:
    """A scene of ``min_shapes``..``max_shapes`` shapes on a textured background.

    size: side, or (height, width). radius: circumradius range as fractions of the short side.
    Shapes lie wholly inside the picture; a shape is placed only where it leaves every earlier
    shape at least MIN_VISIBLE visible (a few tries, then it is skipped).
    """
    h, w = (size, size) if isinstance(size, int) else size
    img = background(rng, h, w)
    n = int(rng.integers(min_shapes, max_shapes + 1))
    owner = np.full((h, w), -1, dtype=np.int16)  # index of the shape each pixel belongs to
    drawn: list[tuple[int, np.ndarray, np.ndarray, int]] = []  # class, polygon, colour, area
    short = min(h, w)
    for _ in range(n):
        for _attempt in range(20):
            class_id = int(rng.integers(len(CLASSES)))
            r = rng.uniform(*radius) * short
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            polygon = shape_polygon(class_id, (cx, cy), r, rng.uniform(0, 2 * np.pi),
                                    star_inner=rng.uniform(0.38, 0.55))
            alpha = coverage(polygon, h, w)
            inside = alpha >= 0.5
            taken = owner[inside]
            if all(np.count_nonzero(owner == k) - np.count_nonzero(taken == k)
                   >= MIN_VISIBLE * drawn[k][3] for k in np.unique(taken[taken >= 0])):
                break
        else:
            continue
        # contrast with what lies under it and with every shape it touches or nearly does,
        # so that no outline between two shapes disappears
        avoid = [img[inside].mean(axis=0)] + [col for _, p, col, _ in drawn
                                               if _boxes_near(p, polygon, margin=3.0)]
        colour = _pick_colour(rng, avoid)
        draw_shape(img, alpha, colour, rng, polygon)
        owner[inside] = len(drawn)
        drawn.append((class_id, polygon, colour, int(inside.sum())))
    instances = [Instance(c, p, tuple(int(v) for v in np.clip(np.rint(col), 0, 255)),
                          owner == k, area)
                 for k, (c, p, col, area) in enumerate(drawn)]
    return Scene(finish_picture(rng, img), instances)


def generate_single(rng: np.random.Generator, size: int = 128, class_id: int | None = None,
                    radius: tuple[float, float] = (0.2, 0.42)) -> Scene:
    """One dominant shape near the centre (for classification): random size, rotation and
    colours on a textured background."""
    h = w = size
    img = background(rng, h, w)
    if class_id is None:
        class_id = int(rng.integers(len(CLASSES)))
    r = rng.uniform(*radius) * size
    shift = (size / 2 - r) * 0.6  # off-centre, but wholly inside
    cx, cy = size / 2 + rng.uniform(-shift, shift, size=2)
    polygon = shape_polygon(class_id, (cx, cy), r, rng.uniform(0, 2 * np.pi),
                            star_inner=rng.uniform(0.38, 0.55))
    alpha = coverage(polygon, h, w)
    inside = alpha >= 0.5
    colour = _pick_colour(rng, [img[inside].mean(axis=0)])
    draw_shape(img, alpha, colour, rng, polygon)
    inst = Instance(class_id, polygon, tuple(int(v) for v in np.clip(np.rint(colour), 0, 255)),
                    inside, int(inside.sum()))
    return Scene(finish_picture(rng, img), [inst])


def jpeg_roundtrip(image: Image.Image, quality: int = JPEG_QUALITY) -> Image.Image:
    """The image as it reads back from a JPEG file of this quality (what the writers save)."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


# --------------------------------------------------------------------------- writers


def write_classification(root: str | Path, n: int, seed: int, *, size: int = 128) -> Path:
    """ImageFolder layout ``root/<class>/<index>.png``, classes in turn (balanced)."""
    root = Path(root)
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        class_id = i % len(CLASSES)
        scene = generate_single(scene_rng(seed, i), size, class_id=class_id)
        scene.image.save(root / CLASSES[class_id] / f"{i:05d}.png")
    (root / "labels.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    return root


# a scene's dominant class covers at least this many times the next class's visible area
DOMINANCE = 1.5


def dominant_class(scene: Scene, ratio: float = DOMINANCE) -> int | None:
    """The class with the largest visible area (summed over its shapes), or None when the
    next class covers more than 1/``ratio`` of it (or there is no shape)."""
    areas = np.zeros(len(CLASSES), dtype=np.int64)
    for inst in scene.instances:
        areas[inst.class_id] += inst.area
    first, second = np.sort(areas)[::-1][:2]
    return int(areas.argmax()) if first > 0 and first >= ratio * second else None


def write_dominant(root: str | Path, n: int, seed: int, *, size: int = 256) -> Path:
    """ImageFolder layout of whole scenes, ``root/<dominant class>/<index>.jpg``: the first
    ``n`` scenes of ``seed`` whose dominant class is well defined (``dominant_class``)."""
    root = Path(root)
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    kept = i = 0
    while kept < n:
        scene = generate_scene(scene_rng(seed, i), size)
        dominant = dominant_class(scene)
        if dominant is not None:
            scene.image.save(root / CLASSES[dominant] / f"{i:05d}.jpg", quality=JPEG_QUALITY)
            kept += 1
        i += 1
    (root / "labels.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    return root


def write_segmentation(root: str | Path, n: int, seed: int, *, size: int | tuple[int, int] = 256,
                       max_shapes: int = 6) -> Path:
    """VOC layout: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNG of class
    indices: 0 background, 1.. the shape classes), ``ImageSets/Segmentation/all.txt`` and
    ``labels.txt`` (background first)."""
    from ..draw import voc_palette

    root = Path(root)
    images, masks = root / "JPEGImages", root / "SegmentationClass"
    lists = root / "ImageSets" / "Segmentation"
    for folder in (images, masks, lists):
        folder.mkdir(parents=True, exist_ok=True)
    palette = voc_palette().ravel().tolist()
    ids = []
    for i in range(n):
        scene = generate_scene(scene_rng(seed, i), size, max_shapes=max_shapes)
        image_id = f"{i:05d}"
        scene.image.save(images / f"{image_id}.jpg", quality=JPEG_QUALITY)
        label = Image.fromarray(scene.label_map(), mode="P")
        label.putpalette(palette)
        label.save(masks / f"{image_id}.png")
        ids.append(image_id)
    (lists / "all.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    (root / "labels.txt").write_text("\n".join(("background", *CLASSES)) + "\n", encoding="utf-8")
    return root


def coco_annotations(scene: Scene, image_id: int, first_annotation_id: int, *,
                     min_visible: float = 0.5) -> list[dict]:
    """COCO records for a scene's shapes: bbox (x, y, w, h) and area of the visible mask,
    segmentation as RLE; shapes less than ``min_visible`` visible are left out."""
    from pycocotools import mask as mask_utils

    records = []
    for inst in scene.instances:
        if inst.area == 0 or inst.visible_fraction < min_visible:
            continue
        x0, y0, x1, y1 = inst.bbox
        rle = mask_utils.encode(np.asfortranarray(inst.mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        records.append({"id": first_annotation_id + len(records), "image_id": image_id,
                        "category_id": inst.class_id + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": inst.area, "iscrowd": 0, "segmentation": rle})
    return records


def write_detection(root: str | Path, n: int, seed: int, *, size: int | tuple[int, int] = 256,
                    max_shapes: int = 6, min_visible: float = 0.5) -> Path:
    """COCO layout: ``images/<id>.jpg`` and ``annotations.json`` (image ids 1..n, category ids
    1..C in CLASSES order)."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(n):
        scene = generate_scene(scene_rng(seed, i), size, max_shapes=max_shapes)
        file_name = f"{i:05d}.jpg"
        scene.image.save(root / "images" / file_name, quality=JPEG_QUALITY)
        images.append({"id": i + 1, "file_name": file_name, "width": scene.image.width,
                       "height": scene.image.height})
        annotations += coco_annotations(scene, i + 1, len(annotations) + 1,
                                        min_visible=min_visible)
    coco = {"info": {"description": f"torchinfer shapes, seed {seed}", "version": "1"},
            "images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": name, "supercategory": "shape"}
                           for k, name in enumerate(CLASSES)]}
    (root / "annotations.json").write_text(json.dumps(coco), encoding="utf-8")
    return root


WRITERS = {"classify": write_classification, "segment": write_segmentation,
           "detect": write_detection}


def iter_scenes(seed: int, n: int, *, start: int = 0, **kwargs) -> Iterator[Scene]:
    """Scenes ``start``..``start + n - 1`` of the dataset ``seed`` (generate_scene's kwargs)."""
    for i in range(start, start + n):
        yield generate_scene(scene_rng(seed, i), **kwargs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m torchinfer.datasets",
                                     description="Write a procedural shapes dataset.")
    # the tasks this generator writes a layout for (WRITERS), not torchinfer's task registry:
    # writing pictures needs neither torch nor the predictors
    parser.add_argument("--task", choices=list(WRITERS), required=True)
    parser.add_argument("--n", type=int, default=500, help="number of images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="folder to write")
    parser.add_argument("--size", type=int, default=None,
                        help="image side in pixels (default 128 classify, 256 otherwise)")
    parser.add_argument("--max-shapes", type=int, default=6, help="segment/detect only")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    kwargs = {} if args.size is None else {"size": args.size}
    if args.task != "classify":
        kwargs["max_shapes"] = args.max_shapes
    root = WRITERS[args.task](args.out, args.n, args.seed, **kwargs)
    print(f"wrote {args.n} {args.task} images to {root}")


if __name__ == "__main__":
    main()
