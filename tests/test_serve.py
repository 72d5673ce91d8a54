"""torchinfer serve against real things: a real uvicorn on a loopback port, the records
``torchinfer predict`` writes, the Open Inference Protocol's JSON shapes, Prometheus' own
parser, a subprocess server stopped with SIGTERM while requests are in flight, and model
processes killed for real."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from PIL import Image

import torchinfer as ti
from torchinfer.cli.app import run as cli
from torchinfer.datasets import shapes as ds
from torchinfer.devices import usable_cpus
from torchinfer.errors import OptionError
from torchinfer.runner.sinks import read_jsonl
from torchinfer.serve import ModelSpec, ServeConfig, build_app
from torchinfer.serve.batcher import Batcher, Job
from torchinfer.serve.config import config_from_dict, read_config

MODELS = {"classify": "shapes_classifier", "detect": "shapes_detector",
          "segment": "shapes_segmenter"}
KEY = "k" * 12 + "-test-key-1234"


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@contextlib.contextmanager
def live_server(config: ServeConfig, *, wait_ready: bool = True) -> Iterator[tuple[str, object]]:
    """A real uvicorn serving ``build_app(config)`` on a free loopback port (a thread)."""
    app = build_app(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        if wait_ready:
            assert app.state.server.wait_loaded(120), [h.error for h in
                                                       app.state.server.holders.values()]
        yield base, app.state.server
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


def quick(*specs: ModelSpec, **limits) -> ServeConfig:
    return ServeConfig(models=specs, warmup=False, **limits)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Six shapes scenes of different sizes, as PNG files."""
    folder = tmp_path_factory.mktemp("serve_images")
    paths = []
    for i, size in enumerate([256, (200, 300), 256, (320, 240), 192, 256]):
        path = folder / f"scene{i}.png"
        ds.generate_scene(ds.scene_rng(11, i), size).image.save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, object]]:
    # two workers per model on one torch thread each, whatever this machine's cores: every
    # record below comes through batches that may run side by side on one predictor
    config = quick(*(ModelSpec(m) for m in MODELS.values()), model_workers=2, model_threads=1)
    with live_server(config) as running:
        yield running


def cli_records(tmp_path: Path, task: str, paths: list[Path], *options: str) -> dict[str, dict]:
    """What ``torchinfer predict`` writes for ``paths``, by source, without timings."""
    out = tmp_path / f"cli-{task}-{abs(hash(options))}"
    code = cli(["predict", task, *map(str, paths), "-m", MODELS[task], "--out", str(out), "-q",
                "--allow-failures", *options])
    assert code == 0
    return {r["source"]: _comparable(r) for r in read_jsonl(out / "predictions.jsonl")}


def _comparable(record: dict) -> dict:
    # timings differ run to run; the file stamp and COCO image id belong to a run's folder
    return {k: v for k, v in record.items() if k not in ("speed", "file", "image_id")}


def post_file(base: str, model: str, path: Path, **params) -> httpx.Response:
    with open(path, "rb") as fh:
        return httpx.post(f"{base}/v1/models/{model}/predict", params=params,
                          files={"file": (str(path), fh, "image/png")}, timeout=60)


# --- the records -----------------------------------------------------------------------------

@pytest.mark.parametrize("task,options", [
    ("classify", {}), ("classify", {"top_k": "2"}), ("segment", {}), ("detect", {}),
    ("detect", {"conf": "0.6", "max_det": "2", "classes": "0,2"}), ("detect", {"iou": "0.1"}),
])
def test_predict_returns_the_record_predict_writes(served, images, tmp_path, task, options):
    base, _ = served
    flags = [x for k, v in options.items() for x in (f"--{k.replace('_', '-')}", v)]
    expected = cli_records(tmp_path, task, images[:3], *flags)
    for path in images[:3]:
        response = post_file(base, MODELS[task], path, **options)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        record = response.json()
        assert set(record["speed"]) == {"preprocess", "inference", "postprocess", "wait"}
        assert _comparable(record) == expected[str(path)]


def test_raw_body_and_form_options_and_visualize(served, images, tmp_path):
    base, _ = served
    data = images[0].read_bytes()
    raw = httpx.post(f"{base}/v1/models/shapes_detector/predict?conf=0.5", content=data,
                     headers={"content-type": "application/octet-stream"}, timeout=60)
    form = httpx.post(f"{base}/v1/models/shapes_detector/predict?visualize=1",
                      data={"conf": "0.5"}, files={"file": ("x.png", data)}, timeout=60)
    assert raw.status_code == form.status_code == 200
    assert raw.json()["detections"] == form.json()["detections"]
    assert raw.json()["source"] == "<request body>" and form.json()["source"] == "x.png"
    assert "queue;dur=" in raw.headers["server-timing"]
    picture = form.json()["visualization"]
    assert picture.startswith("data:image/png;base64,")
    drawn = Image.open(io.BytesIO(base64.b64decode(picture.split(",", 1)[1])))
    assert drawn.format == "PNG" and drawn.size == Image.open(images[0]).size


