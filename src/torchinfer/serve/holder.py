"""One served model: its predictor, its batcher, its request options and its description.

``ModelHolder`` is the unit a server (this package's FastAPI app, or a Ray Serve replica)
needs: ``load()`` builds the predictor as ``predict`` does (``ti.load`` with the model's task,
backend and precision), warms it up and starts its worker; ``predict_bytes`` decodes one
encoded image on a decode thread and answers through the batcher; ``close()`` drains.

Per-request options (``top_k``, ``conf``, ``iou``, ``classes``, ``max_det``) are attributes
the predictor's postprocess reads. Each distinct set runs on a *view* of the predictor: a
shallow copy with those attributes set, sharing the model, its weights and its runtime. The
worker runs requests with equal options together, so results equal a predictor built with
those options (tests/test_serve.py checks against ``predict``).

A model may have several workers (``model_workers``; by default as many as the spare cores
hold, see ``default_workers``), all calling ``Predictor.run`` at once. That is safe: ``run`` keeps its state in
locals, the module is only read under ``inference_mode``, and a view shares the module rather
than copying state. The one mutation, the runtime's one-shot ``before_first_batch`` hook (it
swaps the module for the fastest backend), is run by one worker alone, on the original
predictor, before any view exists (``_run_group``).
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from ..errors import InputError, OptionError, TorchinferError
from ..results import Result
from ..runner.batches import Decoded
from ..runner.inputs import Source
from ..runner.plan import PROBE_FULL, PROBE_SPLIT
from ..tasks import Predictor
from .batcher import Batcher, Job, QueueFull
from .config import REQUEST_OPTIONS, ModelSpec, ServeConfig
from .decoding import merge, sniff_image
from .metrics import ServerMetrics

MAX_VIEWS = 64  # distinct option sets kept ready per model (least recently used dropped)


class ModelHolder:
    """A model being served. ``state`` is "loading", "ready", "failed" or "closed"."""

    def __init__(self, spec: ModelSpec, config: ServeConfig, metrics: ServerMetrics | None = None):
        self.spec, self.config, self.metrics = spec, config, metrics
        self.name = spec.name
        self.state = "loading"
        self.error: str | None = None
        self.predictor: Predictor | None = None
        self.task: str | None = spec.task
        self.batcher: Batcher | None = None
        self.decode_pool: ThreadPoolExecutor | None = None
        self.model_threads: int | None = None
        self.model_workers = 1
        self.decode_threads: int | None = None
        self.load_seconds: float | None = None
        self._views: OrderedDict[tuple[tuple[str, Any], ...], Predictor] = OrderedDict()
        self._admitted = 0
        self._lock = threading.Lock()
        self._views_lock = threading.Lock()
        self._first_batch_lock = threading.Lock()
        # set once no one-shot first-batch hook is pending or running (see _first_batch)
        self._first_batch_done = threading.Event()

    # --- loading --------------------------------------------------------------------------

    def load(self) -> None:
        """Build, warm up and start; on a failure ``state`` is "failed" and ``error`` says
        why (a TorchinferError is raised as well)."""
        t0 = time.perf_counter()
        try:
            self._load()
        except Exception as exc:
            self.state, self.error = "failed", str(exc) or type(exc).__name__
            raise
        self.load_seconds = time.perf_counter() - t0
        self.state = "ready"

    def _load(self) -> None:
        from ..api import load

        task = self.task or resolve_task(self.spec)
        self.task = task
        options = dict(self.spec.options)
        if self.config.max_pixels is not None:
            options.setdefault("max_pixels", self.config.max_pixels)
        predictor = load(task, self.spec.model, self.spec.weights, **options)
        self.predictor = predictor
        if self.config.warmup:
            warm_up(predictor)
        if predictor.before_first_batch is None:
            self._first_batch_done.set()
        decoders, self.model_threads = server_split(predictor, usable_cores())
        decoders = self.config.decode_threads or decoders
        self.decode_threads = decoders
        if self.config.model_threads is not None:
            self.model_threads = self.config.model_threads
        self.model_workers = self.config.model_workers or default_workers(
            predictor, usable_cores(), self.model_threads)
        self.decode_pool = ThreadPoolExecutor(
            max_workers=decoders, initializer=torch.set_num_threads, initargs=(1,),
            thread_name_prefix=f"torchinfer-decode-{self.name}")
        delay_ms = self.spec.max_delay_ms if self.spec.max_delay_ms is not None \
            else self.config.max_delay_ms
        self.batcher = Batcher(self.name, self._run_group,
                               max_batch_size=self.max_batch_size, max_delay_s=delay_ms / 1000,
                               on_batch=self._observe_batch, workers=self.model_workers,
                               on_start=self._start_worker)

    @property
    def max_batch_size(self) -> int:
        chosen = self.spec.max_batch_size or self.config.max_batch_size
        return chosen or (self.predictor.batch_size if self.predictor else 1)

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    # --- requests -------------------------------------------------------------------------

    def request_options(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The typed, checked per-request options of ``raw`` (text from a query or form, or
        JSON values); an OptionError names a wrong one."""
        allowed = REQUEST_OPTIONS.get(self.task or "", ())
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in allowed:
                takes = ", ".join(allowed) if allowed else "no options"
                raise OptionError(f"unknown option {key!r} for {self.task} model {self.name} "
                                  f"(it takes {takes})")
            out[key] = _typed(key, value)
        labels = self.predictor.model.labels if self.predictor else None
        if "conf" in out and not 0.0 <= out["conf"] <= 1.0:
            raise OptionError(f"conf must be in [0, 1], got {out['conf']}")
        if "iou" in out and not 0.0 <= out["iou"] <= 1.0:
            raise OptionError(f"iou must be in [0, 1], got {out['iou']}")
        for key in ("max_det", "top_k"):
            if key in out and out[key] < 1:
                raise OptionError(f"{key} must be >= 1, got {out[key]}")
        if out.get("classes") is not None and labels:
            unknown = sorted({c for c in out["classes"] if not 0 <= c < len(labels)})
            if unknown:
                raise OptionError(f"classes {unknown} are not among {self.name}'s "
                                  f"{len(labels)} classes (ids 0-{len(labels) - 1})")
        return out

    def admit(self) -> None:
        """Count a request in (QueueFull when ``max_queue`` are already in); pair with
        ``release``."""
        with self._lock:
            if self._admitted >= self.config.max_queue:
                raise QueueFull(f"model {self.name} has {self._admitted} requests in progress "
                                f"(max_queue {self.config.max_queue}): retry later")
            self._admitted += 1

    def release(self) -> None:
        with self._lock:
            self._admitted -= 1

    def decode(self, data: bytes, name: str) -> Decoded:
        """The batch of one image from its encoded bytes (a decode thread runs this)."""
        assert self.predictor is not None
        sniff_image(data)
        return self.predictor.decode([Source(name, "memory", data=data)])

    async def predict_bytes(self, data: bytes, name: str, options: Mapping[str, Any],
                            timeout_s: float | None = None) -> tuple[Result, Job]:
        """One image's result and its job (queue wait, compute, batch size), through the
        decode pool and the batcher. Raises InputError for an image that cannot be decoded
        (its ``reason`` is the CLI record's), QueueFull, TimeoutError."""
        if self.batcher is None or self.decode_pool is None:
            raise TorchinferError(f"model {self.name} is {self.state}")
        loop = asyncio.get_running_loop()
        decoded = await loop.run_in_executor(self.decode_pool, self.decode, data, name)
        if decoded.batch is None:
            raise InputError(name, decoded.errors.get(0, "could not be decoded"))
        job = Job(decoded, tuple(sorted(options.items())))
        future = self.batcher.submit(job)
        result = await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
        return result, job

    async def draw_png(self, data: bytes, name: str, result: Result) -> bytes:
        """The annotated picture of ``result`` on its image, as PNG (on a decode thread)."""
        def draw() -> bytes:
            from ..draw import visualise

            assert self.predictor is not None
            image = visualise(result, self.predictor.loader.load(data, name))
            buffer = io.BytesIO()
            image.save(buffer, "PNG", optimize=False, compress_level=3)
            return buffer.getvalue()

        assert self.decode_pool is not None
        return await asyncio.get_running_loop().run_in_executor(self.decode_pool, draw)

    # --- the worker's side ----------------------------------------------------------------

    def view(self, options: tuple[tuple[str, Any], ...]) -> Predictor:
        """The predictor with ``options`` set (a shallow copy sharing the model)."""
        assert self.predictor is not None
        if not options:
            return self.predictor
        with self._views_lock:  # the workers share the views
            view = self._views.get(options)
            if view is None:
                view = object.__new__(type(self.predictor))
                view.__dict__.update(self.predictor.__dict__)
                for key, value in options:
                    setattr(view, key, list(value) if key == "classes" else value)
                self._views[options] = view
                if len(self._views) > MAX_VIEWS:
                    self._views.popitem(last=False)
            else:
                self._views.move_to_end(options)
            return view

    def _start_worker(self) -> None:
        """In each worker's own thread, once: its torch threads (torch keeps the count per
        thread once the thread has run a parallel op; before that, the first op would take
        whatever another thread set last, so run one, then set it again)."""
        if self.model_threads is None:
            return
        torch.set_num_threads(self.model_threads)
        torch.softmax(torch.ones(2, 2), 1)  # this thread's first parallel op: its init
        torch.set_num_threads(self.model_threads)

    def _first_batch(self, jobs: list[Job]) -> None:
        """Without a warm-up, the runtime's first-batch hook (the "auto" backend's timing,
        which swaps the predictor's module while it times the candidates) is still pending:
        one worker runs it, on the original predictor (its results are not used), while the
        others wait until it is over; views made afterwards copy the chosen module."""
        assert self.predictor is not None
        with self._first_batch_lock:
            if self._first_batch_done.is_set():
                return
            try:
                if self.predictor.before_first_batch is not None:
                    with self._views_lock:
                        self._views.clear()
                    self.predictor.run(merge(self.predictor, [jobs[0].decoded])[0])
            finally:
                self._first_batch_done.set()

    def _run_group(self, jobs: list[Job]) -> list[Result]:
        assert self.predictor is not None
        if not self._first_batch_done.is_set():
            self._first_batch(jobs)
        predictor = self.view(jobs[0].options)  # type: ignore[arg-type]  # ours: a tuple
        results: list[Result] = []
        t0 = time.perf_counter()
        for decoded in merge(predictor, [j.decoded for j in jobs]):
            results.extend(predictor.run(decoded))
        if self.metrics is not None:
            self.metrics.compute.observe(time.perf_counter() - t0, model=self.name)
        return results

    def _observe_batch(self, jobs: list[Job]) -> None:
        if self.metrics is None:
            return
        self.metrics.batch_size.observe(len(jobs), model=self.name)
        for job in jobs:
            self.metrics.queue_wait.observe(job.queue_wait_s, model=self.name)

    # --- what it is -----------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/models`` shows: task, labels, preprocessing, backend, batching."""
        info: dict[str, Any] = {"name": self.name, "model": self.spec.model, "task": self.task,
                                "state": self.state, "ready": self.ready}
        if self.error:
            info["error"] = self.error
        p = self.predictor
        if p is None:
            return info
        pre = p.model.preprocess
        backend = p.backend_report.to_dict() if p.backend_report is not None else \
            {"backend": "torch", "precision": "fp32"}
        info.update(
            labels=list(p.model.labels) if p.model.labels else None,
            preprocess={"resize_size": list(pre.resize_size),
                        "crop_size": list(pre.crop_size) if pre.crop_size else None,
                        "mean": list(pre.mean), "std": list(pre.std),
                        "interpolation": str(pre.interpolation)},
            backend=backend, device=str(p.device),
            options={k: getattr(p, k) for k in REQUEST_OPTIONS.get(self.task or "", ())},
            max_batch_size=self.max_batch_size,
            max_delay_ms=self.batcher.max_delay_s * 1000 if self.batcher else None,
            model_threads=self.model_threads,
            model_workers=self.model_workers,
            decode_threads=self.decode_threads,
            pipeline=p.pipeline.to_dict() if p.pipeline is not None else None,
            load_seconds=round(self.load_seconds, 3) if self.load_seconds else None)
        return info

    def close(self, timeout: float | None = None) -> None:
        """Answer what is queued, stop the worker and the decode threads."""
        if self.batcher is not None:
            self.batcher.close(timeout)
        if self.decode_pool is not None:
            self.decode_pool.shutdown(wait=True, cancel_futures=False)
        self.state = "closed" if self.state != "failed" else self.state


