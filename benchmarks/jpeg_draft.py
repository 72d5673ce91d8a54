"""What JPEG draft decoding (libjpeg DCT scaling, ``jpeg_draft=True``) costs in accuracy and
saves in time, measured against a full decode in one run:

  1. pixels: the photographs saved as large JPEGs (short side 1280), full decode vs draft, each
     resized + centre-cropped to 224 as torchvision does: mean and max |difference| in levels
  2. a trained model: the bundled shapes classifier on new pictures drawn at --size px, top-1
     against the drawn truth with each decode, and how often the two agree
  3. time: decode + resize + crop per image, full vs draft, on the same pictures

    python benchmarks/jpeg_draft.py [--images 300] [--size 640] [--seed 777]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torchvision.transforms.functional as F
from PIL import Image

import torchinfer as ti
from torchinfer.datasets import write_classification
from torchinfer.runner.images import ImageLoader
from torchinfer.testing import load_photographs


def pixel_differences() -> list[tuple[str, float, int]]:
    loader = ImageLoader()
    rows = []
    for name, img in load_photographs().items():
        scale = 1280 / min(img.size)
        buffer = io.BytesIO()
        img.resize((round(img.width * scale), round(img.height * scale)),
                   Image.BICUBIC).save(buffer, "JPEG", quality=90)
        crops = [np.asarray(F.center_crop(F.resize(loader.load(buffer.getvalue(), min_short_side=m),
                                                   [256]), [224]), dtype=np.int16)
                 for m in (None, 512)]
        diff = np.abs(crops[0] - crops[1])
        rows.append((name, float(diff.mean()), int(diff.max())))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--seed", type=int, default=777)
    args = parser.parse_args()

    print("1. pixels after resize 256 + crop 224 (levels of 255), full decode vs draft:")
    for name, mean, worst in pixel_differences():
        print(f"   {name:<24} mean {mean:.2f}  max {worst}")

    root = Path(tempfile.mkdtemp(prefix="torchinfer-draft-"))
    write_classification(root, args.images, args.seed, size=args.size)
    paths = []
    for png in sorted(root.rglob("*.png")):  # draft decoding is for JPEGs: save them as such
        paths.append(png.with_suffix(".jpg"))
        Image.open(png).save(paths[-1], quality=90)
        png.unlink()
    truth = [p.parent.name for p in paths]
    answers, seconds = {}, {}
    for draft in (False, True):
        clf = ti.load("classify", "shapes_classifier", device="cpu", jpeg_draft=draft)
        answers[draft] = [r.top1.label for r in clf.stream([str(p) for p in paths])]
        start = time.perf_counter()
        for p in paths:
            clf.preprocess([clf.loader.load(p, min_short_side=clf.decode_short_side)], [""])
        seconds[draft] = time.perf_counter() - start
    full, drafted = answers[False], answers[True]
    print(f"2. shapes_classifier on {len(paths)} new {args.size}px pictures (seed {args.seed}):")
    for label, got in (("full decode", full), ("draft", drafted)):
        print(f"   top-1 {label:<12} {np.mean([a == t for a, t in zip(got, truth)]):.2%}")
    print(f"   same top-1 both ways: {np.mean([a == b for a, b in zip(full, drafted)]):.2%}")
    print(f"3. decode + resize + crop: full {seconds[False] * 1000 / len(paths):.2f} ms/img, "
          f"draft {seconds[True] * 1000 / len(paths):.2f} ms/img "
          f"({seconds[False] / seconds[True]:.2f}x)")


if __name__ == "__main__":
    main()