def test_concurrent_burst_equals_sequential_predict(served, images, tmp_path):
    """48 requests at once, two option sets interleaved, batched by the server: each answer
    equals what predict writes for that image with those options."""
    base, server = served
    plain = cli_records(tmp_path, "detect", images)
    strict = cli_records(tmp_path, "detect", images, "--conf", "0.7", "--max-det", "1")
    before = server.metrics.batch_size.snapshot(model="shapes_detector")

    async def burst() -> list[tuple[Path, bool, httpx.Response]]:
        async with httpx.AsyncClient(timeout=120) as client:
            jobs = []
            for i in range(48):
                path, tight = images[i % len(images)], bool(i % 2)
                params = {"conf": "0.7", "max_det": "1"} if tight else {}
                jobs.append((path, tight, client.post(
                    f"{base}/v1/models/shapes_detector/predict", params=params,
                    files={"file": (str(path), path.read_bytes())})))
            answers = await asyncio.gather(*(job for _, _, job in jobs))
            return [(p, t, a) for (p, t, _), a in zip(jobs, answers)]

    for path, tight, response in asyncio.run(burst()):
        assert response.status_code == 200, response.text
        assert _comparable(response.json()) == (strict if tight else plain)[str(path)]
    count, total = server.metrics.batch_size.snapshot(model="shapes_detector")
    batches, requests = count - before[0], total - before[1]
    assert requests == 48 and batches < 48, "the burst was never batched"
    assert server.holders["shapes_detector"].describe()["model_workers"] == 2


def test_workers_share_one_queue_run_side_by_side_and_all_stop():
    """Two workers take batches from one queue at once (each batch waits at a barrier that
    only two concurrent batches pass), every job is answered once, in its batch's order, and
    close() answers what is queued and joins every worker."""
    both_running = threading.Barrier(2, timeout=10)
    seen: list[tuple[str, list[int]]] = []
    started: list[str] = []
    met: list[str] = []  # the workers that ran the first two batches at once
    calls = iter(range(1000))  # next() on it is atomic under the GIL

    def run_group(jobs: list[Job]) -> list[int]:
        if next(calls) < 2:
            both_running.wait()  # raises BrokenBarrierError unless a second batch runs too
            met.append(threading.current_thread().name)
        seen.append((threading.current_thread().name, [j.decoded for j in jobs]))
        return [j.decoded * 10 for j in jobs]

    batcher = Batcher("m", run_group, max_batch_size=3, max_delay_s=0.0, workers=2,
                      on_start=lambda: started.append(threading.current_thread().name))
    jobs = [Job(i, ()) for i in range(20)]
    futures = [batcher.submit(job) for job in jobs]
    batcher.close(timeout=30)
    assert [f.result(timeout=0) for f in futures] == [i * 10 for i in range(20)]
    assert sorted(i for _, batch in seen for i in batch) == list(range(20))
    assert all(len(batch) <= 3 for _, batch in seen)
    assert len(set(met)) == 2, "the first two batches did not run on two workers at once"
    assert sorted(started) == ["torchinfer-model-m-0", "torchinfer-model-m-1"]
    assert not any(t.is_alive() for t in threading.enumerate()
                   if t.name.startswith("torchinfer-model-m-"))


@pytest.mark.slow  # 15 s: "auto" builds and verifies TorchScript and ONNX Runtime candidates
def test_the_default_backend_is_measured_once_at_start_and_named(images, monkeypatch,
                                                                  tmp_path):
    """A server gets the library's default (auto, unpinned here): measured (or recalled)
    while loading, before it is ready, never while a request waits; every option view runs
    the chosen module, and /v1/models names what runs it, as ``ti.load`` chooses it."""
    monkeypatch.delenv("TORCHINFER_BACKEND")
    monkeypatch.delenv("TORCHINFER_PRECISION")
    monkeypatch.setenv("TORCHINFER_CACHE", str(tmp_path))
    # in the server's process (model_processes=0), where the test can reach the predictor
    config = quick(ModelSpec("shapes_detector"), model_workers=2, model_threads=1,
                   max_delay_ms=0, max_batch_size=1, model_processes=0)
    with live_server(config) as (base, server):
        holder = server.holders["shapes_detector"].runners[0].engine
        assert holder.predictor.preparation is None  # done at start
        chosen = holder.predictor.backend_report.chosen

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=120) as client:
                return await asyncio.gather(*(client.post(
                    f"{base}/v1/models/shapes_detector/predict",
                    params={"conf": "0.5"} if i % 2 else {},
                    content=images[i % len(images)].read_bytes()) for i in range(8)))

        assert [r.status_code for r in asyncio.run(burst())] == [200] * 8
        assert holder.predictor.backend_report.chosen is chosen  # not measured again
        assert holder._views, "no option view was made"
        assert all(view.module is holder.predictor.module for view in holder._views.values())
        described = httpx.get(f"{base}/v1/models").json()["models"][0]["backend"]
        assert (described["backend"], described["precision"]) == (chosen.backend,
                                                                  chosen.precision)
    library = ti.load("detect", "shapes_detector", device="cpu")
    library.prepare()
    assert library.backend_report.chosen.label == chosen.label  # the same default, recalled


