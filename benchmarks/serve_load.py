"""Loopback load test: `torchinfer serve` against (a) a plain FastAPI endpoint calling the
same predictor once per request and (b) LitServe batching the same predictor, side by side in
one run, on the same model and the same fixed-size images.

Each server runs in its own process on 127.0.0.1; the load generator (asyncio + httpx, closed
loop: C clients each sending the next request when the last is answered) runs here. At each
concurrency it reports req/s, p50/p90/p99 latency, error rate, mean batch size, and per batch
the queue wait vs the compute (ours from /metrics; the peers' compute from their own timing).

    python benchmarks/serve_load.py                          # shapes_classifier, all three
    python benchmarks/serve_load.py --model shapes_detector --requests 300
    python benchmarks/serve_load.py --only ours --delays 0,1,2,5,10   # the max_delay_ms sweep
    python benchmarks/serve_load.py --only ours,ours-1w,plain   # several model workers or one
    python benchmarks/serve_load.py --only ours,ours-0p,plain   # model process or threads
    python benchmarks/serve_load.py --protocols     # OIP: HTTP-JSON, HTTP-binary and gRPC

LitServe is a benchmark-only install in its own environment (it reuses .venv's torch):
    python benchmarks/serve_load.py --setup-peer    # creates .venv-serve-peer with litserve
"""


import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT / ".venv-serve-peer"
LITSERVE = "litserve==0.2.19"
TASKS = {"shapes_classifier": "classify", "shapes_detector": "detect",
         "shapes_segmenter": "segment"}


# --- the two peers, each run in a process of its own -------------------------------------------

def run_plain(port: int, model: str, stats: str) -> None:
    """(a): the FastAPI endpoint people write first. A sync endpoint (FastAPI runs it on its
    thread pool), one predictor call per request, no batching."""
    import uvicorn
    from fastapi import FastAPI, UploadFile

    import torchinfer as ti

    predictor = ti.load(TASKS[model], model)
    app = FastAPI()

    @app.post("/predict")
    def predict(file: UploadFile) -> dict:
        t0 = time.perf_counter()
        result = predictor([file.file.read()])[0]
        _record(stats, 1, time.perf_counter() - t0)
        return result.to_dict()

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def run_litserve(port: int, model: str, stats: str, batch: int, delay_s: float) -> None:
    """(b): LitServe with its batching (max_batch_size, batch_timeout) on the same predictor:
    decode + preprocess of the whole batch in one ``decode`` call, then ``run``."""
    import litserve as ls

    api = LitPredictor(max_batch_size=batch, batch_timeout=delay_s, api_path="/predict")
    api.model_name, api.stats = model, stats
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=60)
    server.run(host="127.0.0.1", port=port, log_level="warning", generate_client_file=False)


try:  # only in the LitServe environment; its worker process finds the class here by name
    import litserve as _litserve
except ImportError:
    _litserve = None

if _litserve is not None:
    class LitPredictor(_litserve.LitAPI):
        model_name = ""
        stats = ""

        def setup(self, device):
            import torchinfer as ti

            self.predictor = ti.load(TASKS[self.model_name], self.model_name)

        def decode_request(self, request):
            return request["file"].file.read()

        def predict(self, items):
            from torchinfer.runner.inputs import Source

            t0 = time.perf_counter()
            p = self.predictor
            results = p.run(p.decode([Source("<upload>", "memory", data=x) for x in items]))
            _record(self.stats, len(items), time.perf_counter() - t0)
            return results

        def encode_response(self, result):
            return result.to_dict()


def _record(path: str, images: int, seconds: float) -> None:
    with open(path, "a") as fh:  # one short line per batch: appends do not interleave
        fh.write(f"{images} {seconds:.6f}\n")


# --- load --------------------------------------------------------------------------------------

def images_for(model: str, count: int = 8) -> list[bytes]:
    from torchinfer.datasets import shapes as ds

    out = []
    for i in range(count):
        rng = ds.scene_rng(2026, i)
        scene = ds.generate_single(rng, 128) if TASKS[model] == "classify" else \
            ds.generate_scene(rng, 256)
        buffer = io.BytesIO()
        scene.image.save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


