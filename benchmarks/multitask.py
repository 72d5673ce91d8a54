"""One network with three heads against three networks: the same images, side by side.

    python benchmarks/multitask.py                 # 256 shapes scenes, 4 rounds
    python benchmarks/multitask.py --images 64 --rounds 1
    python benchmarks/multitask.py --same-runtime  # every way on eager torch fp32

Ways, each answering all three tasks for every image, end to end from JPEG files (decode,
preprocess, model, postprocess), each in its own process so its peak RSS is its own:

- ``separate``: the three bundled single-task models run one after the other, as three
  ``predict`` runs would (each decodes every image);
- ``group``: the same three models over one decode (``predict multi -m A -m B -m C``);
- ``multitask``: ``shapes_multitask``, one pass (``predict multi -m shapes_multitask``).

Rounds alternate the order of the ways, so a machine that slows down during the run does not
favour one. Printed: img/s per round, the median, MACs per image (``ti.inspect`` at each
model's input), peak RSS, the ratios of the medians to ``separate``, and each round's own
ratio (the ways of one round run back to back, so drift between rounds cancels out there).

By default each single-task model runs its measured default runtime (OpenVINO bf16 on a CPU
with bf16, for instance) while multi-head models run eager torch fp32, not yet being on the
backend registry: a comparison of runtimes as much as of networks. ``--same-runtime`` pins
the single-task models to eager torch fp32 too, so the ratio is the one-pass design's alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SINGLE = {"classify": "shapes_classifier", "segment": "shapes_segmenter",
          "detect": "shapes_detector"}
MULTITASK = "shapes_multitask"
WAYS = ("separate", "group", "multitask")
# images each predictor streams untimed first: enough batches (at its batch size, 4) for its
# stream to choose a pipeline plan (runner.plan: up to 7 batches)
WARM_UP = 32


def make_images(folder: Path, n: int, seed: int = 31_337) -> list[str]:
    """``n`` shapes scenes as JPEG files (a third of them not square), quality 90."""
    from torchinfer.datasets import shapes as ds

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        size = (256, 208) if i % 3 == 0 else 256
        scene = ds.generate_scene(ds.scene_rng(seed, i), size)
        path = folder / f"scene{i:04d}.jpg"
        scene.image.save(path, quality=90)
        paths.append(str(path))
    return paths


def run_way(way: str, paths: list[str], same_runtime: bool = False) -> dict[str, float]:
    """Run one way over ``paths`` in this process; img/s and peak RSS (MiB). same_runtime:
    the single-task models on eager torch fp32, as the multi-head ones run."""
    import torchinfer as ti
    from torchinfer.api import load_group

    pinned = dict(backend="torch", precision="fp32") if same_runtime else {}
    if way == "separate":
        predictors = [ti.load(task, model, **pinned) for task, model in SINGLE.items()]
    elif way == "group":
        predictors = [load_group(list(SINGLE.values()))]
    else:
        predictors = [ti.load("multi", MULTITASK)]
    # warm-up: first-call costs and the pipeline plan, so the timed pass runs the plan chosen
    for p in predictors:
        list(p.stream(paths[:WARM_UP]))
        assert p.pipeline is not None, "the warm-up did not choose a pipeline plan"
    start = time.perf_counter()
    answers = 0
    for predictor in predictors:
        answers += sum(1 for r in predictor.stream(paths) if r.ok)
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"images_per_second": len(paths) / seconds, "peak_rss_mib": rss,
            "answers": answers}


def macs_per_image() -> dict[str, float]:
    import torchinfer as ti

    single = sum(ti.inspect(model).macs for model in SINGLE.values())
    return {"separate": single, "group": single, "multitask": ti.inspect(MULTITASK).macs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--list", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--same-runtime", action="store_true", help="the single-task models "
                        "on eager torch fp32, the runtime multi-head models run")
    args = parser.parse_args()
    if args.images < WARM_UP:
        parser.error(f"--images: at least {WARM_UP} (the warm-up streams {WARM_UP} of them)")
    if args.way:
        paths = args.list.read_text().splitlines()
        print(json.dumps(run_way(args.way, paths, args.same_runtime)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp) / "scenes", args.images)
        listing = Path(tmp) / "list.txt"
        listing.write_text("\n".join(paths))
        rates: dict[str, list[float]] = {w: [] for w in WAYS}
        rss: dict[str, float] = {}
        for r in range(args.rounds):
            order = WAYS if r % 2 == 0 else tuple(reversed(WAYS))
            for way in order:
                out = subprocess.run([sys.executable, __file__, "--way", way, "--list",
                                      str(listing)]
                                     + (["--same-runtime"] if args.same_runtime else []),
                                     capture_output=True, text=True, check=True)
                result = json.loads(out.stdout.strip().splitlines()[-1])
                rates[way].append(result["images_per_second"])
                rss[way] = max(rss.get(way, 0.0), result["peak_rss_mib"])
                print(f"round {r + 1} {way:>9}: {result['images_per_second']:7.1f} img/s "
                      f"({result['answers']} answers)", flush=True)
    macs = macs_per_image()
    base = statistics.median(rates["separate"])
    print(f"\n{args.images} images, every task answered for each, median of {args.rounds} "
          "round(s):")
    print(f"{'way':>10} {'img/s':>8} {'vs separate':>12} {'MMACs/img':>10} {'peak RSS':>10}")
    for way in WAYS:
        rate = statistics.median(rates[way])
        print(f"{way:>10} {rate:8.1f} {rate / base:11.2f}x {macs[way] / 1e6:10.0f} "
              f"{rss[way]:8.0f} MiB")
    for way in WAYS[1:]:
        ratios = [a / b for a, b in zip(rates[way], rates["separate"])]
        print(f"{way} / separate, round by round: median {statistics.median(ratios):.2f}x "
              f"(" + ", ".join(f"{r:.2f}" for r in ratios) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