def test_every_image_type_sniffed_from_bytes_not_header(served, images):
    base, _ = served
    image = Image.open(images[0])
    for fmt in ("JPEG", "WEBP", "BMP", "GIF", "TIFF"):
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, fmt)
        r = httpx.post(f"{base}/v1/models/shapes_classifier/predict", content=buffer.getvalue(),
                       headers={"content-type": "text/plain"}, timeout=60)
        assert r.status_code == 200, (fmt, r.text)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"/>'
    r = httpx.post(f"{base}/v1/models/shapes_classifier/predict", content=svg,
                   headers={"content-type": "image/png"})
    assert r.status_code == 415 and "not JPEG, PNG" in r.json()["error"]


# --- mistakes: clean 4xx, the server still up ------------------------------------------------

def test_bad_inputs_are_clean_4xx_and_the_server_stays_up(served, images, tmp_path):
    base, _ = served
    url = f"{base}/v1/models/shapes_classifier/predict"
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(images[0].read_bytes()[:300])
    expected = cli_records(tmp_path, "classify", [truncated])[str(truncated)]
    r = post_file(base, "shapes_classifier", truncated)
    assert r.status_code == 422
    assert r.json()["error"] == expected["error"]  # the CLI's reason, word for word
    assert r.json()["source"] == str(truncated)
    cases = [
        (httpx.post(url, content=os.urandom(4096)), 415),
        (httpx.post(url, content=b""), 415),
        (httpx.post(f"{base}/v1/models/nope/predict", content=b"x"), 404),
        (httpx.post(url + "?top_k=0", content=images[0].read_bytes()), 422),
        (httpx.post(url + "?conf=0.5", content=images[0].read_bytes()), 422),  # not a detector
        (httpx.post(f"{base}/v1/models/shapes_detector/predict?classes=9",
                    content=images[0].read_bytes()), 422),
        (httpx.post(url, files={"notafile": (None, "x")}), 422),
        (httpx.post(url, content=b"--b\r\nbroken", headers={
            "content-type": "multipart/form-data; boundary=b"}), 422),  # no file in it
        (httpx.get(f"{base}/v2/models/nope"), 404),
        (httpx.get(f"{base}/no/such/path"), 404),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        assert isinstance(response.json()["error"], str) and response.json()["error"]
    assert httpx.get(f"{base}/v2/health/ready").status_code == 200


def test_body_cap_before_reading_it_all():
    config = quick(ModelSpec("shapes_classifier"), max_body_bytes=100_000)
    with live_server(config) as (base, _):
        url = f"{base}/v1/models/shapes_classifier/predict"
        declared = httpx.post(url, content=b"\x89PNG\r\n\x1a\n" + bytes(200_000))
        assert declared.status_code == 413 and "100,000 bytes" in declared.json()["error"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            for _ in range(50):
                yield bytes(10_000)

        chunked = httpx.post(url, content=chunks())
        assert chunked.status_code == 413
        multipart = httpx.post(url, files={"file": ("big.png", bytes(300_000))})
        assert multipart.status_code == 413
        assert httpx.get(f"{base}/v2/health/ready").status_code == 200


def test_pixel_cap_is_the_clis(tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (400, 300)).save(big)
    # a decode thread in the model process (the default there decodes on the worker)
    config = quick(ModelSpec("shapes_classifier"), max_pixels=100_000, decode_threads=1)
    expected = cli_records(tmp_path, "classify", [big], "--max-pixels", "100000")[str(big)]
    with live_server(config) as (base, _):
        r = post_file(base, "shapes_classifier", big)
    assert r.status_code == 422 and r.json()["error"] == expected["error"]
    assert "over the limit of 100,000" in r.json()["error"]


def test_overflowing_queue_answers_503_with_retry_after(images):
    config = quick(ModelSpec("shapes_classifier"), max_queue=2, max_delay_ms=300,
                   max_batch_size=64)
    with live_server(config) as (base, _):
        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                return await asyncio.gather(*(client.post(
                    f"{base}/v1/models/shapes_classifier/predict",
                    content=images[0].read_bytes()) for _ in range(16)))

        answers = asyncio.run(burst())
        codes = sorted(r.status_code for r in answers)
        assert set(codes) == {200, 503} and codes.count(200) >= 1, codes
        full = next(r for r in answers if r.status_code == 503)
        assert full.headers["retry-after"] == "1" and "max_queue 2" in full.json()["error"]
        assert httpx.get(f"{base}/v2/health/ready").status_code == 200


def test_request_timeout_answers_504(images):
    config = quick(ModelSpec("shapes_classifier"), timeout_s=0.001, max_delay_ms=500,
                   max_batch_size=64)
    with live_server(config) as (base, server):
        r = httpx.post(f"{base}/v1/models/shapes_classifier/predict",
                       content=images[0].read_bytes(), timeout=30)
        assert r.status_code == 504 and "timeout" in r.json()["error"]
        time.sleep(1.0)  # the abandoned request is dropped by the model process, not run
        assert server.holders["shapes_classifier"].depth == 0
        assert server.metrics.batch_size.snapshot(model="shapes_classifier") == (0, 0.0)


# --- keys and addresses ------------------------------------------------------------------------

def test_api_key_on_every_endpoint_but_liveness(images):
    config = quick(ModelSpec("shapes_classifier"), api_key=KEY)
    with live_server(config) as (base, _):
        guarded = [("GET", "/"), ("GET", "/v1/models"), ("GET", "/metrics"), ("GET", "/v2"),
                   ("GET", "/v2/health/ready"), ("GET", "/v2/models/shapes_classifier"),
                   ("GET", "/v2/models/shapes_classifier/ready"), ("GET", "/static/app.js"),
                   ("POST", "/v1/models/shapes_classifier/predict"),
                   ("POST", "/v2/models/shapes_classifier/infer")]
        for method, path in guarded:
            for headers in ({}, {"Authorization": "Bearer wrong-key-wrong-key"},
                            {"X-API-Key": KEY[:-1]}):
                r = httpx.request(method, base + path, headers=headers)
                assert r.status_code == 401, (path, headers)
                assert r.json()["error"].startswith("missing or wrong API key")
        assert httpx.get(f"{base}/v2/health/live").status_code == 200
        data = images[0].read_bytes()
        url = f"{base}/v1/models/shapes_classifier/predict"
        basic = base64.b64encode(f"user:{KEY}".encode()).decode()
        for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY},
                        {"Authorization": f"Basic {basic}"}):
            assert httpx.post(url, content=data, headers=headers).status_code == 200
            assert httpx.get(f"{base}/", headers=headers).status_code == 200


