"""torchinfer serve on Ray Serve (torchinfer.distributed.serve): the local server's app in a
replica behind Ray's proxy, on a local Ray: the records ``predict`` writes, the API key,
batches that fill (ray-project/ray#43288), and a replica replaced when its model process
dies."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'torchinfer[ray]'")
pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install 'ray[serve]'")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi", reason="the serve extra is not installed")

from torchinfer.cli.app import run as cli  # noqa: E402
from torchinfer.datasets import shapes as ds  # noqa: E402
from torchinfer.distributed.serve import Replicas, replica_admission, serving  # noqa: E402
from torchinfer.runner.sinks import read_jsonl  # noqa: E402
from torchinfer.serve import ModelSpec, ServeConfig  # noqa: E402

KEY = "r" * 12 + "-ray-test-key-99"
# a Ray and a replica of its own to start: about 40 s on 2 cores, more than the suite's share
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("ray_serve_images")
    paths = []
    for i in range(8):
        path = folder / f"single{i}.png"
        ds.generate_single(ds.scene_rng(5, i), 96).image.save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def served():
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             object_store_memory=150 * 1024**2, _node_ip_address="127.0.0.1",
             logging_level="WARNING")
    config = ServeConfig(models=(ModelSpec("shapes_classifier"),), port=free_port(),
                         api_key=KEY, warmup=False, max_batch_size=16, max_delay_ms=100)
    try:
        with serving(config, Replicas(1, cpus_per_replica=0.5)) as base:
            deadline = time.monotonic() + 120
            while True:  # ready: the model is loaded in the replica
                try:
                    ready = httpx.get(f"{base}/v2/health/ready", timeout=5,
                                      headers={"X-API-Key": KEY}).status_code == 200
                except httpx.HTTPError:
                    ready = False
                if ready:
                    break
                assert time.monotonic() < deadline, "the replica never became ready"
                time.sleep(0.5)
            yield base
    finally:
        ray.shutdown()


def post(base: str, path: Path, **headers: str) -> httpx.Response:
    return httpx.post(f"{base}/v1/models/shapes_classifier/predict", content=path.read_bytes(),
                      headers={"Content-Type": "image/png", **headers}, timeout=60)


@pytest.mark.timeout(300)
def test_replica_answers_the_records_predict_writes(served, images, tmp_path):
    out = tmp_path / "cli"
    assert cli(["predict", "classify", *map(str, images[:3]), "-m", "shapes_classifier",
                "--out", str(out), "-q"]) == 0
    expected = [comparable(r) for r in read_jsonl(out / "predictions.jsonl")]
    got = []
    for path in images[:3]:
        response = post(served, path, **{"X-API-Key": KEY})
        assert response.status_code == 200, response.text
        got.append(comparable(response.json()))
    assert got == expected


def comparable(record: dict) -> dict:
    # timings differ; the file stamp is a run folder's; a raw body has no file name
    return {k: v for k, v in record.items() if k not in ("speed", "file", "source")}


@pytest.mark.timeout(300)
def test_the_api_key_is_checked_behind_rays_proxy(served, images):
    assert post(served, images[0]).status_code == 401
    assert post(served, images[0], Authorization="Bearer wrong-key-0000000").status_code == 401
    assert httpx.get(f"{served}/v2/health/live", timeout=10).status_code == 200  # no key


@pytest.mark.timeout(300)
def test_concurrent_requests_fill_batches_past_rays_default_admission(served, images):
    """Ray admits 5 requests per replica by default: no batch could hold more than 5."""
    assert replica_admission(ServeConfig(models=(ModelSpec("m"),), max_queue=2,
                                         max_batch_size=8)) >= 16

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=60, headers={"X-API-Key": KEY,
                                                          "Content-Type": "image/png"}) as c:
            calls = [c.post(f"{served}/v1/models/shapes_classifier/predict",
                            content=images[i % len(images)].read_bytes()) for i in range(48)]
            return [r.status_code for r in await asyncio.gather(*calls)]

    assert asyncio.run(burst()) == [200] * 48
    metrics = httpx.get(f"{served}/metrics", headers={"X-API-Key": KEY}, timeout=10).text

    def batches(bound: str) -> float:
        found = re.search(r'torchinfer_batch_size_bucket\{model="shapes_classifier",'
                          rf'le="{re.escape(bound)}"\}} (\S+)', metrics)
        assert found, metrics
        return float(found.group(1))

    assert batches("+Inf") - batches("8") >= 1  # a batch of more than 8 requests


@pytest.mark.timeout(300)
def test_a_replica_whose_model_process_died_is_replaced(served, images):
    """Last in this module: it kills the replica's model process. The replica then fails
    Ray's health check (``check_health``), and Ray starts a new replica with a new model
    process; readiness comes back."""
    import os
    import signal

    headers = {"X-API-Key": KEY}
    listing = httpx.get(f"{served}/v1/models", headers=headers, timeout=10).json()
    old = listing["models"][0]["pids"]
    assert len(old) == 1
    os.kill(old[0], signal.SIGKILL)  # a local Ray: the replica's child runs on this machine
    deadline = time.monotonic() + 240
    while True:
        with contextlib.suppress(httpx.HTTPError):
            ready = httpx.get(f"{served}/v2/health/ready", headers=headers, timeout=5)
            if ready.status_code == 200:
                models = httpx.get(f"{served}/v1/models", headers=headers, timeout=5).json()
                if models["models"][0]["pids"] != old:
                    break
        assert time.monotonic() < deadline, "the replica was not replaced"
        time.sleep(1)
    assert post(served, images[0], **headers).status_code == 200