def resolve_task(spec: ModelSpec) -> str:
    """The task of a model given without one: a bundled model's, torchvision's name, or the
    file's own metadata (read by building it once)."""
    from ..models import load_model, torchvision_task
    from ..models.bundled import BUNDLED

    task = BUNDLED.get(spec.model) or torchvision_task(spec.model)
    if task is None:
        options = {k: v for k, v in spec.options.items()
                   if k in ("trust_pickle", "trust_code", "num_classes", "strict", "model_kwargs")}
        kwargs = options.pop("model_kwargs", None) or {}
        task = load_model(spec.model, spec.weights, **options, **kwargs).task
    if task is None:
        raise TorchinferError(f"{spec.model}: its task is not recorded in the file; give it as "
                              f"-m TASK:{spec.model} (classify, segment or detect)")
    return task


def server_split(predictor: Predictor, cores: int) -> tuple[int, int | None]:
    """(decode threads, model threads; None: torch's setting) for serving ``predictor``.

    As predict shares the cores (runner.plan; on the CPU measured by the warm-up stream), with
    one difference: a server never runs "in turn". Requests arrive, are parsed (HTTP, on the
    event loop) and decoded while the model computes, so on the CPU one worker's OpenMP team
    leaves at least one core to them: a team on every core spins against that work
    (BENCHMARKS.md: the LitServe rows with and without OMP_NUM_THREADS=1 show the same
    effect). ``default_workers`` then fills spare cores with workers of that many threads."""
    plan = predictor.pipeline
    if plan is not None and plan.overlapped:  # measured, given (decode_workers), or a GPU
        return max(1, plan.decode_workers), plan.model_threads
    if predictor.device.type != "cpu" or cores < 2:
        return max(1, plan.decode_workers if plan else 1), None
    return 1, cores - 1


