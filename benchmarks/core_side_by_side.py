"""The same run on two checkouts of torchinfer, interleaved in one session: did a change of the
core (Predictor, streamer, runtime apart) change the speed?

Each measurement is a fresh process that imports torchinfer from one checkout's ``src`` and
runs ``run_to_dir`` (what ``predict`` does) over one folder, after a warm-up run that also
measures its pipeline plan:

  classify: mobilenet_v2 (calibrated random weights), 256 JPEGs of mixed sizes, eager fp32
  detect:   the bundled shapes_detector, 128 shapes pictures (YOLO-layout raw tensor)
  segment:  the bundled shapes_segmenter, 64 shapes pictures

Rounds alternate A, B, A, B...; the best of each is kept (these machines are noisy).

    python benchmarks/core_side_by_side.py --before ../old-checkout/src [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "src"

WORKER = r"""
import json, sys, time, tempfile
from pathlib import Path
import torch
import torchinfer as ti
try:
    from torchinfer.runner.run import run_to_dir
except ImportError:  # an older layout
    from torchinfer.run import run_to_dir

task, folder, weights = sys.argv[1], sys.argv[2], sys.argv[3]
if task == "classify":
    predictor = ti.load("classify", "mobilenet_v2", weights, device="cpu")
else:
    predictor = ti.load(task, "shapes_detector" if task == "detect" else "shapes_segmenter",
                        device="cpu")
with tempfile.TemporaryDirectory() as tmp:
    run_to_dir(predictor, [folder], Path(tmp) / "warm", exist_ok=True)
    t0 = time.perf_counter()
    summary = run_to_dir(predictor, [folder], Path(tmp) / "run", exist_ok=True)
    seconds = time.perf_counter() - t0
print(json.dumps({"images": summary.total, "failed": summary.failed,
                  "img_s": summary.total / seconds}))
"""


def _prepare(root: Path) -> dict[str, tuple[Path, Path]]:
    """Folders and weights, made once with this checkout's helpers."""
    sys.path.insert(0, str(HERE))
    import torch
    import torchvision

    from torchinfer.datasets.shapes import iter_scenes
    from torchinfer.testing import calibrate, load_photographs, write_sample_jpegs

    photos = root / "photos"
    photos.mkdir()
    write_sample_jpegs(photos, 256)
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2()
    calibrate(model, list(load_photographs().values()))
    weights = root / "mobilenet_v2.pth"
    torch.save(model.state_dict(), weights)
    shapes = root / "shapes"
    shapes.mkdir()
    for i, scene in enumerate(iter_scenes(10_000, 128, size=256)):  # a seed no model saw
        scene.image.save(shapes / f"{i:04d}.jpg", quality=92)
    small = root / "shapes_small"
    small.mkdir()
    for p in sorted(shapes.iterdir())[:64]:
        (small / p.name).write_bytes(p.read_bytes())
    return {"classify": (photos, weights), "detect": (shapes, weights),
            "segment": (small, weights)}


def _measure(src: Path, task: str, folder: Path, weights: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", WORKER, task, str(folder), str(weights)],
                         env=env, capture_output=True, text=True, timeout=900, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True,
                        help="the src folder of the other checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", default="classify,detect,segment")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        inputs = _prepare(Path(tmp))
        print("| task | images | before img/s | now img/s | now / before |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for task in args.tasks.split(","):
            best = {"before": 0.0, "now": 0.0}
            images = 0
            for _ in range(args.rounds):
                for name, src in (("before", args.before), ("now", HERE)):
                    result = _measure(src.resolve(), task, *inputs[task])
                    assert result["failed"] == 0, result
                    images = result["images"]
                    best[name] = max(best[name], result["img_s"])
            print(f"| {task} | {images} | {best['before']:.1f} | {best['now']:.1f} | "
                  f"{best['now'] / best['before']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
