"""A batch job on Ray Data that writes what ``torchinfer predict`` writes.

``RayPredictor`` stands where a local predictor stands in ``runner.run.run_to_dir``: the run
(output folder, ``run.json`` fingerprint, ``--resume``, the JSONL writer, failures as records,
``summary.json``, COCO results, pictures) is the local one, line for line; only the stream of
(source, result) pairs comes from the cluster:

    driver: the sources, expanded as a local run expands them, cut into model batches
      -> Ray tasks: read each batch's files as bytes          (``reading.read_rows``)
      -> [Ray tasks: decode + preprocess]                      (``reading.decode_rows``)
      -> actor pool: one predictor per worker, decode? + run  (``actors.PredictorActor``)
      -> driver: the results in input order, written by the run as they arrive.

Batches are cut on the driver exactly as the local streamer cuts them (``batch_size``
consecutive inputs), so every image goes through the model in the same batch as in a local
run and the answers are the same numbers.
"""

from __future__ import annotations

import math
import os
import pickle
import queue
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import OptionError, TorchinferError
from ..results import Result
from ..runner.inputs import Source
from ..runner.run import RunSummary, is_run_output, run_to_dir
from ..storage.mirror import shown, staged
from ..storage.uris import is_uri
from .actors import LoadSpec, PredictorActor, sources_of
from .attempts import retried, start_ledger
from .cluster import WorkerPlan, cluster_resources, plan_workers, quiet_ray_data_logs, ray_session
from .compat import actor_pool_args, import_ray, map_batches, restart_args, spread_over_nodes
from .reading import decode_rows, read_rows, without_data

# Options that change how fast a job runs, not its answers (as PredictOptions._SPEED_ONLY):
# they stay out of the run's fingerprint, so a job resumes a local run and the other way round.
SPEED_ONLY = frozenset({"device", "batch_size", "decode_workers", "verify_backend"})
DECODE_MODES = ("auto", "actor", "tasks")
# A worker that dies (killed, out of memory, its node lost) is not restarted by Ray: its actor
# would keep the CPUs the plan gave it, on a node that may be gone, and its batches would wait
# for it (ray-project/ray#44687: a pool that holds every CPU starves the reading). The job
# instead starts again from its first unanswered batch, with a pool planned for the cluster
# as it is now, this many times; then it fails (a batch that kills every worker it meets).
# From Ray 2.64, which drops the remote arguments that say so (compat.restart_args), Ray
# restarts workers again and the stall timeout is what ends a job that cannot go on.
MAX_ROUNDS = 4


class RayJobInfo:
    """What ``summary.json`` says about how the job ran (where a local run says how decoding
    and the model shared the cores)."""

    def __init__(self, **info: Any):
        self.info = info

    def to_dict(self) -> dict[str, Any]:
        return dict(self.info)