async def closed_loop(one: Callable[[int], Awaitable[int]], concurrency: int, total: int,
                      errors: tuple[type[BaseException], ...]
                      ) -> tuple[list[float], int, float, list[int]]:
    """(latencies of the answered requests, errors, seconds, what ``one`` returned for each
    answer) for ``total`` requests, ``one(i)`` each, from ``concurrency`` clients that each
    send the next request when the last is answered; ``errors``: what counts as a failed
    request."""
    latencies: list[float] = []
    answers: list[int] = []
    failed = sent = 0

    async def worker() -> None:
        nonlocal sent, failed
        while sent < total:
            i = sent
            sent += 1
            t0 = time.perf_counter()
            try:
                answers.append(await one(i))
                latencies.append(time.perf_counter() - t0)
            except errors:
                failed += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, failed, time.perf_counter() - start, answers


async def load(url: str, images: list[bytes], concurrency: int, total: int
               ) -> tuple[list[float], int, float]:
    """(latencies of the answered requests, errors, seconds) for ``total`` requests from
    ``concurrency`` clients."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        async def one(i: int) -> int:
            r = await client.post(url, files={"file": (f"{i}.png", images[i % len(images)],
                                                       "image/png")})
            r.raise_for_status()
            return r.status_code

        latencies, errors, seconds, _ = await closed_loop(one, concurrency, total,
                                                          (httpx.HTTPError,))
        return latencies, errors, seconds


# --- the Open Inference Protocol's three forms, on one server -----------------------------------

def full_hd_jpegs(count: int = 4) -> list[bytes]:
    """Shapes scenes at 1920x1080, as JPEG (quality 90)."""
    from torchinfer.datasets import shapes as ds

    out = []
    for i in range(count):
        buffer = io.BytesIO()
        ds.generate_scene(ds.scene_rng(2027, i), (1080, 1920)).image.save(buffer, "JPEG",
                                                                            quality=90)
        out.append(buffer.getvalue())
    return out


def json_request(image: bytes, parameters: dict) -> bytes:
    """An infer request as JSON: the image base64 in a BYTES tensor."""
    import base64

    return json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                   "data": [base64.b64encode(image).decode()]}],
                       "parameters": parameters}).encode()


def binary_request(image: bytes, parameters: dict) -> tuple[bytes, int]:
    """(body, JSON header length): the binary tensor data extension, every output binary."""
    data = len(image).to_bytes(4, "little") + image
    header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                     "parameters": {"binary_data_size": len(data)}}],
                         "parameters": {**parameters, "binary_data_output": True}}).encode()
    return header + data, len(header)


def read_json_answer(body: bytes) -> dict:
    """What a client does with a JSON answer: parse it, each output to an array."""
    import numpy as np

    answer = json.loads(body)
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer["outputs"]
            if o["datatype"] != "BYTES"}


def read_binary_answer(body: bytes, header_length: int) -> dict:
    """The same for a binary answer: the JSON header, then each output's bytes as an array."""
    import numpy as np

    header = json.loads(body[:header_length])
    at, out = header_length, {}
    types = {"FP32": "<f4", "INT64": "<i8", "INT32": "<i4", "UINT8": "u1", "UINT16": "<u2"}
    for o in header["outputs"]:
        size = o["parameters"]["binary_data_size"]
        if o["datatype"] in types:
            out[o["name"]] = np.frombuffer(body[at:at + size], types[o["datatype"]]
                                           ).reshape(o["shape"])
        at += size
    return out


