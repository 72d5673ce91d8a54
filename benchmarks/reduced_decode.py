"""Reduced JPEG decoding (the default) against exact decoding (``--exact-decode``): what it
saves, which decoder is fastest, and what it changes in the answers, in one run.

  1. decoders on 12-megapixel photographs (the shipped photographs enlarged to 4000x3000 with
     sensor noise, ~2.3 MB each): Pillow in full and at 1/2, 1/4, 1/8 (``draft``), OpenCV's
     ``IMREAD_REDUCED_COLOR_N``, simplejpeg (libjpeg-turbo) at the same scales; ms per image
     on one core, and whether the pixels equal Pillow's at the same scale
  2. the margin: pictures decoded at 1x, 1.5x, 2x the resize target, then resized + cropped to
     224 as torchvision does: mean |difference| from a full decode in levels of 255
  3. the bundled trained models on unseen shapes pictures at 12 MP (drawn at 1/8 of the size
     and enlarged with sensor noise: drawing at 12 MP takes seconds per picture), evaluated
     both ways by ``ti.evaluate``: classifier top-1 (and how often the two answers agree),
     segmenter mIoU, detector mAP@.5

    python benchmarks/reduced_decode.py [--images 100] [--seed 2025]
"""

from __future__ import annotations

import argparse
import atexit
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import simplejpeg
import torchvision.transforms.functional as F
from PIL import Image

import torchinfer as ti
from torchinfer.datasets import write_classification, write_detection, write_segmentation
from torchinfer.runner.images import ImageLoader
from torchinfer.testing import load_photographs, write_phone_jpegs

BIG = (4000, 3000)


def best_ms(fn, datas, rounds=3) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for d in datas:
            fn(d)
        best = min(best, time.perf_counter() - t0)
    return best * 1000 / len(datas)


