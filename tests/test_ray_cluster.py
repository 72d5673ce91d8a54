"""Ray past one machine: a head and a worker node as separate raylets on loopback (Ray's own
``ray.cluster_utils.Cluster``), each with its CPUs and object store; a job reading its inputs
from, and writing its run to, an S3 server on loopback; and a worker node lost mid-job.

The driver runs in a process of its own (the command line, as a user runs it). Ray turns
"127.0.0.1" into the machine's network address when a driver connects, while these nodes
listen on loopback only; ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps the driver on loopback
(set for the fixture's processes only).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'torchinfer[ray]'")
pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'ray[data]'")
pytest.importorskip("moto.server", reason="moto is not installed: pip install 'moto[server]'")

import psutil  # noqa: E402  (Ray's own dependency)

from test_object_storage import BUCKET, objects, records, s3  # noqa: E402,F401  (a fixture)
from torchinfer.datasets import shapes as ds  # noqa: E402

LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
NODE = {"node_ip_address": "127.0.0.1", "object_store_memory": 150 * 1024**2,
        "include_dashboard": False}


@pytest.fixture(scope="module")
def cluster(s3):  # noqa: F811  (the fixture imported above)
    """Two nodes of 2 CPUs each on loopback, started after the bucket so that every Ray
    process has its address and credentials in its environment. Yields the Cluster and a
    list holding the worker node (a test that kills it puts its successor there); every
    process of both is ended by its id afterwards."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    saved = {k: os.environ.get(k) for k in LOOPBACK}
    os.environ.update(LOOPBACK)
    two = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 2, **NODE})
    worker = two.add_node(num_cpus=2, **NODE)
    two.wait_for_nodes()
    pids = [p.process.pid for node in (two.head_node, worker)
            for procs in node.all_processes.values() for p in procs]
    try:
        yield two, [worker]
    finally:
        two.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        alive = [p for p in pids if psutil.pid_exists(p)
                 and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        assert alive == [], f"processes of the test cluster left running: {alive}"


@pytest.fixture(scope="module")
def inputs(s3, tmp_path_factory):  # noqa: F811
    """The job's inputs: a list object on the bucket naming six pictures there and one that
    is missing, and a local folder (a shared mount, on a real cluster) of 12 pictures of
    1200 px. Decoding those takes longer than reading the next, so the batches queue up and
    the pool spreads them over its workers; small objects read through the loopback S3 server
    one at a time reach one worker, which keeps up with them all."""
    listed = []
    for i in range(6):
        buffer = io.BytesIO()
        ds.generate_single(ds.scene_rng(505, i), 96).image.save(buffer, "PNG")
        s3.put_object(Bucket=BUCKET, Key=f"ray/in/{i}.png", Body=buffer.getvalue())
        listed.append(f"{i}.png")
    s3.put_object(Bucket=BUCKET, Key="ray/in/list.txt",
                  Body="\n".join([*listed, "missing.png"]).encode())
    folder = tmp_path_factory.mktemp("large")
    for i in range(12):
        ds.generate_single(ds.scene_rng(506, i), 1200).image.save(folder / f"{i:02d}.png")
    return [f"s3://{BUCKET}/ray/in/list.txt", str(folder)]


def predict(*args: str, threads: int | None = None) -> subprocess.Popen:
    """``torchinfer predict classify`` in a process of its own, this environment's (with
    ``threads``: torch on that many threads)."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    return subprocess.Popen([sys.executable, "-m", "torchinfer", "predict", "classify", *args,
                             "-m", "shapes_classifier", "--quiet", "--allow-failures",
                             "--batch-size", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finished(process: subprocess.Popen, timeout: float = 300) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out


def without_timings(lines: list[dict]) -> list[dict]:
    for line in lines:
        line.pop("speed", None)
    return lines


@pytest.mark.timeout(600)
def test_a_two_node_job_on_object_storage_answers_as_a_local_run(cluster, inputs, s3):  # noqa: F811
    two, _ = cluster
    # the model on one thread, as each one-CPU worker runs it (a float sum over more threads
    # can move a score's sixth decimal)
    finished(predict(*inputs, "--out", f"s3://{BUCKET}/ray/local/", "--backend", "torch",
                     "--decode-workers", "0", threads=1))
    finished(predict(*inputs, "--out", f"s3://{BUCKET}/ray/two/", "--engine", "ray",
                     "--address", two.address, "--backend", "torch"))
    local = objects(s3, "ray/local/")
    remote = objects(s3, "ray/two/")
    got = records(remote["predictions.jsonl"])
    assert without_timings(got) == without_timings(records(local["predictions.jsonl"]))
    assert len(got) == 19 and got[6]["error"] == "file not found"
    assert got[0]["source"] == f"s3://{BUCKET}/ray/in/0.png"
    job = json.loads(remote["summary.json"])["pipeline"]
    assert job["engine"] == "ray" and job["nodes"] == 2
    assert job["workers"] == 3  # 4 CPUs, one kept for reading
    assert job["nodes_used"] == 2, job
    assert job["retried_batches"] == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_worker_node_lost_mid_job_loses_and_repeats_no_record(cluster, tmp_path):
    """The worker node's processes killed while the job runs (once its first records are
    written): the job finishes on the head, every input has exactly one record, and the
    summary says what was run again."""
    two, workers = cluster
    worker = workers[0]
    images = tmp_path / "images"
    images.mkdir()
    for i in range(40):
        ds.generate_single(ds.scene_rng(507, i), 1200).image.save(images / f"{i:02d}.png")
    out = tmp_path / "run"
    job = predict(str(images), "--out", str(out), "--engine", "ray", "--address", two.address,
                  "--backend", "torch")
    killed = threading.Event()

    def kill_the_worker_node() -> None:
        partial = out / "predictions.jsonl.partial"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and job.poll() is None:
            if partial.exists() and partial.read_bytes().count(b"\n") >= 4:
                two.remove_node(worker, allow_graceful=False)  # every process, by its id
                killed.set()
                return
            time.sleep(0.1)

    threading.Thread(target=kill_the_worker_node, daemon=True).start()
    finished(job, timeout=600)
    assert killed.is_set(), "the job ended before the worker node could be killed"
    sources = [r["source"] for r in records((out / "predictions.jsonl").read_bytes())]
    assert len(sources) == len(set(sources)) == 40
    summary = json.loads((out / "summary.json").read_text())["pipeline"]
    # a round may start while Ray still counts the node: it is lost too, and one more follows
    assert summary["rounds"] >= 2 and summary["nodes_lost"] == 1, summary
    assert summary["retried_batches"] >= 1 and summary["workers_after_loss"] == 1, summary
    # the cluster goes on without it: another node joins for the next tests
    workers[0] = two.add_node(num_cpus=2, **NODE)
    two.wait_for_nodes()


def ray_workers(node) -> list[psutil.Process]:
    """The worker processes the raylet of ``node`` started."""
    raylet = node.all_processes["raylet"][0].process.pid
    try:
        return psutil.Process(raylet).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ray_serve_over_two_nodes_keeps_serving_when_one_is_lost(cluster, tmp_path):
    """``torchinfer serve --engine ray`` with a replica on each node: a burst is answered; the
    worker node is lost during a second burst, whose requests are answered or refused with
    503 (never hung), and the survivor goes on serving."""
    import asyncio
    import signal
    import socket

    import httpx

    two, workers = cluster
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    picture = tmp_path / "p.png"
    ds.generate_single(ds.scene_rng(508, 0), 96).image.save(picture)
    server = subprocess.Popen(
        [sys.executable, "-m", "torchinfer", "serve", "-m", "shapes_classifier", "--engine",
         "ray", "--address", two.address, "--replicas", "2", "--port", str(port),
         "--proxies", "head"],  # two nodes on one machine cannot both bind the port
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/v1/models/shapes_classifier/predict"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, server.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "Ray Serve did not become ready"
            try:
                if httpx.get(f"{base}/v2/health/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        replicas = [p for p in ray_workers(workers[0])
                    if "ServeReplica" in " ".join(p.cmdline())]
        assert replicas, "no replica on the worker node"
        data = picture.read_bytes()

        async def burst(n: int, during=None) -> list:
            async with httpx.AsyncClient(timeout=60) as client:
                async def one():
                    try:
                        return (await client.post(url, content=data)).status_code
                    except httpx.HTTPError as exc:
                        return type(exc).__name__
                tasks = [asyncio.create_task(one()) for _ in range(n)]
                if during is not None:
                    await asyncio.sleep(0.2)
                    await asyncio.to_thread(during)
                return list(await asyncio.gather(*tasks))

        first = asyncio.run(burst(16))
        assert set(first) == {200}, first
        codes = asyncio.run(burst(64, during=lambda: two.remove_node(workers[0],
                                                                      allow_graceful=False)))
        assert set(codes) <= {200, 503}, codes
        # the survivor serves what follows (Ray may take a moment to drop the lost replica)
        deadline = time.monotonic() + 60
        while True:
            later = asyncio.run(burst(16))
            if set(later) == {200} or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert set(later) == {200}, later
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        if not workers[0].all_processes or not psutil.pid_exists(
                workers[0].all_processes["raylet"][0].process.pid):
            workers[0] = two.add_node(num_cpus=2, **NODE)
            two.wait_for_nodes()
