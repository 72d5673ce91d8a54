"""Batch inference on Ray Data against a local run, side by side in one run.

  (a) local: ``run_to_dir`` over the folder (what ``torchinfer predict`` does), all cores, its
      own decode/model plan
  (a1) local on one thread, decoding in turn: what one CPU worker does, minus Ray; the rows
      below say what Ray adds per image against this one
  (b) Ray, 1 worker, decoding in the worker
  (c) Ray, 2 workers, decoding in the workers
  (d) Ray, 1 worker, decoding in Ray tasks (the worker only runs the model)
  (d2) Ray, 2 workers, decoding in Ray tasks
  (e) with a GPU: Ray, 1 worker with --gpus-per-worker 1, decoding in Ray tasks

Each Ray job runs on one local Ray started once, before the timings (its start is printed
apart). Printed per row: the job's wall time and images/s; the steady rate, with the job's
fixed start (starting the workers: mostly importing torch and building the model) taken out
by a second job of one batch with the same settings: (images - batch) / (wall - wall of the
one-batch job) (results reach the driver in bursts held back for ordering, so their arrival
times cannot give it); that start; the work per image the records report (decode +
preprocess, inference, postprocess: each record's ``speed``, wherever that work ran); and
the time each worker spent per image beyond that work: workers x 1000/steady - work (for (a),
which overlaps decoding with the model on two cores, this can be negative). That last column
is what Ray adds per image (moving bytes, pickling, scheduling), against the same work, so it
holds even when the machine's load changes between rows.
Then the figures the throughput model below the table is built from: the driver's cost per
record (the same run replayed without a model), and the bytes per image that cross the object
store. Inputs: JPEGs of mixed sizes (long side 256..1600 px) cut from the bundled photographs.

    python benchmarks/ray_scaling.py [--model mobilenet_v3_small] [--images 512]
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import tempfile
import time
from pathlib import Path

import ray
import torch

import torchinfer as ti
from torchinfer import distributed
from torchinfer.runner.inputs import iter_sources
from torchinfer.runner.run import run_to_dir
from torchinfer.runner.streamer import torch_threads
from torchinfer.testing import write_sample_jpegs


class Timer:
    """on_result: the work each record reports (decode + preprocess, inference, postprocess
    ms; not the wait for decoding)."""

    def __init__(self) -> None:
        self.work: list[float] = []

    def __call__(self, result) -> None:
        self.work.append(sum(v for k, v in result.speed.items() if k != "wait"))

    def mean_work(self) -> float:
        """Mean work per image (failed inputs report none)."""
        done = [w for w in self.work if w > 0]
        return statistics.mean(done) if done else float("nan")


class Replay:
    """The local run's results, handed to run_to_dir again without a model: what the driver
    spends per record (expanding, stamping files, JSON, writing) and nothing else."""

    def __init__(self, predictor, pairs):
        self.task, self.model, self.loader = predictor.task, predictor.model, predictor.loader
        self.pipeline, self.backend_report, self.pairs = None, None, pairs

    def stream_sources(self, sources, *, batch_size=None):
        yield from zip(sources, (result for _, result in self.pairs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v3_small")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    options = {"batch_size": args.batch_size} if args.batch_size else {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        paths = write_sample_jpegs(folder, args.images)
        file_bytes = statistics.mean(p.stat().st_size for p in paths)
        rows = []

        # (a) local
        predictor = ti.load("classify", args.model, **options)
        batch = predictor.batch_size
        warm = [str(p) for p in paths[:4 * batch]]
        predictor(warm)  # warm-up (and the pipeline plan measured), as a worker's first block
        timer = Timer()
        pairs = []
        t0 = time.perf_counter()
        run_to_dir(predictor, [str(folder)], Path(tmp) / "local",
                   on_result=lambda r: (timer(r), pairs.append(r)))
        local_wall = time.perf_counter() - t0
        local_rate = args.images / local_wall
        rows.append(("local (all cores)", local_wall, local_rate, local_rate,
                     timer.mean_work(), 1, 0.0))

        # (a1) one thread, decoding in turn: a CPU worker's way, without Ray
        one = ti.load("classify", args.model, decode_workers=0, **options)
        with torch_threads(1):
            one(warm)
        timer = Timer()
        t0 = time.perf_counter()
        with torch_threads(1):
            run_to_dir(one, [str(folder)], Path(tmp) / "local1", on_result=timer)
        wall = time.perf_counter() - t0
        rows.append(("local, 1 thread (as one worker)", wall, args.images / wall,
                     args.images / wall, timer.mean_work(), 1, 0.0))

        # the driver's share: the same records replayed, no model
        replay = Replay(predictor, [(None, r) for r in pairs])
        t0 = time.perf_counter()
        run_to_dir(replay, [str(folder)], Path(tmp) / "replay")
        driver_ms = (time.perf_counter() - t0) * 1000 / args.images

        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=cores, include_dashboard=False,
                 object_store_memory=256 * 1024**2, _node_ip_address="127.0.0.1",
                 logging_level="WARNING")
        ray_start = time.perf_counter() - t0
        jobs = [("ray: 1 worker, decode in worker", dict(workers=1, decode="actor")),
                ("ray: 2 workers, decode in workers", dict(workers=2, decode="actor")),
                ("ray: 1 worker, decode in tasks", dict(workers=1, decode="tasks")),
                ("ray: 2 workers, decode in tasks", dict(workers=2, decode="tasks"))]
        if torch.cuda.is_available():
            jobs.append(("ray: 1 GPU worker (--gpus-per-worker 1)",
                         dict(workers=1, gpus_per_worker=1.0, decode="tasks")))
        try:
            for name, job in jobs:
                t0 = time.perf_counter()  # the fixed start: a job of one batch
                distributed.predict([str(p) for p in paths[:batch]], "classify", args.model,
                                    out=Path(tmp) / f"start-{len(rows)}", **job, **options)
                start = time.perf_counter() - t0
                timer = Timer()
                t0 = time.perf_counter()
                summary = distributed.predict([str(folder)], "classify", args.model,
                                              out=Path(tmp) / f"job-{len(rows)}",
                                              on_result=timer, **job, **options)
                wall = time.perf_counter() - t0
                assert summary.total == args.images and summary.failed == 0
                steady = (args.images - batch) / (wall - start) if wall > start \
                    else float("nan")  # a start longer than the job: too noisy to tell
                rows.append((name, wall, args.images / wall, steady, timer.mean_work(),
                             job["workers"], start))
        finally:
            ray.shutdown()

        # bytes per image through the object store: the file's bytes (read task -> worker),
        # the result; with decoding in tasks, the decoded batch instead of the file
        decoded = predictor.decode(list(iter_sources([str(p) for p in paths[:batch]])))
        decoded_bytes = len(pickle.dumps(decoded)) / batch
        result_bytes = statistics.mean(len(pickle.dumps(r)) for r in pairs[:64])

    print(f"{args.images} images, {args.model}, batch {batch}, {cores} cores, "
          f"torch {torch.__version__}, ray {ray.__version__}; local Ray start "
          f"{ray_start:.1f} s (not in the rows)")
    print(f"{'':40} {'wall s':>7} {'img/s':>7} {'steady':>7} {'vs local':>8} "
          f"{'start s':>7} {'work ms':>8} {'added ms':>8}")
    for name, wall, rate, steady, work, workers, start in rows:
        added = workers * 1000 / steady - work
        print(f"{name:40} {wall:7.1f} {rate:7.1f} {steady:7.1f} {steady / rows[0][3]:7.2f}x "
              f"{start:7.1f} {work:8.1f} {added:+8.1f}")
    per_worker = rows[2][3]
    print(f"\ndriver: {driver_ms:.2f} ms per record (run_to_dir replaying the results: "
          f"bound {1000 / driver_ms:,.0f} img/s)")
    print(f"object store per image: file {file_bytes / 1024:.0f} KiB + result "
          f"{result_bytes / 1024:.1f} KiB (decode in tasks: decoded batch "
          f"{decoded_bytes / 1024:.0f} KiB instead of the file)")
    print("model: N nodes x W workers each ~ min(N x W x per-worker rate, driver bound, "
          "read bandwidth / file size, network / bytes per image)")
    print(f"  per-worker steady rate here: {per_worker:.1f} img/s; driver bound "
          f"{1000 / driver_ms:,.0f} img/s; 1 GB/s of reads -> "
          f"{1e9 / file_bytes:,.0f} img/s; 10 Gb/s network -> "
          f"{1.25e9 / (file_bytes + result_bytes):,.0f} img/s (decoded in tasks on another "
          f"node: {1.25e9 / decoded_bytes:,.0f})")


if __name__ == "__main__":
    main()