async def protocol_load(form: str, target: dict, images: list[bytes], model: str,
                        parameters: dict, concurrency: int, total: int, encoding: str
                        ) -> tuple[list[float], int, float, list[int]]:
    """(latencies, errors, seconds, bytes of each answer on the wire) for ``total``
    requests in ``form`` (http-json, http-binary, grpc) from ``concurrency`` clients, HTTP
    answers in ``encoding`` (identity, gzip), each answer read into arrays as a client
    would."""
    import grpc
    import httpx

    from torchinfer.serve.protocol import oip_v2_pb2 as pb

    url = f"{target['http']}/v2/models/{model}/infer"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    bodies = [json_request(im, parameters) if form == "http-json" else
              binary_request(im, parameters) for im in images] if form != "grpc" else []
    grpc_params = {k: pb.InferParameter(string_param=v) for k, v in parameters.items()}
    grpc_requests = [pb.ModelInferRequest(
        model_name=model, parameters=grpc_params,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES",
                                                      shape=[1])],
        raw_input_contents=[len(im).to_bytes(4, "little") + im]) for im in images]
    options = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]
    async with httpx.AsyncClient(timeout=120, limits=limits) as client, \
            grpc.aio.insecure_channel(target["grpc"], options=options) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                    request_serializer=pb.ModelInferRequest.SerializeToString,
                                    response_deserializer=pb.ModelInferResponse.FromString)

        async def one(i: int) -> int:
            import numpy as np

            if form == "grpc":
                answer = await infer(grpc_requests[i % len(images)], timeout=120)
                for o, raw in zip(answer.outputs, answer.raw_output_contents):
                    if o.datatype != "BYTES":
                        np.frombuffer(raw, {"FP32": "<f4", "INT64": "<i8", "INT32": "<i4",
                                            "UINT8": "u1"}[o.datatype]).reshape(o.shape)
                return answer.ByteSize()
            if form == "http-json":
                r = await client.post(url, content=bodies[i % len(images)], headers={
                    "Content-Type": "application/json", "Accept-Encoding": encoding})
                r.raise_for_status()
                read_json_answer(r.content)  # httpx has inflated it
            else:
                body, length = bodies[i % len(images)]
                r = await client.post(url, content=body, headers={
                    "Inference-Header-Content-Length": str(length),
                    "Accept-Encoding": encoding})
                r.raise_for_status()
                read_binary_answer(r.content, int(r.headers["Inference-Header-Content-Length"]))
            return int(r.headers["Content-Length"])

        return await closed_loop(one, concurrency, total, (httpx.HTTPError, grpc.RpcError))


# (label, form, model, request parameters, HTTP Accept-Encoding)
UINT8 = {"mask_datatype": "UINT8"}
PROTOCOL_CASES = {
    "classify": [("http-json", "http-json", "shapes_classifier", {}, "identity"),
                 ("http-binary", "http-binary", "shapes_classifier", {}, "identity"),
                 ("grpc", "grpc", "shapes_classifier", {}, "identity")],
    "segment": [("http-json", "http-json", "shapes_segmenter", {}, "identity"),
                ("http-json gzip", "http-json", "shapes_segmenter", {}, "gzip"),
                ("http-binary INT32", "http-binary", "shapes_segmenter", {}, "identity"),
                ("http-binary UINT8", "http-binary", "shapes_segmenter", UINT8, "identity"),
                ("http-binary UINT8 gzip", "http-binary", "shapes_segmenter", UINT8, "gzip"),
                ("grpc INT32", "grpc", "shapes_segmenter", {}, "identity"),
                ("grpc UINT8", "grpc", "shapes_segmenter", UINT8, "identity")],
}
PROTOCOL_HEADER = ("| task | form | conc. | req/s | p50 ms | p99 ms | errors | bytes/answer |\n"
                   "|---|---|---|---|---|---|---|---|")