class RayPredictor:
    """A predictor for ``run_to_dir`` whose batches run on Ray Data.

    ``task``, ``model``, ``weights`` and ``options``: as ``torchinfer.api.load`` takes them;
    each worker calls it. The driver builds one CPU predictor too (without verifying a backend):
    a wrong option or model fails here, in a moment, before any cluster work, and the run's
    fingerprint names the model and weights exactly as a local run's does.

    ``address``: see ``cluster.ray_session`` (None: a private local Ray). ``workers`` and
    ``gpus_per_worker``: the actor pool (``cluster.plan_workers``). ``decode``: "actor" (the
    workers decode their batches: no decoded pixels cross the object store), "tasks" (Ray
    tasks decode, the workers only run the model: for GPU workers), "auto" (tasks with GPUs,
    else actor). ``images_per_task``: about how many images one read task or worker call
    handles. ``start_timeout_s``: how long to wait for all the workers to start before failing
    (a cluster without the resources); ``stall_timeout_s``: how long without a single result
    before the job is declared stuck and fails (never a hang).
    """

    def __init__(self, task: str, model: str | os.PathLike, weights: str | os.PathLike | None = None,
                 *, address: str | None = None, workers: int | None = None,
                 gpus_per_worker: float = 0.0, decode: str = "auto", images_per_task: int = 64,
                 start_timeout_s: float = 600.0, stall_timeout_s: float = 900.0,
                 num_cpus: int | None = None, **options: Any):
        if not isinstance(model, (str, os.PathLike)):
            raise OptionError("--engine ray builds the model on each worker from its name or "
                              f"file: pass a name or path, not a {type(model).__name__}")
        if decode not in DECODE_MODES:
            raise OptionError(f"decode must be one of {', '.join(DECODE_MODES)}, got {decode!r}")
        if images_per_task < 1:
            raise OptionError(f"images_per_task must be >= 1, got {images_per_task}")
        if workers is not None and workers < 1:
            raise OptionError(f"--workers must be >= 1, got {workers}")
        if gpus_per_worker < 0:
            raise OptionError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker:g}")
        if str(options.get("device", "auto")).startswith("cuda") and not gpus_per_worker:
            raise OptionError("--device cuda on Ray needs GPUs for the workers: pass "
                              "--gpus-per-worker (Ray hides the GPUs from a worker without)")
        from ..api import load

        import_ray()  # not installed: say so before building anything
        options = {k: _absolute(v) if k == "labels" else v for k, v in options.items()}
        model = str(_absolute(model))
        weights = None if weights is None else str(_absolute(weights))
        here = {k: v for k, v in options.items()
                if k not in ("device", "backend", "precision", "verify_backend")}
        # checked here (a remembered verdict after the first time), so that every worker
        # decodes JPEGs the way this check decided rather than each assuming the reduction is
        # fine; the driver never runs the model, so its backend is not measured
        self.local = load(task, model, weights, device="cpu", backend="torch", precision="fp32",
                          verify_backend=options.get("verify_backend", True), **here)
        self.local.prepare()
        self.task = task
        self.batch_size = int(options.get("batch_size") or
                              (32 if gpus_per_worker else self.local.batch_size))
        self.spec = LoadSpec(task, model, weights,
                             {**options, "batch_size": self.batch_size,
                              "exact_decode": not self.local.reduced_decode})
        self.address, self.workers, self.gpus_per_worker = address, workers, gpus_per_worker
        self.decode_mode = decode if decode != "auto" else ("tasks" if gpus_per_worker else "actor")
        self.images_per_task = images_per_task
        self.start_timeout_s, self.stall_timeout_s = start_timeout_s, stall_timeout_s
        self.num_cpus = num_cpus
        self.plan: WorkerPlan | None = None
        # what run_to_dir and the CLI read of a predictor: the model's name and weights (the
        # fingerprint), the loader (redrawing a file for --save-vis), how the job ran
        self.model, self.loader = self.local.model, self.local.loader
        self.job_info: RayJobInfo | None = None  # once the job starts
        self.backend_report: Any = None
        self.decode_report = self.local.decode_report

    @property
    def pipeline(self) -> RayJobInfo | None:
        """How the work was laid out, which ``run_to_dir`` asks every predictor for
        (``summary.json``'s "pipeline"): here, how the job ran."""
        return self.job_info

    @property
    def device(self) -> str:
        kind = "cuda" if self.gpus_per_worker else "cpu"
        return f"ray ({self.plan.describe()})" if self.plan else f"ray ({kind} workers)"

    def fingerprint(self) -> dict[str, Any]:
        """The options that decide the answers, as a local ``torchinfer predict`` records them
        (its ``PredictOptions.fingerprint``): a job and a local run resume each other."""
        return {k: _plain(v) for k, v in sorted(self.spec.options.items())
                if k not in SPEED_ONLY and v is not None}

    def stream_sources(self, sources: Iterable[Source], *, batch_size: int | None = None
                       ) -> Iterator[tuple[Source, Result]]:
        """(source, result) for each source, in order, computed on Ray."""
        size = batch_size or self.batch_size
        batches = _batches(sources, size)
        if not batches:
            return
        with ray_session(self.address, num_cpus=self.num_cpus) as ray, quiet_ray_data_logs():
            self.plan = plan_workers(*cluster_resources(ray), self.workers, self.gpus_per_worker)
            nodes = _alive_nodes(ray)
            self.job_info = job = RayJobInfo(engine="ray", address=self.address or "local",
                                             decode=self.decode_mode, batch_size=size,
                                             nodes=nodes, **self.plan.to_dict())
            ledger = start_ledger(ray)
            expected, rounds = 0, 1
            seen: set[str] = set()
            sizes: dict[int, int] = {}
            while expected < len(batches):
                rows = self._dataset(ray, batches, expected, ledger)
                try:
                    for row in _with_stall_timeout(rows, self.stall_timeout_s, self.plan):
                        if row["worker"] not in seen:
                            seen.add(row["worker"])
                            job.info["workers_used"] = len(seen)
                        if int(row["seq"]) != expected:  # preserve_order: cannot happen
                            raise TorchinferError(f"Ray returned batch {row['seq']} where "
                                                  f"batch {expected} was due: the job's "
                                                  "order is lost")
                        expected += 1
                        sources_in = sources_of(row["sources"])
                        results = pickle.loads(row["results"])
                        sizes[int(row["seq"])] = len(sources_in)
                        yield from zip(sources_in, results, strict=True)
                except WorkersLost as lost:
                    if rounds >= MAX_ROUNDS:
                        raise TorchinferError(f"the Ray job lost workers {rounds} times, the "
                                              f"last: {lost} (every finished input is in the "
                                              "output folder; --resume runs the rest)") from None
                    rounds += 1
                    # the cluster as it is now: a lost node's CPUs are gone
                    self.plan = plan_workers(*cluster_resources(ray), self.workers,
                                             self.gpus_per_worker)
                    job.info.update(rounds=rounds, workers_after_loss=self.plan.workers,
                                    nodes_lost=max(0, nodes - _alive_nodes(ray)))
            # every batch answered once; those started more than once were retried
            job.info.update(retried(ray.get(ledger.read.remote()), sizes))

    def _dataset(self, ray: Any, batches: list[bytes], first: int, ledger: Any
                 ) -> Iterator[dict[str, Any]]:
        """The rows of the batches from ``first`` on, answered by a new pool of workers."""
        assert self.plan is not None
        rows_per_block = max(1, self.images_per_task // self.batch_size)
        items = [{"seq": i, "sources": batches[i]} for i in range(first, len(batches))]
        # blocks of about images_per_task images, and at least two per worker while there are
        # rows enough: fewer would leave workers idle on a small job
        blocks = max(math.ceil(len(items) / rows_per_block), min(len(items), 2 * self.plan.workers))
        ds = ray.data.from_items(items, override_num_blocks=blocks)
        rows_per_block = math.ceil(len(items) / blocks)  # a worker call takes one block
        del items
        context = ds.context  # this dataset's own copy: nothing process-wide changes
        context.execution_options.preserve_order = True
        # a fixed pool waits for all its workers, else it starts on one and may stay there
        # (ray-project/ray#60124); a cluster without room for them fails after the wait
        context.wait_for_min_actors_s = int(self.start_timeout_s)
        spread_over_nodes(context)
        context.enable_progress_bars = False  # the run shows its own progress
        context.print_on_execution_start = False
        ds = ds.map_batches(read_rows, batch_size=None, fn_kwargs={"cwd": os.getcwd()})
        if self.decode_mode == "tasks":
            ds = ds.map_batches(decode_rows, batch_size=None, fn_kwargs={"spec": self.spec})
        gpus = self.plan.gpus_per_worker or None
        ds = map_batches(ds, PredictorActor,
                         fn_constructor_kwargs={"spec": self.spec, "ledger": ledger},
                         batch_size=rows_per_block, num_cpus=self.plan.cpus_per_worker,
                         num_gpus=gpus, **restart_args(0),
                         **actor_pool_args(self.plan.workers))
        return iter(ds.iter_rows())


def _batches(sources: Iterable[Source], size: int) -> list[bytes]:
    """The sources in model batches of ``size``, each pickled without in-memory data: what the
    job's rows carry (file paths and names; a few hundred bytes per input)."""
    batches, batch = [], []
    for source in sources:
        if source.kind == "frame" or (source.kind == "unreadable" and source.frame is not None):
            raise TorchinferError(f"{source.path}: videos run with --engine local (their frames "
                                  "are decoded where the video is read)")
        batch.append(source if source.kind in ("memory", "stdin") else without_data(source))
        if len(batch) == size:
            batches.append(pickle.dumps(batch))
            batch = []
    if batch:
        batches.append(pickle.dumps(batch))
    return batches


def _with_stall_timeout(rows: Iterator[dict[str, Any]], timeout_s: float,
                        plan: WorkerPlan) -> Iterator[dict[str, Any]]:
    """``rows``, pulled on a helper thread, failing the job when none comes for ``timeout_s``
    (a worker that died and was not replaced must not hang the job: ray-project/ray#62746),
    and turning Ray's own failures into one-line errors. Ctrl-C reaches the caller at once."""
    ray = import_ray()
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def hand_over(item: tuple[str, Any]) -> bool:
        while not stop.is_set():  # the caller has gone: drop it
            try:
                handoff.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            for row in rows:
                if not hand_over(("row", row)):
                    return
            hand_over(("end", None))
        except BaseException as exc:  # Ray's errors, in this thread: hand them over
            hand_over(("error", exc))

    thread = threading.Thread(target=pump, name="torchinfer-ray-results", daemon=True)
    thread.start()
    try:
        while True:
            try:
                kind, value = handoff.get(timeout=timeout_s)
            except queue.Empty:
                raise TorchinferError(
                    f"the Ray job gave no result for {timeout_s:g} s ({plan.describe()}): "
                    "stuck (a worker lost and not replaced, or no CPU left to read files); "
                    "every finished input is in the output folder, --resume runs the rest"
                ) from None
            if kind == "end":
                return
            if kind == "error":
                if isinstance(value, (TorchinferError, KeyboardInterrupt)):
                    raise value
                if _lost_workers(value, ray):
                    raise WorkersLost(_last_line(value)) from None
                if isinstance(value, ray.exceptions.GetTimeoutError):
                    raise TorchinferError(f"the Ray cluster could not start {plan.describe()}: "
                                          f"{_last_line(value)}") from None
                raise TorchinferError(f"the Ray job failed: {_last_line(value)} (every "
                                      "finished input is in the output folder; --resume runs "
                                      "the rest)") from value
            yield value
    finally:
        stop.set()
        # a pump still waiting inside Ray ends when Ray is shut down or its next row comes
        thread.join(timeout=1.0)


class WorkersLost(TorchinferError):
    """A worker of the job died (killed, out of memory, its node lost): the job goes on from
    its first unanswered batch with a new pool."""


def _lost_workers(exc: BaseException, ray: Any) -> bool:
    """Whether Ray's error (or one it wraps) says a worker or its node died, or an object they
    held was lost."""
    lost = tuple(getattr(ray.exceptions, name) for name in (
        "RayActorError", "ActorDiedError", "ActorUnavailableError", "NodeDiedError",
        "WorkerCrashedError", "ObjectLostError", "OwnerDiedError")
        if hasattr(ray.exceptions, name))
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        error = todo.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, lost):
            return True
        todo += [error.__cause__, error.__context__, getattr(error, "cause", None)]
    return False


