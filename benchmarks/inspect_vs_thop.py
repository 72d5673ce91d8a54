"""Params and GMACs: torchinfer.inspection vs thop vs torchvision's published numbers.

Run from the repository root:

    PYTHONPATH=src python benchmarks/inspect_vs_thop.py

Prints a Markdown table.  Models are built with ``weights=None`` (no download);
for the DEFAULT weights of the models listed here that is the published
architecture (1000 classes, 224x224 crop).  torchvision's ``meta["_ops"]`` is
labelled GFLOPS but counts multiply-accumulates, so all MAC columns compare
like with like.  ours runs on meta tensors; thop runs ``thop.profile`` on real
CPU tensors (it is a benchmark-only dependency).
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass

import torch
import torchvision
from torchvision.models import get_model, get_model_weights

from torchinfer.inspection import inspect_model

DEFAULT_MODELS = (
    "resnet50",
    "mobilenet_v2",
    "efficientnet_b0",
    "convnext_tiny",
    "regnet_y_1_6gf",
    "densenet121",
    "vit_b_16",
    "swin_t",
    "maxvit_t",
)


@dataclass(frozen=True)
class Row:
    model: str
    published_params: int
    published_gmacs: float
    ours_params: int
    ours_gmacs: float
    ours_seconds: float
    thop_params: int
    thop_gmacs: float
    thop_seconds: float


def _crop(weights: torchvision.models.WeightsEnum) -> int:
    return int(weights.transforms().crop_size[0])


def measure(name: str) -> Row:
    weights = get_model_weights(name).DEFAULT
    size = _crop(weights)
    shape = (1, 3, size, size)

    torch.manual_seed(0)
    model = get_model(name, weights=None).eval()
    start = time.perf_counter()
    ours = inspect_model(model, input_shape=shape)  # counts a meta copy; `model` is untouched
    ours_seconds = time.perf_counter() - start

    import thop  # benchmark-only dependency

    start = time.perf_counter()  # thop runs the real model and adds its own buffers to it
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        thop_macs, thop_params = thop.profile(model, inputs=(torch.rand(shape),), verbose=False)
    thop_seconds = time.perf_counter() - start

    return Row(
        model=f"{name} @{size}",
        published_params=int(weights.meta["num_params"]),
        published_gmacs=float(weights.meta["_ops"]),
        ours_params=ours.params_total,
        ours_gmacs=ours.gmacs,
        ours_seconds=ours_seconds,
        thop_params=int(thop_params),
        thop_gmacs=thop_macs / 1e9,
        thop_seconds=thop_seconds,
    )


def _pct(value: float, reference: float) -> str:
    return f"{100 * (value / reference - 1):+.2f}%"


def markdown(rows: list[Row]) -> str:
    header = (
        "| model | params published | params ours | params thop | GMACs published | GMACs ours (Δ) "
        "| GMACs thop (Δ) | time ours (meta) | time thop (CPU) |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for r in rows:
        params_thop = f"{r.thop_params:,}" + ("" if r.thop_params == r.published_params else " ✗")
        params_ours = f"{r.ours_params:,}" + ("" if r.ours_params == r.published_params else " ✗")
        lines.append(
            f"| {r.model} | {r.published_params:,} | {params_ours} | {params_thop} "
            f"| {r.published_gmacs:.3f} | {r.ours_gmacs:.3f} ({_pct(r.ours_gmacs, r.published_gmacs)}) "
            f"| {r.thop_gmacs:.3f} ({_pct(r.thop_gmacs, r.published_gmacs)}) "
            f"| {r.ours_seconds:.2f}s | {r.thop_seconds:.2f}s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=list(DEFAULT_MODELS), help="torchvision classification models")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = [measure(name) for name in args.models]
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, input 1x3xSxS (S = published crop)\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
