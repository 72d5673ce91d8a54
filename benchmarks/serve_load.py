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


async def load(url: str, images: list[bytes], concurrency: int, total: int
               ) -> tuple[list[float], int, float]:
    """(latencies of the answered requests, errors, seconds) for ``total`` requests from
    ``concurrency`` clients."""
    import httpx

    latencies: list[float] = []
    errors = 0
    sent = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        async def worker() -> None:
            nonlocal sent, errors
            while sent < total:
                i = sent
                sent += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, files={"file": (f"{i}.png", images[i % len(images)],
                                                               "image/png")})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - start


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