def _alive_nodes(ray: Any) -> int:
    return sum(1 for node in ray.nodes() if node.get("Alive"))


def _last_line(exc: BaseException) -> str:
    """Ray's errors end with what went wrong; their first lines are its traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _absolute(value: Any) -> Any:
    """A path that exists, made absolute: the workers run in other folders (and on other
    machines, where it must exist at the same place). Names ("resnet18") pass unchanged."""
    if isinstance(value, (str, os.PathLike)) and os.path.exists(value):
        return os.path.abspath(value)
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def predict(sources: str | os.PathLike | Iterable[str | os.PathLike], task: str,
            model: str | os.PathLike, weights: str | os.PathLike | None = None, *,
            out: str | os.PathLike, address: str | None = None, workers: int | None = None,
            gpus_per_worker: float = 0.0, resume: bool = False, exist_ok: bool = False,
            save_vis: bool = False, save_masks: bool = False, parquet: bool = False,
            decode: str = "auto", on_result: Any = None, num_cpus: int | None = None,
            stall_timeout_s: float = 900.0, **options: Any) -> RunSummary:
    """Run ``task`` with ``model`` over ``sources`` on Ray Data; write what ``torchinfer
    predict`` writes into ``out`` (``predictions.jsonl``, ``summary.json``, ``run.json``;
    ``predictions.parquet`` with ``parquet``) and return the run's summary.

    ``sources``: paths, folders, globs and ``.txt`` lists, expanded on this machine as a local
    run expands them (the workers read the files by the same paths: on a cluster, a shared
    filesystem, or ``s3://``-style URIs that pyarrow reads, each worker reading its own).
    ``out`` may be such a URI too (``storage.mirror.staged``). ``options``: those of
    ``torchinfer.api.load`` (``batch_size``, ``top_k``, ``labels``, ``device``...). Resuming
    (``resume``) and refusing a used folder work as in a local run, across the two: a job
    resumes a local run's folder and the other way round. See ``RayPredictor`` for
    ``address``, ``workers``, ``gpus_per_worker`` and ``decode``.
    """
    predictor = RayPredictor(task, model, weights, address=address, workers=workers,
                             gpus_per_worker=gpus_per_worker, decode=decode, num_cpus=num_cpus,
                             stall_timeout_s=stall_timeout_s, **options)
    named = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    run_info = {"task": task, "model": str(model),
                "weights": None if weights is None else str(weights), "engine": "ray"}
    where = os.fspath(out)
    # a URI: a local copy of the run's own files, uploaded as the run goes
    with staged(where, is_run_output) as local:
        summary = run_to_dir(predictor, [os.fspath(s) for s in named], local,
                             on_result=on_result, run_info=run_info, save_vis=save_vis,
                             save_masks=save_masks, resume=resume, exist_ok=exist_ok,
                             fingerprint=predictor.fingerprint(),
                             named_as=where if is_uri(where) else None)
        if parquet:
            from .parquet import write_parquet

            summary.outputs["parquet"] = shown(where, local,
                                               write_parquet(local / "predictions.jsonl"))
    return summary