def default_workers(predictor: Predictor, cores: int, model_threads: int | None) -> int:
    """How many batches of the model run at once: on a CPU, as many as the cores hold at
    ``model_threads`` each once one core is left to HTTP and decoding (2 cores: one worker;
    16 cores, a measured plan of 3 model threads: five). Measured on 2 cores (BENCHMARKS.md):
    a second single-thread worker there was as fast or slower in 14 of 24 interleaved cells
    (its batches are smaller and it takes the core the event loop and decoding need), so
    workers are added only where spare cores exist. Elsewhere one: a device runs one batch at
    a time (one worker per device would come next), and torch's own thread setting (None)
    already spans the cores."""
    if predictor.device.type != "cpu" or model_threads is None:
        return 1
    return max(1, (cores - 1) // model_threads)


def usable_cores() -> int:
    from ..devices import usable_cpus

    return usable_cpus()


def warm_up(predictor: Predictor) -> None:
    """Run the bundled photographs through the model as a stream, as ``predict`` would:
    kernels and allocations warm up, a runtime's "auto" choice is made, and on the CPU the
    streamer measures how decoding and the model share the cores (``predictor.pipeline``)."""
    from ..assets import assets_dir

    photos = sorted((assets_dir() / "photos").glob("*.jpg"))
    batches = PROBE_FULL + PROBE_SPLIT if predictor.pipeline is None else 1
    count = batches * predictor.batch_size
    sources = [Source(p.name, "memory", data=p.read_bytes())
               for p in (photos * (count // max(1, len(photos)) + 1))[:count]]
    for _ in predictor.stream_sources(sources):
        pass


def _typed(key: str, value: Any) -> Any:
    try:
        if key in ("top_k", "max_det"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if key in ("conf", "iou"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if key == "classes":
            if value is None or value == "":
                return None
            items = value if isinstance(value, (list, tuple)) else str(value).split(",")
            return tuple(int(v) for v in items)
    except (TypeError, ValueError):
        raise OptionError(f"option {key}={value!r} is not a valid "
                          f"{'list of class ids' if key == 'classes' else 'number'}") from None
    return value
