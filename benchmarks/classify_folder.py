"""Folder classification throughput, three ways, measured side by side in one run.

  (a) the notes' loop as written: cv2.imread -> BGR->RGB -> cv2.resize to 224x224 -> float64
      /255 and mean/std -> one image per forward -> softmax -> max; no torch.no_grad, as in the
      notes (a variant with inference_mode is printed too, to show how much that alone is)
  (b) torchinfer: `predict classify` over the folder with defaults (library call run_to_dir,
      which also writes predictions.jsonl), torchvision's exact resize + centre crop
  (c) the raw model forward on ready float tensors at (b)'s batch size: the ceiling for (b)
  (d) decode + resize + crop alone, to show where the rest of (b)'s time goes
  (e) (b) on faster backends: ONNX Runtime fp32 (with 0 and 1 decode threads), and frozen
      TorchScript bf16 (verification off: calibrated random weights' near-tied logits say
      nothing about bf16; the backend tests verify it)

Prints images/s and the ratios b/a and b/c, then the RSS of a 1,000-image stream after 100 and
after 1,000 images. Inputs: JPEGs of mixed sizes cut from scikit-image's photographs.

    python benchmarks/classify_folder.py [--model mobilenet_v2] [--images 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
import torch
import torchvision

import torchinfer as ti
from torchinfer.run import run_to_dir
from torchinfer.testing import calibrate, load_photographs, write_sample_jpegs


def seed_loop(model, paths, label_names, grad_mode):
    """The notes' preprocess / model / postprocess, one image at a time."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    answers = []
    with grad_mode():
        for path in paths:
            image = cv2.imread(str(path))
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            image = cv2.resize(image, dsize=(224, 224))
            inputs = image / 255
            inputs = (inputs - mean) / std
            inputs = inputs.transpose(2, 0, 1)
            inputs = inputs[np.newaxis, :, :, :]
            inputs = torch.from_numpy(inputs).type(torch.float32)
            outputs = model(inputs)
            outputs = torch.softmax(outputs, dim=1)
            score, label_id = torch.max(outputs, dim=1)
            answers.append((label_names[label_id.item()], score.item()))
    return answers


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="best of N, variants interleaved")
    parser.add_argument("--stream-images", type=int, default=1000)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="torchinfer-bench-"))
    folder = tmp / "images"
    folder.mkdir()
    paths = write_sample_jpegs(folder, args.images)
    torch.manual_seed(0)
    model = calibrate(torchvision.models.get_model(args.model), list(load_photographs().values()))
    weights = tmp / f"{args.model}.pth"
    torch.save(model.state_dict(), weights)

    clf = ti.load("classify", args.model, weights, device="cpu")
    labels = clf.model.labels or [str(i) for i in range(1000)]
    bs = clf.batch_size
    # (c) runs the very module (b) runs, in (b)'s memory layout, on ready normalised tensors
    layout = torch.channels_last if clf.channels_last else torch.contiguous_format
    ready = [torch.randn(bs, 3, *clf.config.crop_size).contiguous(memory_format=layout)
             for _ in range(-(-len(paths) // bs))]

    def raw_forward():
        with torch.inference_mode():
            for batch in ready:
                clf.module(batch)

    def preprocess_only():
        for i in range(0, len(paths), bs):
            clf.preprocess([clf.loader.load(p) for p in paths[i:i + bs]], [""] * bs)

    def predict_with(**options):
        predictor = ti.load("classify", args.model, weights, device="cpu", **options)
        return lambda: run_to_dir(predictor, [str(folder)], tmp / "out")

    variants = {
        "a  notes' loop (as written)": lambda: seed_loop(model, paths, labels, torch.enable_grad),
        "a' notes' loop + inference_mode": lambda: seed_loop(model, paths, labels, torch.inference_mode),
        "b  torchinfer predict classify": lambda: run_to_dir(clf, [str(folder)], tmp / "out"),
        "c  raw model forward, ready tensors": raw_forward,
        "d  decode + resize + crop only": preprocess_only,
        "e1 predict, onnxruntime fp32": predict_with(backend="onnxruntime"),
        "e2 predict, onnxruntime, 1 decode thread": predict_with(backend="onnxruntime",
                                                                 decode_workers=1),
        "e3 predict, torchscript bf16": predict_with(backend="torchscript", precision="bf16",
                                                     verify_backend=False),
    }
    for fn in variants.values():  # warm-up: first-call allocations and kernel selection
        fn()
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(args.rounds):
        for name, fn in variants.items():
            best[name] = min(best[name], timed(fn))

    rate = {name: len(paths) / s for name, s in best.items()}
    print(f"{args.model}, {len(paths)} JPEGs (long side 256-1600 px), CPU, "
          f"{torch.get_num_threads()} torch threads, batch {bs}, best of {args.rounds}")
    for name, r in rate.items():
        print(f"  {name:<38} {r:7.1f} img/s")
    a, b, c = (rate[k] for k in ("a  notes' loop (as written)", "b  torchinfer predict classify",
                                 "c  raw model forward, ready tensors"))
    a2 = rate["a' notes' loop + inference_mode"]
    print(f"  ratio b/a  = {b / a:.2f}   (b/a' = {b / a2:.2f})")
    for key in ("e1 predict, onnxruntime fp32", "e2 predict, onnxruntime, 1 decode thread",
                "e3 predict, torchscript bf16"):
        print(f"  ratio {key.split()[0]}/a = {rate[key] / a:.2f}")
    print(f"  ratio b/c  = {b / c:.2f}   (share of the raw forward's throughput)")
    d = rate["d  decode + resize + crop only"]
    bound = torch.get_num_threads() / (1 / d + torch.get_num_threads() / c)
    print(f"  core-time bound if decode and forward overlapped perfectly: {bound:.1f} img/s "
          f"(b reaches {b / bound:.0%})")

    proc = psutil.Process(os.getpid())
    rss = {}
    stream = clf.stream(itertools.islice(itertools.cycle(map(str, paths)), args.stream_images))
    for i, _ in enumerate(stream, 1):
        if i in (100, args.stream_images):
            rss[i] = proc.memory_info().rss / 2**20
    print(f"  RSS of a {args.stream_images}-image stream: after 100 {rss[100]:.0f} MiB, "
          f"after {args.stream_images} {rss[args.stream_images]:.0f} MiB")


if __name__ == "__main__":
    main()