def test_other_addresses_need_a_key(capsys):
    with pytest.raises(Exception, match="reachable from other machines"):
        ServeConfig(models=(ModelSpec("shapes_classifier"),), host="0.0.0.0").check()
    ServeConfig(models=(ModelSpec("shapes_classifier"),), host="0.0.0.0", api_key=KEY).check()
    ServeConfig(models=(ModelSpec("shapes_classifier"),), host="::1").check()
    env = {k: v for k, v in os.environ.items() if k != "TORCHINFER_API_KEY"}
    done = subprocess.run([sys.executable, "-m", "torchinfer", "serve", "-m",
                           "shapes_classifier", "--host", "0.0.0.0"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "API key" in done.stderr


def test_models_from_the_command_line_and_files(tmp_path):
    spec = ModelSpec.parse("fast=detect:shapes_detector", ("classify", "detect", "segment"))
    assert (spec.name, spec.task, spec.model) == ("fast", "detect", "shapes_detector")
    spec = ModelSpec.parse("pkg.module:factory", ("classify", "detect", "segment"))
    assert (spec.task, spec.model) == (None, "pkg.module:factory")
    assert ModelSpec("models/My Net.onnx").name == "My_Net"
    (tmp_path / "serve.yaml").write_text(
        "max_delay_ms: 1\nmodel_workers: 3\nmodel_processes: 2\nmodels:\n  - model: shapes_detector\n"
        "    name: shapes\n    options: {conf: 0.3}\n  - shapes_classifier\n")
    config = read_config(tmp_path / "serve.yaml")
    assert [m.name for m in config.models] == ["shapes", "shapes_classifier"]
    assert config.models[0].options == {"conf": 0.3} and config.max_delay_ms == 1
    assert config.model_workers == 3 and config.model_processes == 2
    with pytest.raises(OptionError, match="model_workers must be >= 1"):
        ServeConfig(models=config.models, model_workers=0).check()
    with pytest.raises(OptionError, match="model_processes must be >= 0"):
        ServeConfig(models=config.models, model_processes=-1).check()
    for bad in ({"models": [{"model": "x", "evil": 1}]}, {"api_key": KEY}, {"url": "http://x"}):
        with pytest.raises(Exception):
            config_from_dict(bad)


# --- Open Inference Protocol v2 ----------------------------------------------------------------

def test_open_inference_protocol(served, images):
    base, _ = served
    assert httpx.get(f"{base}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{base}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{base}/v2").json()["name"] == "torchinfer"
    for task, model in MODELS.items():
        meta = httpx.get(f"{base}/v2/models/{model}").json()
        assert meta["name"] == model and meta["versions"] and meta["platform"]
        for tensor in meta["inputs"] + meta["outputs"]:
            assert set(tensor) == {"name", "datatype", "shape"}
            assert all(isinstance(d, int) and (d == -1 or d > 0) for d in tensor["shape"])
        assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
        assert httpx.get(f"{base}/v2/models/{model}/ready").json() == {"name": model,
                                                                       "ready": True}
        encoded = [base64.b64encode(p.read_bytes()).decode() for p in images[:2]]
        body = {"id": "r1", "inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                                        "data": encoded}]}
        if task == "detect":
            body["parameters"] = {"conf": 0.5}
        r = httpx.post(f"{base}/v2/models/{model}/infer", json=body, timeout=60)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["model_name"] == model and answer["id"] == "r1"
        declared = {o["name"]: o for o in meta["outputs"]}
        assert [o["name"] for o in answer["outputs"]] == list(declared)
        for out in answer["outputs"]:
            assert set(out) == {"name", "datatype", "shape", "data"}
            assert out["datatype"] == declared[out["name"]]["datatype"]
            assert len(out["shape"]) == len(declared[out["name"]]["shape"])
            assert out["shape"][0] == 2
            count = 1
            for d in out["shape"]:
                count *= d
            assert len(out["data"]) == count  # flattened, row-major
        records = [json.loads(x) for x in next(o for o in answer["outputs"]
                                               if o["name"] == "record")["data"]]
        params = {"conf": "0.5"} if task == "detect" else {}
        for path, record in zip(images[:2], records):
            single = httpx.post(f"{base}/v1/models/{model}/predict", params=params,
                                content=path.read_bytes(), timeout=60).json()
            assert {k: v for k, v in record.items() if k not in ("speed", "source")} == \
                {k: v for k, v in single.items() if k not in ("speed", "source")}
        if task == "detect":
            boxes = next(o for o in answer["outputs"] if o["name"] == "boxes")
            first = records[0]["detections"]
            assert boxes["data"][:4] == (first[0]["box"] if first else boxes["data"][:4])
    picked = httpx.post(f"{base}/v2/models/shapes_classifier/infer", json={
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                    "data": [base64.b64encode(images[0].read_bytes()).decode()]}],
        "outputs": [{"name": "topk_labels"}]}).json()
    assert [o["name"] for o in picked["outputs"]] == ["topk_labels"]
    for bad in ({}, {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1],
                                 "data": [1.0]}]},
                {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                             "data": ["not base64!"]}]},
                {"inputs": [{"name": "image", "datatype": "BYTES", "shape": ["x"],
                             "data": ["aGk="]}]},
                {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                             "data": [base64.b64encode(b"garbage").decode()]}]}):
        r = httpx.post(f"{base}/v2/models/shapes_classifier/infer", json=bad)
        assert r.status_code == 400 and isinstance(r.json()["error"], str), r.text
    r = httpx.post(f"{base}/v2/models/shapes_classifier/infer", content=b"{not json")
    assert r.status_code == 400