def decoders(folder: Path) -> None:
    cv2.setNumThreads(1)
    folder.mkdir(parents=True, exist_ok=True)
    datas = [p.read_bytes() for p in write_phone_jpegs(folder, 4)]
    print(f"1. decoders, {len(datas)} JPEGs of {BIG[0]}x{BIG[1]}, "
          f"~{np.mean([len(d) for d in datas]) / 1e6:.1f} MB, one core, ms/img (best of 3)")

    def pillow(scale):
        def run(d):
            img = Image.open(io.BytesIO(d))
            if scale > 1:
                img.draft("RGB", (BIG[0] // scale, BIG[1] // scale))
            img.load()
            return np.asarray(img)
        return run

    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}
    for scale in (1, 2, 4, 8):
        reference = pillow(scale)(datas[0])
        row = []
        for name, fn in (
                ("Pillow", pillow(scale)),
                ("OpenCV", lambda d, f=flags[scale]: cv2.cvtColor(
                    cv2.imdecode(np.frombuffer(d, np.uint8), f), cv2.COLOR_BGR2RGB)),
                ("simplejpeg", lambda d, s=scale: simplejpeg.decode_jpeg(
                    d, colorspace="RGB", min_width=BIG[0] // s, min_height=BIG[1] // s))):
            same = np.array_equal(fn(datas[0]), reference)
            row.append(f"{name} {best_ms(fn, datas):5.1f}{'' if same else ' (other pixels)'}")
        print(f"  1/{scale}: " + ", ".join(row))


def margins() -> None:
    loader = ImageLoader()
    print("2. margin: mean |reduced - full| after resize 256 + crop 224, levels of 255, "
          "the photographs saved as JPEGs whose 1/2..1/8 decode is exactly margin x 256")
    for margin in (1.0, 1.5, 2.0):
        diffs = []
        for img in load_photographs().values():
            for scale in (2, 4, 8):
                short = int(scale * margin * 256)
                size = (round(img.width * short / min(img.size)), round(img.height * short / min(img.size)))
                buffer = io.BytesIO()
                img.resize(size, Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
                crops = [np.asarray(F.center_crop(F.resize(loader.load(buffer.getvalue(), min_short_side=m),
                                                           [256]), [224]), dtype=np.int16)
                         for m in (None, int(margin * 256))]
                diffs.append(np.abs(crops[0] - crops[1]).mean())
        print(f"  margin {margin:.1f}x: mean {np.mean(diffs):.2f}, worst picture {np.max(diffs):.2f}")


def enlarge(root: Path, factor: int, seed: int) -> None:
    """Every JPEG under ``root`` enlarged ``factor`` times with sensor noise (in place); VOC
    masks with nearest neighbours; COCO boxes and areas scaled."""
    rng = np.random.default_rng(seed)
    pictures = sorted(p for p in root.rglob("*") if p.suffix in (".jpg", ".png")
                      and p.parent.name != "SegmentationClass")
    for path in pictures:  # an ImageFolder's PNGs become JPEGs, as photographs are
        img = Image.open(path).convert("RGB")
        big = np.asarray(img.resize((img.width * factor, img.height * factor),
                                    Image.Resampling.BICUBIC), dtype=np.float32)
        big += rng.normal(0, 3, big.shape)
        Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(path.with_suffix(".jpg"),
                                                                    quality=90)
        if path.suffix == ".png":
            path.unlink()
    for path in sorted((root / "SegmentationClass").glob("*.png")) if (root / "SegmentationClass").exists() else []:
        mask = Image.open(path)
        mask.resize((mask.width * factor, mask.height * factor), Image.Resampling.NEAREST).save(path)
    coco = root / "annotations.json"
    if coco.exists():
        data = json.loads(coco.read_text())
        for image in data["images"]:
            image["width"] *= factor
            image["height"] *= factor
        for ann in data["annotations"]:
            ann["bbox"] = [v * factor for v in ann["bbox"]]
            ann["area"] *= factor * factor
            ann.pop("segmentation", None)
        coco.write_text(json.dumps(data))


def agreement(tmp: Path, n: int, seed: int) -> None:
    print(f"3. bundled models, {n} unseen pictures each at 12 MP, default vs --exact-decode")
    cases = {
        "classify": ("shapes_classifier", write_classification, 433, "top1"),  # 3464 x 3464
        "segment": ("shapes_segmenter", write_segmentation, (375, 500), "miou"),  # 4000 x 3000
        "detect": ("shapes_detector", write_detection, (375, 500), "map50"),
    }
    for task, (model, writer, size, metric) in cases.items():
        root = tmp / task
        writer(root, n, seed, size=size)
        enlarge(root, 8, seed)
        t0 = time.perf_counter()  # the one-time check of the reduction (then cached)
        ti.load(task, model, device="cpu")
        check_s = time.perf_counter() - t0
        scores, answers, seconds = {}, {}, {}
        for exact in (False, True):
            t0 = time.perf_counter()
            report = ti.evaluate(task, model, root, device="cpu", exact_decode=exact)
            seconds[exact] = time.perf_counter() - t0
            scores[exact] = getattr(report, metric)
            if task == "classify":
                answers[exact] = [r.top1.label for r in ti.load(
                    task, model, device="cpu", exact_decode=exact)(
                        sorted(map(str, root.rglob("*.jpg"))))]
        line = (f"  {task:<8} {metric} default {scores[False]:.4f}, exact {scores[True]:.4f}, "
                f"difference {scores[False] - scores[True]:+.4f}; evaluation "
                f"{seconds[False]:.1f} s vs {seconds[True]:.1f} s (the check: {check_s:.1f} s once)")
        if answers:
            same = np.mean([a == b for a, b in zip(answers[False], answers[True])])
            line += f"; the same top-1 on {100 * same:.1f} % of pictures"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=2025)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="torchinfer-reduced-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # images, outputs
    os.environ["TORCHINFER_CACHE"] = str(tmp / "cache")  # this run's own checks
    decoders(tmp / "phones")
    margins()
    agreement(tmp, args.images, args.seed)


if __name__ == "__main__":
    main()