def bench_protocols(args: argparse.Namespace) -> list[dict]:
    """One server with both models and a gRPC port; at each concurrency, ``rounds`` short
    runs of each form in turn, pooled."""
    port, grpc_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "torchinfer", "serve", "-m", "shapes_classifier", "-m",
           "shapes_segmenter", "--port", str(port), "--grpc-port", str(grpc_port),
           "--device", args.device]
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    target = {"http": f"http://127.0.0.1:{port}", "grpc": f"127.0.0.1:{grpc_port}"}
    rows = []
    try:
        wait_up(f"{target['http']}/v2/health/ready", process)
        inputs = {"classify": images_for("shapes_classifier"), "segment": full_hd_jpegs()}
        for task, concurrencies in (("classify", args.concurrency),
                                    ("segment", args.segment_concurrency)):
            for _, form, model, params, accept in PROTOCOL_CASES[task]:  # warm-up
                asyncio.run(protocol_load(form, target, inputs[task], model, params, 2, 4,
                                          accept))
            for c in concurrencies:
                per_round = max(args.requests // args.rounds, 2 * c) if task == "classify" \
                    else max(args.segment_requests // args.rounds, c)
                pooled: dict[str, tuple[list, int, float, list]] = {}
                for _ in range(args.rounds):
                    for label, form, model, params, accept in PROTOCOL_CASES[task]:
                        lat, errors, seconds, sizes = asyncio.run(protocol_load(
                            form, target, inputs[task], model, params, c, per_round, accept))
                        lats, errs, secs, szs = pooled.get(label, ([], 0, 0.0, []))
                        pooled[label] = (lats + lat, errs + errors, secs + seconds, szs + sizes)
                for label, (lat, errors, seconds, sizes) in pooled.items():
                    row = {"task": task, "form": label, "concurrency": c,
                           "req_s": len(lat) / seconds, "p50_ms": percentile(lat, 50) * 1000,
                           "p99_ms": percentile(lat, 99) * 1000,
                           "error_rate": errors / (per_round * args.rounds),
                           "bytes": sum(sizes) / max(len(sizes), 1)}
                    rows.append(row)
                    print(f"| {task} | {label} | {c} | {row['req_s']:.1f} | "
                          f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
                          f"{row['error_rate']:.1%} | {row['bytes']:,.0f} |", flush=True)
    finally:
        stop(process)
    return rows


def _protocol_ratios(rows: list[dict]) -> None:
    by = {(r["task"], r["form"], r["concurrency"]): r for r in rows}
    for (task, form, c), r in sorted(by.items()):
        base = by.get((task, "http-json", c))
        if base is None or form == "http-json":
            continue
        print(f"{task} at concurrency {c}: {form} answers {base['bytes'] / r['bytes']:.2f}x "
              f"smaller than http-json, {r['req_s'] / base['req_s']:.2f}x its req/s, p50 "
              f"{base['p50_ms'] / r['p50_ms']:.2f}x faster")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def scrape(base: str, model: str) -> dict[str, float]:
    import httpx

    text = httpx.get(f"{base}/metrics").text
    out = {}
    for series in ("batch_size", "queue_wait_seconds", "compute_seconds"):
        for part in ("sum", "count"):
            m = re.search(rf'^torchinfer_{series}_{part}{{model="{model}"}} (\S+)$', text, re.M)
            out[f"{series}_{part}"] = float(m.group(1)) if m else 0.0
    return out


def read_stats(path: str) -> tuple[int, int, float]:
    """(batches, images, compute seconds) the peer recorded so far."""
    if not os.path.exists(path):
        return 0, 0, 0.0
    rows = [line.split() for line in open(path) if line.strip()]
    return len(rows), sum(int(r[0]) for r in rows), sum(float(r[1]) for r in rows)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, process: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}: {url}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"not ready in {timeout} s: {url}")


def start(system: str, model: str, args: argparse.Namespace, delay_ms: float, stats: str
          ) -> tuple[subprocess.Popen, str, str]:
    """(process, predict URL, readiness URL)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    me = str(Path(__file__).resolve())
    system, _, delay = system.partition("@")  # "ours@5": with max_delay_ms 5
    delay_ms = float(delay) if delay else delay_ms
    # "litserve-1t": with 1 torch/OpenMP thread; "ours-1w": one model worker; "ours-2w-1t";
    # "ours-0p": the model on threads of the server's process (--model-processes 0);
    # "ours-0d": decoding on the model's worker, in turn (--decode-threads 0)
    kind, *suffixes = system.split("-")
    threads = next((x for x in suffixes if x.endswith(("t", "omp"))), "")
    workers = next((x[:-1] for x in suffixes if x.endswith("w")), "")
    processes = next((x[:-1] for x in suffixes if x.endswith("p") and not x.endswith("omp")),
                     "")
    decoders = next((x[:-1] for x in suffixes if x.endswith("d")), "")
    env = dict(os.environ)
    if threads.endswith("omp") or (threads and kind != "ours"):  # "ours-1omp": the variable
        env["OMP_NUM_THREADS"] = threads.rstrip("tomp")
        threads = ""
    if kind == "ours":
        cmd = [sys.executable, "-m", "torchinfer", "serve", "-m", model, "--port", str(port),
               "--max-delay-ms", str(delay_ms), "--device", args.device]
        if args.batch:
            cmd += ["--max-batch-size", str(args.batch)]
        if threads:
            cmd += ["--model-threads", threads.rstrip("t")]
        if workers:
            cmd += ["--model-workers", workers]
        if processes:
            cmd += ["--model-processes", processes]
        if decoders:
            cmd += ["--decode-threads", decoders]
        url, ready = f"{base}/v1/models/{model}/predict", f"{base}/v2/health/ready"
    elif kind == "plain":
        cmd = [sys.executable, me, "--run-plain", str(port), model, stats]
        url, ready = f"{base}/predict", f"{base}/docs"
    else:
        python = PEER / "bin" / "python"
        if not python.exists():
            raise SystemExit("LitServe is not installed: python benchmarks/serve_load.py "
                             "--setup-peer (or --only ours,plain)")
        cmd = [str(python), me, "--run-litserve", str(port), model, stats,
               str(args.batch or 4), str(delay_ms / 1000)]
        url, ready = f"{base}/predict", f"{base}/health"
    # a session of its own: LitServe's worker processes are stopped with it (stop())
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    wait_up(ready, process)
    return process, url, base


class Running:
    """One system's server, up for the whole run, and what it has counted so far."""

    def __init__(self, system: str, model: str, args: argparse.Namespace, delay_ms: float):
        self.system, self.model = system, model
        self.delay_ms = float(system.partition("@")[2] or delay_ms)
        self.ours = system.startswith("ours")
        self.stats = tempfile.mktemp(prefix=f"serve-{system}-", suffix=".txt")
        self.process, self.url, self.base = start(system, model, args, delay_ms, self.stats)

    def counters(self) -> tuple[float, ...]:
        """(batches, images, compute s, queue-wait s, queue-wait count) so far."""
        if self.ours:
            m = scrape(self.base, self.model)
            return (m["batch_size_count"], m["batch_size_sum"], m["compute_seconds_sum"],
                    m["queue_wait_seconds_sum"], m["queue_wait_seconds_count"])
        batches, images, compute = read_stats(self.stats)
        return batches, images, compute, 0.0, 0.0

    def close(self) -> None:
        stop(self.process)
        if os.path.exists(self.stats):
            os.unlink(self.stats)