# --- /metrics ----------------------------------------------------------------------------------

def test_metrics_follow_the_exposition_format(served, images):
    parser = pytest.importorskip("prometheus_client.parser", reason="Prometheus' own parser "
                                 "(prometheus-client, in the dev extra) checks the format")
    text_string_to_metric_families = parser.text_string_to_metric_families
    base, _ = served
    httpx.post(f"{base}/v1/models/shapes_classifier/predict", content=images[0].read_bytes())
    httpx.post(f"{base}/v1/models/shapes_classifier/predict", content=b"junk")
    r = httpx.get(f"{base}/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    kinds = {"torchinfer_requests": "counter", "torchinfer_request_failures": "counter",
             "torchinfer_request_duration_seconds": "histogram",
             "torchinfer_queue_wait_seconds": "histogram",
             "torchinfer_compute_seconds": "histogram", "torchinfer_batch_size": "histogram",
             "torchinfer_queue_depth": "gauge", "torchinfer_model_ready": "gauge"}
    for name, kind in kinds.items():
        assert families[name].type == kind, name
    ok = [s for s in families["torchinfer_requests"].samples
          if s.labels == {"model": "shapes_classifier", "endpoint": "predict", "status": "200"}]
    failed = [s for s in families["torchinfer_request_failures"].samples
              if s.labels.get("status") == "415"]
    assert ok and ok[0].value >= 1 and failed and failed[0].value >= 1
    for name in ("torchinfer_request_duration_seconds", "torchinfer_batch_size"):
        samples = [s for s in families[name].samples if s.labels.get("model") ==
                   "shapes_classifier"]
        buckets = [s for s in samples if s.name.endswith("_bucket")]
        values = [s.value for s in buckets]
        assert values == sorted(values) and buckets[-1].labels["le"] == "+Inf"
        count = next(s for s in samples if s.name.endswith("_count"))
        assert buckets[-1].value == count.value >= 1
    depth = {s.labels["model"]: s.value for s in families["torchinfer_queue_depth"].samples}
    assert set(depth) == set(MODELS.values())
    lines = r.text.splitlines()
    for family in kinds:  # HELP then TYPE, once, before the family's samples
        name = family + ("_total" if kinds[family] == "counter" else "")
        help_at = lines.index(next(x for x in lines if x.startswith(f"# HELP {name} ")))
        assert lines[help_at + 1].startswith(f"# TYPE {name} ")


