"""The model's side of a served model: its predictor, decode threads and batcher.

``ModelEngine`` runs wherever the model lives: in a process of its own (the default,
process_main.py: the server's process then only speaks HTTP) or in the server's process on
threads (``model_processes=0``, local.py). ``load()`` builds the predictor as ``predict`` does
(``ti.load`` with the model's task, backend and precision), warms it up and starts the
batcher; ``decode`` turns one request's bytes into a batch of one (on ``decode_pool``);
``submit`` queues it; ``describe`` says what was loaded, as plain data.

Per-request options (those the task's manifest marks ``per_request``: ``top_k``, ``conf``,
``iou``, ``classes``, ``max_det``...) are checked by the manifest (holder.py) and given to the
predictor's ``run`` for that call only (its ``postprocess`` takes them as keywords, as a
transformers pipeline's ``_sanitize_parameters`` hands its stages theirs): the one predictor is
never changed by a request. The batcher runs requests with equal options together, so results
equal a predictor built with those options (tests/test_serve.py checks against ``predict``).

A model may have several workers (``model_workers``; by default as many as the spare cores
hold, see ``default_workers``), all calling ``Predictor.run`` at once. That is safe: ``run``
keeps its state in locals and the module is only read under ``inference_mode``. The one
mutation, the runtime's choice of backend (``predictor.prepare()``: it measures the candidates
and swaps the module for the fastest), is made in ``load``, once at start, before any worker
exists.
"""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError, TorchinferError
from ..manifests import task_manifest
from ..manifests.base import json_form
from ..results import Result
from ..runner.batches import Decoded
from ..runner.inputs import Source
from ..runner.plan import PROBE_FULL, PROBE_SPLIT
from ..runner.streamer import size_session
from ..tasks import Predictor
from .batcher import Batcher, Job, JobsHook
from .config import ModelSpec, ServeConfig
from .decoding import merge

Options = tuple[tuple[str, Any], ...]  # sorted (name, value) pairs: hashable, comparable


@dataclass(frozen=True)
class Encoded:
    """A request's image still encoded, queued as it is: with ``decode_threads`` 0 the worker
    that takes it decodes it, in turn with the model."""

    data: bytes
    name: str


