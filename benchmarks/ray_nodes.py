"""A batch job on one Ray node against the same job on two, side by side in one run on one
machine, checked against the throughput model of BENCHMARKS.md ("Batch inference on Ray Data").

Ray's own ``ray.cluster_utils.Cluster`` starts a head node of ``--cpus`` CPUs on loopback; the
job runs; a second node of ``--cpus`` CPUs joins (its own raylet and object store); the job
runs again. Printed: the job's wall time, its start (until the first result: workers
importing torch, building the model), and its steady rate over the last 80 % of results.
Inputs: JPEGs of mixed sizes (long side 256..1600 px) cut from the bundled photographs, read
from this machine's disk by every node (a shared mount).

On one machine the two nodes share its cores: the second node adds Ray CPUs (logical), not
cores. What the ratio can say: that the second node's workers get batches (``nodes_used``)
and what running over two raylets and object stores costs. What it cannot say: how a job
scales over machines; the model's N x W x r term only holds when each node brings its cores.

    python benchmarks/ray_nodes.py [--images 1024] [--cpus 2] [--model mobilenet_v3_small]
"""

from __future__ import annotations

import os

# before Ray is imported: keep the driver on loopback, where the nodes listen
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from ray.cluster_utils import Cluster  # noqa: E402

from torchinfer import distributed  # noqa: E402
from torchinfer.testing import write_sample_jpegs  # noqa: E402

NODE = {"node_ip_address": "127.0.0.1", "object_store_memory": 200 * 1024**2,
        "include_dashboard": False}


def measure(address: str, paths: list[str], out: Path, model: str, batch: int) -> dict:
    """One job: its wall time, when its first result came (the start: workers importing
    torch, building the model, the first batches), and the steady rate over its last 80 %
    of results (results reach the driver in order, in bursts, so the first 20 % are left out
    with the start)."""
    arrived: list[float] = []
    t0 = time.perf_counter()
    distributed.predict(paths, "classify", model, out=out, address=address, batch_size=batch,
                        exist_ok=True, backend="torch",
                        on_result=lambda _: arrived.append(time.perf_counter()))
    wall = time.perf_counter() - t0
    pipeline = json.loads((out / "summary.json").read_text())["pipeline"]
    k = len(arrived) // 5
    steady = (len(arrived) - 1 - k) / max(arrived[-1] - arrived[k], 1e-9)
    return {"wall_s": wall, "start_s": arrived[0] - t0, "img_s": len(paths) / wall,
            "steady_img_s": steady, **{k: pipeline.get(k) for k in
                                       ("nodes", "cluster_cpus", "workers", "workers_used",
                                        "nodes_used")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--cpus", type=int, default=2, help="Ray CPUs of each node")
    parser.add_argument("--model", default="mobilenet_v3_small")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "images").mkdir()
        paths = [str(p) for p in write_sample_jpegs(work / "images", args.images)]
        cluster = Cluster(initialize_head=True, connect=False,
                          head_node_args={"num_cpus": args.cpus, **NODE})
        rows = []
        try:
            rows.append({"nodes_started": 1, **measure(cluster.address, paths, work / "one",
                                                       args.model, args.batch_size)})
            cluster.add_node(num_cpus=args.cpus, **NODE)
            cluster.wait_for_nodes()
            rows.append({"nodes_started": 2, **measure(cluster.address, paths, work / "two",
                                                       args.model, args.batch_size)})
        finally:
            cluster.shutdown()
    print(f"# {args.model}, {args.images} JPEGs, batch {args.batch_size}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{args.cpus} Ray CPUs per node")
    print("| nodes | Ray CPUs | workers | workers used | nodes used | wall s | start s | "
          "img/s | steady img/s |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['nodes']} | {r['cluster_cpus']:g} | {r['workers']} | {r['workers_used']} "
              f"| {r['nodes_used']} | {r['wall_s']:.1f} | {r['start_s']:.1f} | "
              f"{r['img_s']:.1f} | {r['steady_img_s']:.1f} |")
    one, two = rows
    per_worker = one["steady_img_s"] / one["workers"]
    print(f"two nodes / one: {two['steady_img_s'] / one['steady_img_s']:.2f}x steady, "
          f"{two['img_s'] / one['img_s']:.2f}x end to end")
    print(f"model N x W x r with r = {per_worker:.1f} img/s per worker (one node's steady rate "
          f"/ its workers): one node {one['workers'] * per_worker:.1f}, two nodes "
          f"{two['workers'] * per_worker:.1f} img/s if each node brought its own cores")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
