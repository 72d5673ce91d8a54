"""Eager forward with batch norms folded into their convolutions vs as written, side by side.

    python benchmarks/fold_batch_norms.py                    # batch 4, 3 rounds
    python benchmarks/fold_batch_norms.py --batch 1 --rounds 5

For each model: the raw forward (channels_last, inference mode, all cores) of the module as
built and of ``fold_batch_norms`` of it (what a Predictor runs), timed in alternating order
within each round; printed: ms per image for each (median of the rounds), the ratio, how many
batch norms were folded, and the largest difference of the outputs relative to their largest
magnitude. Weights are random, with batch-norm statistics drawn away from the identity (a
fresh model's mean 0 / variance 1 would hide rounding differences).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision
from torch import nn

import torchinfer as ti
from torchinfer.models.folding import fold_batch_norms
from torchinfer.models.outputs import main_output

MODELS = ("mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "resnet18", "resnet50",
          "shapes_classifier", "shapes_segmenter", "shapes_detector", "shapes_multitask")


def build(name: str) -> tuple[nn.Module, int]:
    """The model (eval mode) and its input side."""
    if name.startswith("shapes_"):
        task = {"classifier": "classify", "segmenter": "segment", "detector": "detect",
                "multitask": "multi"}[name.removeprefix("shapes_")]
        return ti.load(task, name).model.module.eval(), 256
    model = torchvision.models.get_model(name, weights=None).eval()
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
    return model, 224


def per_image_ms(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        model(x)
    return (time.perf_counter() - start) / repeats / x.shape[0] * 1e3


def first_tensor(out) -> torch.Tensor:
    return next(iter(out.values())) if isinstance(out, dict) else main_output(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads, batch {args.batch}, median of {args.rounds} rounds")
    print(f"{'model':>20} {'as built':>10} {'folded':>8} {'ratio':>7} {'norms':>6} {'max diff':>9}")
    for name in args.models.split(","):
        model, side = build(name)
        model = model.to(memory_format=torch.channels_last)
        folded = fold_batch_norms(model)
        norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        left = sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        x = torch.randn(args.batch, 3, side, side).contiguous(memory_format=torch.channels_last)
        times: dict[str, list[float]] = {"built": [], "folded": []}
        with torch.inference_mode():
            ref, got = first_tensor(model(x)), first_tensor(folded(x))
            diff = ((ref - got).abs().max() / ref.abs().max()).item()
            for r in range(args.rounds):
                ways = [("built", model), ("folded", folded)]
                for key, m in (ways if r % 2 == 0 else ways[::-1]):
                    per_image_ms(m, x, 2)  # warm-up
                    times[key].append(per_image_ms(m, x, args.repeats))
        built, fold = statistics.median(times["built"]), statistics.median(times["folded"])
        print(f"{name:>20} {built:8.2f}ms {fold:6.2f}ms {built / fold:6.2f}x "
              f"{norms - left:>3}/{norms:<3}{diff:9.1e}")


if __name__ == "__main__":
    main()