class ModelEngine:
    """One loaded model and its batcher. The hooks are the batcher's (``on_batch``,
    ``on_done``, ``on_depth``): whoever holds the engine observes batches through them."""

    def __init__(self, spec: ModelSpec, config: ServeConfig, *, on_batch: JobsHook | None = None,
                 on_done: JobsHook | None = None, on_depth: Any = None,
                 own_process: bool = False):
        self.spec, self.config = spec, config
        self.own_process = own_process  # a model process (process_main), not the server's
        self.name = spec.name
        self.hooks = {"on_batch": on_batch, "on_done": on_done, "on_depth": on_depth}
        self.predictor: Predictor | None = None
        self.task: str | None = spec.task
        self.batcher: Batcher | None = None
        self.decode_pool: ThreadPoolExecutor | None = None
        self.model_threads: int | None = None
        self.worker_torch_threads: int | None = None  # torch's, in each worker (see load)
        self.model_workers = 1
        self.decode_threads: int | None = None
        self.load_seconds: float | None = None

    # --- loading --------------------------------------------------------------------------

    def load(self) -> None:
        """Build, warm up, start the decode threads and the batcher."""
        from ..api import load

        t0 = time.perf_counter()
        task = self.task or resolve_task(self.spec)
        self.task = task
        options = dict(self.spec.options)
        if self.config.max_pixels is not None:
            options.setdefault("max_pixels", self.config.max_pixels)
        predictor = load(task, self.spec.model, self.spec.weights, **options)
        # measured (or recalled) once at start, never while a request waits
        predictor.prepare()
        self.predictor = predictor
        if self.config.warmup:
            warm_up(predictor)
        decoders, self.model_threads = server_split(predictor, usable_cores())
        if self.own_process:
            decoders = decoders_beside_the_model(predictor, decoders)
        self.decode_threads = decoders if self.config.decode_threads is None \
            else self.config.decode_threads
        if self.config.model_threads is not None:
            self.model_threads = self.config.model_threads
        self.model_workers = self.config.model_workers or default_workers(
            predictor, usable_cores(), self.model_threads)
        # a runtime with a pool of its own (ONNX Runtime, OpenVINO) gets the model's threads,
        # and torch keeps to one around it; eager and TorchScript run on torch's
        self.worker_torch_threads = size_session(predictor.module, self.model_threads)
        # decoding runs torch ops too (preprocess): one thread each, beside the model's (with
        # decoding in turn, one thread draws the pictures asked for)
        self.decode_pool = ThreadPoolExecutor(
            max_workers=max(1, self.decode_threads), initializer=torch.set_num_threads,
            initargs=(1,),
            thread_name_prefix=f"torchinfer-decode-{self.name}")
        delay_ms = self.spec.max_delay_ms if self.spec.max_delay_ms is not None \
            else self.config.max_delay_ms
        self.batcher = Batcher(self.name, self._run_group, max_batch_size=self.max_batch_size,
                               max_delay_s=delay_ms / 1000, workers=self.model_workers,
                               on_start=self._start_worker, **self.hooks)
        self.load_seconds = time.perf_counter() - t0

    @property
    def decodes_in_turn(self) -> bool:
        """Whether requests are queued encoded and decoded by the worker (``Encoded``)."""
        return self.decode_threads == 0

    @property
    def max_batch_size(self) -> int:
        chosen = self.spec.max_batch_size or self.config.max_batch_size
        return chosen or (self.predictor.batch_size if self.predictor else 1)

    # --- requests -------------------------------------------------------------------------

    def decode(self, data: bytes, name: str) -> Decoded:
        """The batch of one image from its encoded bytes (a decode thread runs this); an
        InputError with the CLI record's reason when it cannot be decoded."""
        assert self.predictor is not None
        decoded = self.predictor.decode([Source(name, "memory", data=data)])
        if decoded.batch is None:
            raise InputError(name, decoded.errors.get(0, "could not be decoded"))
        return decoded

    def submit(self, decoded: Decoded | Encoded, options: Options, key: Any = None) -> Job:
        """Queue a request, decoded or (``decodes_in_turn``) not; its answer comes to
        ``job.future``."""
        assert self.batcher is not None
        job = Job(decoded, options, key)
        self.batcher.submit(job)
        return job

    def draw_png(self, data: bytes, name: str, result: Result) -> bytes:
        """The annotated picture of ``result`` on its image, as PNG (a decode thread)."""
        from ..tasks.registry import task_spec

        assert self.predictor is not None
        draw = task_spec(self.task or self.predictor.task).draw  # the task's own picture
        image = draw(self.predictor.loader.load(data, name), result)
        buffer = io.BytesIO()
        image.save(buffer, "PNG", optimize=False, compress_level=3)
        return buffer.getvalue()

    # --- the workers' side ----------------------------------------------------------------

    def _start_worker(self) -> None:
        """In each worker's own thread, once: its torch threads (torch keeps the count per
        thread once the thread has run a parallel op; before that, the first op would take
        whatever another thread set last, so run one, then set it again)."""
        threads = self.worker_torch_threads
        if threads is None:
            return
        torch.set_num_threads(threads)
        torch.softmax(torch.ones(2, 2), 1)  # this thread's first parallel op: its init
        torch.set_num_threads(threads)

    def _run_group(self, jobs: list[Job]) -> list[Result | Exception]:
        assert self.predictor is not None
        answers: list[Result | Exception] = []
        ready = []  # the jobs whose image is decoded
        for job in jobs:
            if isinstance(job.decoded, Encoded):
                try:
                    job.decoded = self.decode(job.decoded.data, job.decoded.name)
                except Exception as exc:  # this request fails; the others still run
                    answers.append(exc)
                    continue
            answers.append(None)  # type: ignore[arg-type]  # filled in below
            ready.append(job)
        if not ready:
            return answers
        predictor = self.predictor
        options: dict[str, Any] = dict(jobs[0].options)  # type: ignore[call-overload]  # pairs
        results: list[Result] = []
        for decoded in merge(predictor, [j.decoded for j in ready]):
            results.extend(predictor.run(decoded, options=options))
        ran = iter(results)
        return [next(ran) if answer is None else answer for answer in answers]

    # --- what it is -----------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What was loaded, as plain data (it crosses from a model process): task, labels,
        preprocessing, backend, device, the option defaults, batching and threads."""
        p = self.predictor
        if p is None:
            return {"task": self.task}
        pre = p.model.preprocess
        request_options = [o for o in task_manifest(self.task or p.task).options if o.per_request]
        backend = p.backend_report.to_dict() if p.backend_report is not None else \
            {"backend": "torch", "precision": "fp32"}
        return dict(
            task=self.task,
            labels=list(p.model.labels) if p.model.labels else None,
            preprocess={"resize_size": list(pre.resize_size),
                        "crop_size": list(pre.crop_size) if pre.crop_size else None,
                        "mean": list(pre.mean), "std": list(pre.std),
                        "interpolation": str(pre.interpolation)},
            backend=backend, device=str(p.device),
            # what a request may set, with this model's values and how the page shows them
            options={o.name: json_form(getattr(p, o.name, o.default)) for o in request_options},
            option_specs=[o.to_dict() for o in request_options],
            max_batch_size=self.max_batch_size,
            max_delay_ms=self.batcher.max_delay_s * 1000 if self.batcher else None,
            model_threads=self.model_threads,
            model_workers=self.model_workers,
            decode_threads=self.decode_threads,
            pipeline=p.pipeline.to_dict() if p.pipeline is not None else None,
            load_seconds=round(self.load_seconds, 3) if self.load_seconds else None)

    def close(self, timeout: float | None = None) -> None:
        """Finish decoding what arrived, answer what is queued, stop the workers."""
        if self.decode_pool is not None:  # first: what is being decoded still gets queued
            self.decode_pool.shutdown(wait=True, cancel_futures=False)
        if self.batcher is not None:
            self.batcher.close(timeout)


def resolve_task(spec: ModelSpec) -> str:
    """The task of a model given without one: a bundled model's, torchvision's name, or the
    file's own metadata (read by building it once)."""
    from ..models import load_model, model_task

    task = model_task(spec.model)
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
    one difference: a server never runs "in turn". Requests arrive, are parsed (HTTP, in the
    server's process) and decoded while the model computes, so on the CPU one worker's OpenMP
    team leaves at least one core to them: a team on every core spins against that work
    (BENCHMARKS.md: the LitServe rows with and without OMP_NUM_THREADS=1 show the same
    effect). ``default_workers`` then fills spare cores with workers of that many threads."""
    plan = predictor.pipeline
    if plan is not None and plan.overlapped:  # measured, given (decode_workers), or a GPU
        return max(1, plan.decode_workers), plan.model_threads
    if predictor.device.type != "cpu" or cores < 2:
        return max(1, plan.decode_workers if plan else 1), None
    return 1, cores - 1


def decoders_beside_the_model(predictor: Predictor, decoders: int) -> int:
    """The decode threads of a model process: on a CPU, a single one becomes none, the worker
    decoding what it takes just before running it. Measured on 2 cores (BENCHMARKS.md, ``ours``
    against ``ours-1d``): the worker decoding used less CPU per request in every run (3.2-3.8
    against 3.8-4.5 ms for the classifier) and served more requests at 16 clients in four runs
    of five, since a decode thread in the same process adds a hand-over per request and a
    second thread contending for the GIL while the second core is busy with HTTP anyway; a
    decode thread won at 4 clients in three of four (it overlaps decoding with the model when
    the queue is short). Several decode threads (more cores) and a GPU's decoders (the model
    runs on the device meanwhile) stay."""
    if predictor.device.type == "cpu" and decoders <= 1:
        return 0
    return decoders


def default_workers(predictor: Predictor, cores: int, model_threads: int | None) -> int:
    """How many batches of the model run at once: on a CPU, as many as the cores hold at
    ``model_threads`` each once one core is left to HTTP and decoding (2 cores: one worker;
    16 cores, a measured plan of 3 model threads: five). Measured on 2 cores (BENCHMARKS.md):
    a second single-thread worker there was as fast or slower in 14 of 24 interleaved cells
    (its batches are smaller and it takes the core HTTP and decoding need), so workers are
    added only where spare cores exist. Elsewhere one: a device runs one batch at a time,
    and torch's own thread setting (None) already spans the cores."""
    if predictor.device.type != "cpu" or model_threads is None:
        return 1
    return max(1, (cores - 1) // model_threads)


def usable_cores() -> int:
    from ..devices import usable_cpus

    return usable_cpus()


def warm_up(predictor: Predictor) -> None:
    """Run the bundled photographs through the model as a stream, as ``predict`` would:
    kernels and allocations warm up, and on the CPU the
    streamer measures how decoding and the model share the cores (``predictor.pipeline``)."""
    from ..assets import assets_dir

    photos = sorted((assets_dir() / "photos").glob("*.jpg"))
    batches = PROBE_FULL + PROBE_SPLIT if predictor.pipeline is None else 1
    count = batches * predictor.batch_size
    sources = [Source(p.name, "memory", data=p.read_bytes())
               for p in (photos * (count // max(1, len(photos)) + 1))[:count]]
    for _ in predictor.stream_sources(sources):
        pass