def bench(systems: list[str], model: str, args: argparse.Namespace, delay_ms: float
          ) -> list[dict]:
    """Every system's server up at once; at each concurrency, ``rounds`` short runs of each
    system in turn (A B C A B C ...), so that whatever else the machine does falls on all of
    them alike; a cell pools its rounds (req/s = answers / seconds, percentiles of all
    latencies)."""
    images = images_for(model)
    running = []
    try:
        for system in systems:
            running.append(Running(system, model, args, delay_ms))
        for server in running:
            asyncio.run(load(server.url, images, 4, 40))  # warm-up, not counted
        rows = []
        for c in args.concurrency:
            per_round = max(args.requests // args.rounds, 4 * c)
            pooled = {s.system: ([], 0, 0.0, [0.0] * 5) for s in running}
            for _ in range(args.rounds):
                for server in running:
                    before = server.counters()
                    lat, errors, seconds = asyncio.run(load(server.url, images, c, per_round))
                    after = server.counters()
                    lats, errs, secs, counts = pooled[server.system]
                    lats += lat
                    counts[:] = [x + b - a for x, a, b in zip(counts, before, after)]
                    pooled[server.system] = (lats, errs + errors, secs + seconds, counts)
            for server in running:
                lat, errors, seconds, (batches, imgs, compute, wait, waited) = \
                    pooled[server.system]
                total = per_round * args.rounds
                row = {"system": server.system, "delay_ms": server.delay_ms, "concurrency": c,
                       "requests": total, "req_s": len(lat) / seconds,
                       "p50_ms": percentile(lat, 50) * 1000,
                       "p90_ms": percentile(lat, 90) * 1000,
                       "p99_ms": percentile(lat, 99) * 1000, "error_rate": errors / total,
                       "mean_batch": imgs / max(batches, 1),
                       "queue_ms": wait / max(waited, 1) * 1000 if server.ours else None,
                       "compute_ms": compute / max(batches, 1) * 1000}
                rows.append(row)
                print(_line(row), flush=True)
        return rows
    finally:
        for server in running:
            server.close()


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (its workers too), SIGKILL after 30 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
    time.sleep(1)  # let workers of the group exit before the next server starts
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


HEADER = ("| system | delay ms | conc. | req/s | p50 ms | p90 ms | p99 ms | errors | mean batch "
          "| queue ms | compute ms/batch |\n|---|---|---|---|---|---|---|---|---|---|---|")


def _line(r: dict) -> str:
    queue = "-" if r["queue_ms"] is None else f"{r['queue_ms']:.1f}"
    return (f"| {r['system']} | {r['delay_ms']:g} | {r['concurrency']} | {r['req_s']:.1f} | "
            f"{r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['error_rate']:.1%} | {r['mean_batch']:.2f} | {queue} | {r['compute_ms']:.1f} |")


def setup_peer() -> None:
    """.venv-serve-peer: LitServe, with .venv's packages (torch, torchinfer) visible."""
    if not (PEER / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER)], check=True)
        site = subprocess.check_output([sys.executable, "-c", "import sysconfig; "
                                        "print(sysconfig.get_paths()['purelib'])"], text=True)
        peer_site = subprocess.check_output([str(PEER / "bin" / "python"), "-c", "import "
                                             "sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                            text=True).strip()
        # .venv's packages, and this checkout's torchinfer (.venv holds it as an editable
        # install, whose own .pth hook is not run for a directory added this way)
        Path(peer_site, "torchinfer-venv.pth").write_text(f"{site.strip()}\n{ROOT / 'src'}\n")
    subprocess.run([str(PEER / "bin" / "python"), "-m", "pip", "install", "--quiet", LITSERVE],
                   check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes_classifier", choices=sorted(TASKS))
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--requests", type=int, default=300, help="per system and "
                        "concurrency, over all rounds (at least 4 per client per round)")
    parser.add_argument("--only", default="ours,plain,litserve,litserve-1t",
                        help="systems; a suffix -Nt runs it with N torch threads (ours: "
                        "--model-threads N; the peers: OMP_NUM_THREADS=N), -Nw (ours) with N "
                        "model workers, -Np (ours) with N processes per model (0: the model "
                        "on threads of the server's process), -Nd (ours) with N decode "
                        "threads (0: the model's worker decodes), @D with a batching delay "
                        "of D ms (ours: max_delay_ms; LitServe: batch_timeout)")
    parser.add_argument("--rounds", type=int, default=5, help="short runs per system and "
                        "concurrency, interleaved A B C A B C ... and pooled")
    parser.add_argument("--delays", default=None, help="max_delay_ms values to try (ours; "
                        "LitServe gets the same batch_timeout); default: the server's")
    parser.add_argument("--batch", type=int, default=None, help="max batch size (ours and "
                        "LitServe); default: the predictor's (4 on a CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--setup-peer", action="store_true")
    parser.add_argument("--protocols", action="store_true", help="compare the OIP's forms "
                        "instead: HTTP-JSON, HTTP-binary and gRPC, for the classifier and "
                        "for segmentation of full-HD JPEGs")
    parser.add_argument("--segment-concurrency", default="1,4", help="with --protocols")
    parser.add_argument("--segment-requests", type=int, default=40, help="with --protocols: "
                        "segmentation requests per form and concurrency")
    parser.add_argument("--run-plain", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--run-litserve", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setup_peer:
        setup_peer()
        return
    if args.run_plain:
        run_plain(int(args.run_plain[0]), args.run_plain[1], args.run_plain[2])
        return
    if args.run_litserve:
        port, model, stats, batch, delay = args.run_litserve
        run_litserve(int(port), model, stats, int(batch), float(delay))
        return
    from torchinfer.serve.config import DEFAULT_MAX_DELAY_MS

    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if args.protocols:
        args.segment_concurrency = [int(c) for c in args.segment_concurrency.split(",")]
        print(f"# OIP forms, {platform.processor() or platform.machine()}, {os.cpu_count()} "
              f"CPUs, python {platform.python_version()}; {args.rounds} interleaved rounds; "
              "closed loop over loopback; each answer read into arrays")
        print(PROTOCOL_HEADER)
        rows = bench_protocols(args)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        _protocol_ratios(rows)
        return
    delays = [float(d) for d in args.delays.split(",")] if args.delays else [DEFAULT_MAX_DELAY_MS]
    print(f"# {args.model}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, python {platform.python_version()}; {args.requests} "
          f"requests per cell in {args.rounds} interleaved rounds; closed loop over loopback")
    print(HEADER)
    rows = []
    for delay in delays:
        rows += bench(args.only.split(","), args.model, args, delay)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    _ratios(rows)


def _ratios(rows: list[dict]) -> None:
    by = {(r["system"], r["delay_ms"], r["concurrency"]): r for r in rows}
    for (system, delay, c), r in sorted(by.items()):
        if not system.startswith("ours"):
            continue
        parts = []
        for peer in sorted({s for s, _, _ in by if not s.startswith("ours")}):  # noqa: C401
            other = by.get((peer, delay, c))
            if other and other["req_s"]:
                parts.append(f"{r['req_s'] / other['req_s']:.2f}x {peer}")
        tail = r["p99_ms"] / r["p50_ms"] if r["p50_ms"] else float("nan")
        print(f"{system} at concurrency {c} (delay {delay:g} ms): {', '.join(parts) or '-'} in "
              f"req/s; p99/p50 {tail:.2f}")


if __name__ == "__main__":
    main()