def test_memory_stays_flat_over_many_requests(served, images):
    """Servers that grow for hours are a classic complaint: after a warm-up, 150 more requests
    (with the pictures drawn, the costliest path) must grow neither the server's process
    (this one) nor the model's."""
    base, server = served
    url = f"{base}/v1/models/shapes_classifier/predict?visualize=1"
    data = images[0].read_bytes()
    model_pid = server.holders["shapes_classifier"].runners[0].pid

    def rss_mb(pid: int | str) -> float:
        with open(f"/proc/{pid}/status") as fh:
            line = next(x for x in fh if x.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    if not os.path.exists("/proc/self/status"):
        pytest.skip("reads the resident set size from /proc (Linux)")
    with httpx.Client(timeout=60) as client:
        for _ in range(50):
            assert client.post(url, content=data).status_code == 200
        before = rss_mb("self"), rss_mb(model_pid)
        for _ in range(150):
            assert client.post(url, content=data).status_code == 200
        grown = rss_mb("self") - before[0], rss_mb(model_pid) - before[1]
    assert grown[0] < 20, f"the server's memory grew {grown[0]:.1f} MB over 150 requests"
    assert grown[1] < 20, f"the model process's memory grew {grown[1]:.1f} MB"


def test_v1_models_describes_what_is_loaded(served):
    base, _ = served
    listing = httpx.get(f"{base}/v1/models").json()
    assert listing["ready"] and listing["auth"] is False
    by_name = {m["name"]: m for m in listing["models"]}
    detector = by_name["shapes_detector"]
    assert detector["task"] == "detect" and detector["labels"]
    assert detector["backend"]["backend"] == "torch" and detector["device"] == "cpu"
    assert set(detector["options"]) == {"conf", "iou", "classes", "max_det"}
    assert by_name["shapes_classifier"]["preprocess"]["crop_size"] == [128, 128]
    assert detector["max_batch_size"] >= 1 and detector["max_delay_ms"] >= 0
    assert detector["model_workers"] == 2 and detector["model_threads"] == 1
    # each model in a process of its own, none of them this one
    assert detector["model_processes"] == 1 and len(detector["pids"]) == 1
    pids = {m["pids"][0] for m in by_name.values()}
    assert len(pids) == len(MODELS) and os.getpid() not in pids


# --- lifecycle -----------------------------------------------------------------------------------

def test_not_ready_while_loading_then_ready(images):
    config = ServeConfig(models=(ModelSpec("shapes_classifier"),), warmup=True)
    with live_server(config, wait_ready=False) as (base, server):
        live = httpx.get(f"{base}/v2/health/live")
        ready = httpx.get(f"{base}/v2/health/ready")
        early = httpx.post(f"{base}/v1/models/shapes_classifier/predict",
                           content=images[0].read_bytes())
        assert live.status_code == 200
        assert ready.status_code == 503 and ready.json() == {"ready": False}
        assert early.status_code == 503 and early.headers["retry-after"] == "1"
        assert "loading" in early.json()["error"]
        assert server.wait_loaded(300)
        assert httpx.get(f"{base}/v2/health/ready").status_code == 200
        info = httpx.get(f"{base}/v1/models").json()["models"][0]
        assert info["pipeline"] is not None  # the warm-up measured the core split
        if info["device"] == "cpu" and info["model_threads"]:  # spare cores get workers
            assert info["model_workers"] == max(1, (usable_cpus() - 1) // info["model_threads"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def cli_server(tmp_path: Path, *flags: str) -> Iterator[tuple[subprocess.Popen, str, Path]]:
    """``torchinfer serve`` in a subprocess of its own, once ready: (process, URL, its log).
    The log is a file: a model process that outlived the server would hold a pipe open."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "torchinfer", "serve", "--port", str(port), "--no-warmup",
             *flags], stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, log.read_text()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/v2/health/ready").status_code == 200:
                    break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield process, base, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc: state and parent follow the name)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its exit status is left


def wait_gone(pids: list[int], seconds: float = 15) -> list[int]:
    """The pids still running after ``seconds`` (waiting for all to end)."""
    deadline = time.monotonic() + seconds
    while any(running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if running(p)]


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/stat"),
                                reason="finds the model processes in /proc (Linux)")


@needs_proc
def test_sigterm_drains_requests_in_flight(images, tmp_path):
    # requests wait up to 1.5 s in the queue for a batch of 64, so all are in flight at SIGTERM
    with cli_server(tmp_path, "-m", "shapes_classifier", "--max-delay-ms", "1500",
                    "--max-batch-size", "64") as (process, base, log):
        models = child_pids(process.pid)
        assert len(models) == 1  # the model's process; the server runs no model itself
        assert "libtorch" not in Path(f"/proc/{process.pid}/maps").read_text()
        assert "libtorch" in Path(f"/proc/{models[0]}/maps").read_text()

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                jobs = [asyncio.ensure_future(client.post(
                    f"{base}/v1/models/shapes_classifier/predict",
                    content=images[i % 3].read_bytes())) for i in range(12)]
                await asyncio.sleep(0.5)
                assert not any(job.done() for job in jobs)
                process.send_signal(signal.SIGTERM)
                return await asyncio.gather(*jobs)

        answers = asyncio.run(burst())
        assert [r.status_code for r in answers] == [200] * 12
        assert all(r.json()["top1"]["label"] for r in answers)
        # uvicorn re-raises the signal once drained: the supervisor sees a SIGTERM stop
        assert process.wait(60) in (0, -signal.SIGTERM)
        assert "Finished server process" in log.read_text()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{base}/v2/health/live")
        assert not wait_gone(models, 0), "the model process outlived the server"


def test_a_killed_model_process_is_reported_and_no_request_waits_for_it(images):
    # the batch waits 2 s to fill: the requests are queued in the model process when it dies
    config = quick(ModelSpec("shapes_classifier"), max_delay_ms=2000, max_batch_size=64)
    with live_server(config) as (base, server):
        url = f"{base}/v1/models/shapes_classifier/predict"
        pid = server.holders["shapes_classifier"].runners[0].pid

        async def scenario() -> tuple[list[httpx.Response], float]:
            async with httpx.AsyncClient(timeout=30) as client:
                waiting = [asyncio.ensure_future(client.post(
                    url, content=images[i].read_bytes())) for i in range(3)]
                await asyncio.sleep(0.5)
                assert not any(w.done() for w in waiting)
                os.kill(pid, signal.SIGKILL)
                t0 = time.monotonic()
                answers = await asyncio.gather(*waiting)
                return answers, time.monotonic() - t0

        answers, took = asyncio.run(scenario())
        assert [r.status_code for r in answers] == [503] * 3 and took < 5, took
        assert "ended unexpectedly (killed by SIGKILL)" in answers[0].json()["error"]
        assert answers[0].headers["retry-after"] == "1"
        assert httpx.get(f"{base}/v2/health/ready").status_code == 503
        live = httpx.get(f"{base}/v2/health/live")
        assert live.status_code == 503 and live.json() == {"live": False}
        model = httpx.get(f"{base}/v1/models").json()["models"][0]
        assert model["state"] == "failed" and "SIGKILL" in model["error"]
        later = httpx.post(url, content=images[0].read_bytes(), timeout=10)
        assert later.status_code == 503 and "failed" in later.json()["error"]


@needs_proc
def test_a_dead_model_process_stops_the_command_and_its_other_processes(tmp_path):
    with cli_server(tmp_path, "-m", "shapes_classifier", "--model-processes", "2") \
            as (process, base, log):
        models = child_pids(process.pid)
        assert len(models) == 2
        os.kill(models[0], signal.SIGKILL)
        assert process.wait(60) == 2  # a supervisor restarts it
        assert "ended unexpectedly (killed by SIGKILL)" in log.read_text()
        assert not wait_gone(models), "a model process outlived the server"


@needs_proc
def test_model_processes_end_with_a_killed_server(tmp_path):
    with cli_server(tmp_path, "-m", "shapes_classifier") as (process, base, log):
        models = child_pids(process.pid)
        assert len(models) == 1
        process.kill()  # no shutdown at all: the model process must notice on its own
        process.wait()
        assert not wait_gone(models), "the model process outlived its server"


def test_threads_in_the_server_process_answer_the_same(images, tmp_path):
    """``model_processes=0``: the model on threads of the server's own process."""
    expected = cli_records(tmp_path, "classify", images[:2], "--top-k", "2")
    with live_server(quick(ModelSpec("shapes_classifier"), model_processes=0)) as (base, _):
        for path in images[:2]:
            response = post_file(base, "shapes_classifier", path, top_k="2")
            assert response.status_code == 200, response.text
            assert _comparable(response.json()) == expected[str(path)]
        info = httpx.get(f"{base}/v1/models").json()["models"][0]
        assert info["model_processes"] == 0 and info["pids"] == []


def test_a_transformers_folder_is_served_by_its_path_alone(tmp_path):
    """A folder saved by transformers, named only by its path: the server finds its task in
    its config and answers what ``torchinfer predict`` writes."""
    pytest.importorskip("transformers")
    from hub_fixtures import photos, save_hf_folder

    folder = save_hf_folder(tmp_path / "detr", "detr")
    pictures = photos(tmp_path / "photos")[:2]
    with live_server(quick(ModelSpec(str(folder), options={"conf": 0.3}))) as (base, server):
        (name,) = server.holders
        assert server.holders[name].task == "detect"
        got = {}
        for path in pictures:
            response = post_file(base, name, path)
            assert response.status_code == 200, response.text
            got[Path(response.json()["source"]).name] = _comparable(response.json())
    out = tmp_path / "cli"
    assert cli(["predict", "detect", *map(str, pictures), "-m", str(folder), "--conf", "0.3",
                "--out", str(out), "-q"]) == 0
    expected = {Path(r["source"]).name: _comparable(r) for r in read_jsonl(out / "predictions.jsonl")}
    assert got.keys() == expected.keys()
    for key in got:
        g, e = got[key]["detections"], expected[key]["detections"]
        assert [d["label"] for d in g] == [d["label"] for d in e] and len(g) > 0
        for a, b in zip(g, e):
            assert a["box"] == pytest.approx(b["box"], abs=0.02)
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_a_depth_folder_is_served_over_http_and_oip(tmp_path):
    """A task added by its manifest alone (depth): the JSON answer is predict's record, the
    OIP answer its manifest's outputs, the picture its own drawing."""
    pytest.importorskip("transformers")
    import numpy as np

    from hub_fixtures import photos, save_hf_folder

    folder = save_hf_folder(tmp_path / "anything", "depth_anything")
    picture = photos(tmp_path / "photos")[0]
    options = {"backend": "torch", "precision": "fp32", "exact_decode": True}
    expected = ti.load("depth", str(folder), device="cpu", **options)(str(picture)).depth
    with live_server(quick(ModelSpec(str(folder), options=options))) as (base, server):
        (name,) = server.holders
        assert server.holders[name].task == "depth"
        meta = httpx.get(f"{base}/v2/models/{name}", timeout=30).json()
        assert [o["name"] for o in meta["outputs"]] == ["depth", "size", "record"]
        plain = post_file(base, name, picture)
        assert plain.status_code == 200, plain.text
        assert plain.json()["max"] == pytest.approx(float(expected.max()), abs=1e-4)
        body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                            "data": [base64.b64encode(picture.read_bytes()).decode()]}]}
        answer = httpx.post(f"{base}/v2/models/{name}/infer", json=body, timeout=60).json()
        outputs = {o["name"]: o for o in answer["outputs"]}
        assert outputs["size"]["data"] == list(expected.shape)
        got = np.array(outputs["depth"]["data"], np.float32).reshape(outputs["depth"]["shape"])[0]
        assert np.abs(got - expected).max() < 1e-4
        drawn = httpx.post(f"{base}/v1/models/{name}/predict?visualize=1",
                           files={"file": (picture.name, picture.read_bytes())}, timeout=60)
        assert drawn.status_code == 200 and drawn.json()["visualization"]
        wrong = httpx.post(f"{base}/v1/models/{name}/predict?top_k=3",
                           files={"file": (picture.name, picture.read_bytes())}, timeout=60)
        assert wrong.status_code == 422 and "takes no options" in wrong.text


