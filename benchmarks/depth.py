"""Depth estimation: torchinfer against ``transformers.pipeline("depth-estimation")`` on the
same folder of JPEGs and the same model folder, side by side in one run, with the answers
compared.

Models: tests/hub_fixtures.py builds them (random weights, the depth head calibrated on
photographs, nothing downloaded) and saves them as ``save_pretrained`` does: DPT (a 4-layer
ViT, 384 x 384 squash) and Depth Anything (a 4-layer DINOv2, 140 on the short side in
multiples of 14, so each picture keeps its aspect ratio).
Pictures: ``--images`` JPEGs of 640x480 to 1280x960, landscape and portrait (the photographs
of model_sources.py).

Contenders, each reading the files itself (decoding in the time):
  torchinfer   ``ti.load("depth", folder).stream(image_folder, batch_size=B)``: its default
               runtime (auto, measured once in ``prepare()``, not timed) or ``--backend``
  pipeline     ``transformers.pipeline("depth-estimation", model=folder, batch_size=B)`` fed
               the list of paths; its ``predicted_depth`` at the original size

Answers: per picture, the largest difference of the maps relative to the pipeline map's
range, and the median over pictures. ``--precision fp32`` shows the preprocessing is the
processor's own (the tests pin it within 1e-3 relative; bf16 changes the maps more).

    python benchmarks/depth.py [--models dpt,depth_anything] [--images 48] [--batch 8]
                               [--repeats 3] [--backend auto] [--precision auto]
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: every model is local
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import torchinfer as ti  # noqa: E402
from torchinfer.runtime.cpu import describe_cpu, native_bf16  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from model_sources import warm_set, write_jpegs  # noqa: E402

from hub_fixtures import save_hf_folder  # noqa: E402


def bench(kind: str, tmp: Path, images: Path, paths: list[Path], args) -> tuple[float, float]:
    import transformers

    folder = save_hf_folder(tmp / kind, kind)
    bs = args.batch
    t0 = time.perf_counter()
    predictor = ti.load("depth", str(folder), device="cpu", backend=args.backend,
                        precision=args.precision, batch_size=bs)
    predictor.prepare()
    prepare_s = time.perf_counter() - t0
    pipe = transformers.pipeline("depth-estimation", model=str(folder), device="cpu",
                                 batch_size=bs)
    files = [str(p) for p in paths]
    warm = [str(p) for p in warm_set(paths, 8 * bs + 1)]

    def ours(some) -> dict[str, np.ndarray]:
        return {Path(r.source).name: r.depth for r in predictor.stream(some, batch_size=bs)}

    pipe_bs = [bs]

    def theirs(some) -> dict[str, np.ndarray]:
        out = pipe(some, batch_size=pipe_bs[0])
        return {Path(f).name: o["predicted_depth"].numpy() for f, o in zip(some, out)}

    threads = torch.get_num_threads()
    runs = {"torchinfer": ours, "pipeline": theirs}
    ours(warm)
    torch.set_num_threads(threads)
    try:
        theirs(warm)
    except RuntimeError as exc:  # its collate cannot stack inputs of different sizes
        pipe_bs[0] = 1
        print(f"   the pipeline fails at batch {bs} ({str(exc).splitlines()[0][:90]}): "
              "it runs at batch 1")
        theirs(warm)
    torch.set_num_threads(threads)
    times: dict[str, list[float]] = {name: [] for name in runs}
    answers: dict[str, dict[str, np.ndarray]] = {}
    order = list(runs)
    for r in range(args.repeats):  # interleaved, the order rotating
        for name in order[r % 2:] + order[:r % 2]:
            t = time.perf_counter()
            got = runs[name](files if name == "pipeline" else str(images))
            times[name].append(time.perf_counter() - t)
            torch.set_num_threads(threads)
            answers.setdefault(name, got)
    rate = {name: len(paths) / statistics.median(t) for name, t in times.items()}
    diffs = []
    for name, ref in answers["pipeline"].items():
        mine = answers["torchinfer"][name]
        span = float(ref.max() - ref.min()) or 1.0
        diffs.append(float(np.abs(mine - ref).max()) / span if mine.shape == ref.shape else np.inf)
    report = predictor.backend_report
    chosen = report.chosen.label if report is not None and report.chosen is not None else \
        f"{args.backend}/{args.precision}"
    print(f"== {kind}: torchinfer ({chosen}; prepare() {prepare_s:.1f} s, not timed) "
          f"{rate['torchinfer']:.1f} img/s, pipeline (batch {pipe_bs[0]}) "
          f"{rate['pipeline']:.1f} img/s: "
          f"{rate['torchinfer'] / rate['pipeline']:.2f}x")
    print(f"   maps vs the pipeline's, |difference| / the map's range: median "
          f"{statistics.median(diffs):.2e}, worst {max(diffs):.2e} over {len(diffs)} pictures")
    print("   per-round seconds: " + ", ".join(f"{n} {min(t):.2f}-{max(t):.2f}"
                                             for n, t in times.items()), flush=True)
    return rate["torchinfer"], rate["pipeline"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="dpt,depth_anything")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=UserWarning)
    tmp = Path(tempfile.mkdtemp(prefix="torchinfer-depth-bench-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    os.environ["TORCHINFER_CACHE"] = str(tmp / "cache")  # this run measures afresh
    images = tmp / "images"
    paths = write_jpegs(images, args.images)
    print(f"CPU: {describe_cpu()}; {torch.get_num_threads()} torch threads; native bf16: "
          f"{native_bf16()}")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}; {len(paths)} "
          f"JPEGs of 640x480-1280x960; batch {args.batch}; median of {args.repeats} interleaved "
          f"rounds; img/s end to end (decoding included)\n", flush=True)
    for kind in args.models.split(","):
        bench(kind.strip(), tmp, images, paths, args)


if __name__ == "__main__":
    main()
