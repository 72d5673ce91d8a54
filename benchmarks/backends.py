"""Every available backend x precision on three classifiers, forward only and end to end on a
folder of mixed JPEGs, side by side in one run, against the default (auto).

For each model: random weights with their batch norms calibrated on crops of the photographs
(nothing is downloaded), saved to a file so the choice is remembered as a user's would be.
Random networks are ill-conditioned: their bf16 answers often flip against fp32 on the
photographs, so the default refuses bf16 for them, as it should; trained weights pass.
  forward   each backend x precision's module on ready batches of the predictor's batch size,
            all cores, ms per image; which candidates verified against eager fp32
  end to end  ``ti.load(...).stream(folder)`` (what ``predict`` runs) on the mixed folder for:
            eager fp32 (the library's and the server's default before this change), the
            fastest fp32 candidate (``predict``'s measured default before: auto over fp32),
            the default now (auto: fp32 and, where the CPU has native bf16, bf16), and the
            default with verification off: what weights whose answers pass every candidate's
            check get (random weights often fail bf16's; trained ones pass)
  bound     the core-time bound of the default: cores / (decode ms on one core + cores x its
            forward ms), and the share of it reached

Rounds are interleaved (this machine's speed drifts by 25 % between minutes); the best of
``--rounds`` is kept. The CPU and its vector flags are printed first: the figures depend on
them, and bf16 is a candidate only where the CPU runs it natively.

    python benchmarks/backends.py [--models mobilenet_v2,resnet50,efficientnet_b0]
                                  [--images 128] [--rounds 2]
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torchvision

import torchinfer as ti
from torchinfer.runner.inputs import one_source
from torchinfer.runner.streamer import size_session, torch_threads
from torchinfer.runtime.cpu import describe_cpu, native_bf16
from torchinfer.runtime.registry import available_backends
from torchinfer.testing import calibrate, load_photographs, write_sample_jpegs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2,resnet50,efficientnet_b0")
    parser.add_argument("--images", type=int, default=128, help="JPEGs in the mixed folder")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="torchinfer-bench-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    os.environ["TORCHINFER_CACHE"] = str(tmp / "cache")  # this run measures afresh
    folder = tmp / "images"
    folder.mkdir()
    paths = write_sample_jpegs(folder, args.images, long_side=(185, 2800))
    cores = torch.get_num_threads()
    print(f"CPU: {describe_cpu()}; {cores} threads; native bf16: {native_bf16()}")
    print(f"backends available: {', '.join(b.name for b in available_backends())}")
    print(f"folder: {len(paths)} JPEGs, long side 185-2800 px; best of {args.rounds}, rows "
          "interleaved\n")
    for name in args.models.split(","):
        bench_model(name, tmp, paths, cores, args.rounds)


def bench_model(name: str, tmp: Path, paths: list[Path], cores: int, rounds: int) -> None:
    torch.manual_seed(0)
    model = calibrate(torchvision.models.get_model(name), list(load_photographs().values()))
    weights = tmp / f"{name}.pth"
    torch.save(model.state_dict(), weights)

    def load(**options):
        return ti.load("classify", name, weights, device="cpu", **options)

    t0 = time.perf_counter()
    default = load()
    default.prepare()
    measure_s = time.perf_counter() - t0
    report = default.backend_report
    fp32_best = load(precision="fp32")
    fp32_best.prepare()
    eager = load(backend="torch", precision="fp32")
    eager.prepare()
    # forward only: every candidate the default measured (rebuilt, since only the chosen one
    # stays in memory), each on its own predictor
    pinned = {c.label: load(backend=c.backend, precision=c.precision, verify_backend=False)
              for c in report.candidates if c.error is None}
    for p in pinned.values():
        p.prepare()
    bs = default.batch_size
    crop = default.model.preprocess.crop_size or (224, 224)
    batches = -(-len(paths) // bs)
    forward = {label: forward_only(p, bs, crop, batches) for label, p in pinned.items()}
    # what weights that pass every candidate's check get (trained ones pass bf16's where
    # these random ones may not): the default with verification off, decoding JPEGs as the
    # verified default does (its reduced decode's check is skipped too)
    unchecked = load(verify_backend=False, batch_size=bs, exact_decode=not default.reduced_decode)
    unchecked.prepare()
    end_to_end = {"eager fp32 (library default before)": eager,
                  f"fastest fp32 ({_chosen(fp32_best)}; predict's before)": fp32_best,
                  f"default now ({_chosen(default)})": default,
                  f"default, unverified ({_chosen(unchecked)})": unchecked}
    streams = {key: (lambda p=p: list(p.stream([str(x) for x in paths]))) for key, p in
               end_to_end.items()}
    decode = decode_only(default, paths, bs)
    variants = {**{f"forward {k}": v for k, v in forward.items()}, **streams,
                "decode + resize, 1 core": decode}
    for fn in variants.values():  # warm-up: kernels, allocations, the pipeline's plan
        fn()
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(rounds):
        for key, fn in variants.items():
            t = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - t)
    n = len(paths)
    print(f"== {name}: batch {bs}; the default measured {len(report.candidates)} candidates "
          f"in {measure_s:.1f} s (once per model and machine) and chose {report.chosen.label}; "
          f"JPEGs decoded {'reduced' if default.reduced_decode else 'in full'} "
          f"({default.decode_report.reason[:70]})")
    print(f"  {'forward only, all cores':<52} ms/img  vs eager   verified")
    eager_ms = best["forward torch/fp32"] * 1000 / (batches * bs)
    verified = {c.label: _verified(c) for c in report.candidates}
    fastest = min(best[f"forward {k}"] for k in forward if verified[k])
    for label in forward:
        ms = best[f"forward {label}"] * 1000 / (batches * bs)
        check = {c.label: c for c in report.candidates}[label].check
        state = "yes" if verified[label] else "refused: " + (
            check.describe()[-60:] if check is not None else "?")
        print(f"  {label:<52} {ms:6.2f}  {eager_ms / ms:6.2f}x   {state}")
    for c in report.candidates:
        if c.error is not None:
            print(f"  {c.label:<52} {'-':>6}  {'-':>6}    cannot run: {c.error[:80]}")
    default_fwd = best[f"forward {report.chosen.label}"]
    print(f"  the default's forward is {default_fwd / fastest:.2f}x the fastest verified one's "
          "time")
    print(f"  {'end to end on the folder (stream)':<52} img/s  vs eager   vs fastest fp32")
    rates = {k: n / best[k] for k in streams}
    base, fp32 = list(rates.values())[0], list(rates.values())[1]
    for key, r in rates.items():
        print(f"  {key:<52} {r:6.1f}  {r / base:6.2f}x   {r / fp32:6.2f}x")
    decode_ms = best["decode + resize, 1 core"] * 1000 / n
    forward_ms = default_fwd * 1000 / (batches * bs)
    bound = cores * 1000 / (decode_ms + cores * forward_ms)
    print(f"  core time per image: decode + resize {decode_ms:.2f} ms on one core, forward "
          f"{forward_ms:.2f} ms on {cores}: bound {bound:.1f} img/s, the default reached "
          f"{list(rates.values())[2] / bound:.0%} ({default.pipeline.reason if default.pipeline else 'no plan'})")
    stages = stage_means(list(default.stream([str(x) for x in paths])))
    print("  where the default's time goes, ms per image (decode + preprocess on the decode "
          "threads; the rest on the model's): " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                           stages.items()))
    fwd_unchecked = best.get(f"forward {_chosen(unchecked)}", default_fwd) * 1000 / (batches * bs)
    bound_u = cores * 1000 / (decode_ms + cores * fwd_unchecked)
    print(f"  unverified default: bound {bound_u:.1f} img/s, reached "
          f"{list(rates.values())[3] / bound_u:.0%}\n")


def stage_means(results) -> dict[str, float]:
    """The mean of each stage's ms per image over a stream's results."""
    ok = [r.speed for r in results if r.ok]
    return {k: sum(s[k] for s in ok) / len(ok) for k in ok[0]} if ok else {}


def _verified(candidate) -> bool:
    return candidate.error is None and (candidate.check is None or candidate.check.passed)


def _chosen(predictor) -> str:
    r = predictor.backend_report
    return r.chosen.label if r is not None else "torch/fp32"


def forward_only(predictor, bs: int, crop: tuple[int, int], batches: int):
    layout = torch.channels_last if predictor.channels_last else torch.contiguous_format
    ready = [torch.randn(bs, 3, *crop).contiguous(memory_format=layout) for _ in range(batches)]

    def run():
        threads = size_session(predictor.module, None)
        with torch.inference_mode(), torch_threads(threads):
            for batch in ready:
                predictor.module(batch)
    return run


def decode_only(predictor, paths: list[Path], bs: int):
    def run():
        with torch_threads(1):
            for i in range(0, len(paths), bs):
                predictor.decode([one_source(p) for p in paths[i:i + bs]])
    return run


if __name__ == "__main__":
    main()