def test_a_plugin_task_is_served_over_http_and_oip(tmp_path, monkeypatch, images):
    """A task from another package (tests/test_manifests.py's ``scores``), installed on the
    path with its entry point: the server runs it, checks its request option and answers
    its OIP outputs, with no edit here."""
    from test_manifests import install_plugin
    from torchinfer.manifests import forget_plugins, task_names

    site = install_plugin(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    forget_plugins()
    try:
        spec = ModelSpec.parse("scores:scores_task:make_model", task_names())
        spec = ModelSpec(spec.model, task=spec.task, name="scores",
                         options={"trust_code": True, "backend": "torch"})
        with live_server(quick(spec)) as (base, server):
            assert server.holders["scores"].task == "scores"
            plain = post_file(base, "scores", images[0])
            doubled = post_file(base, "scores", images[0], scale=2)
            assert plain.status_code == doubled.status_code == 200, plain.text
            assert doubled.json()["values"] == pytest.approx([2 * v for v in plain.json()["values"]],
                                                             abs=2e-4)
            refused = post_file(base, "scores", images[0], scale=-1)
            assert refused.status_code == 422 and "scale must be >= 0" in refused.text
            meta = httpx.get(f"{base}/v2/models/scores", timeout=30).json()
            assert [o["name"] for o in meta["outputs"]] == ["values", "record"]
            body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                "data": [base64.b64encode(images[0].read_bytes()).decode()]}]}
            answer = httpx.post(f"{base}/v2/models/scores/infer", json=body, timeout=60).json()
            values = next(o for o in answer["outputs"] if o["name"] == "values")
            assert values["shape"] == [1, 4]
            assert values["data"] == pytest.approx(plain.json()["values"], abs=2e-4)
    finally:
        forget_plugins()
        sys.modules.pop("scores_task", None)
