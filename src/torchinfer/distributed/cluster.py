"""Where a job runs: a Ray cluster named by address, the one this process is already connected
to, or a private local Ray started for the job and stopped after it; and how its CPUs are
shared between the model workers and the tasks that read files.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import OptionError, TorchinferError, first_line
from .compat import import_ray

# A local Ray's object store: Ray's default is 30 % of RAM, shared memory that a small machine
# (or a container with a small /dev/shm) cannot spare; a batch job keeps only a few batches of
# encoded images and results in flight, so this is plenty, and more spills to disk.
OBJECT_STORE_FRACTION = 0.1
OBJECT_STORE_MIN = 128 * 1024**2
OBJECT_STORE_MAX = 2 * 1024**3


def local_object_store_bytes(total_memory: int | None = None) -> int:
    """The object store of a local Ray started for a job: 10 % of RAM, 128 MiB to 2 GiB."""
    if total_memory is None:
        total_memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(min(OBJECT_STORE_MAX, max(OBJECT_STORE_MIN, total_memory * OBJECT_STORE_FRACTION)))


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None,
                object_store_bytes: int | None = None) -> Iterator[Any]:
    """Ray, connected for the duration of the block.

    Already connected (``ray.init`` called by the program): that connection, left open.
    ``address`` ("auto", "ray://host:10001", "host:6379"): that cluster; the connection is
    closed afterwards, the cluster stays. None: a private local Ray for this job, on this
    machine's cores (or ``num_cpus``), dashboard off, bound to the loopback interface, its
    object store capped (``local_object_store_bytes``), stopped afterwards. A ``RAY_ADDRESS``
    in the environment is not used unless ``address`` says "auto": a job never lands on a
    cluster nobody named.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        if address is None:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     object_store_memory=object_store_bytes or local_object_store_bytes(),
                     _node_ip_address="127.0.0.1", logging_level=logging.WARNING,
                     configure_logging=True)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise TorchinferError(f"cannot start or reach {where}: {first_line(exc)}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


@contextlib.contextmanager
def quiet_ray_data_logs() -> Iterator[None]:
    """Ray Data's INFO lines (execution started/finished) and its hint about the progress bars
    this job turns off (the run shows its own progress) stay out of the job's output
    meanwhile; its warnings and errors still show. The logger's level is restored after."""
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    hint = _DropMessage("Progress bars disabled")
    data_logger.setLevel(max(level, logging.WARNING))
    for handler_owner in (data_logger, *_handler_owners(data_logger)):
        handler_owner.addFilter(hint)
    try:
        yield
    finally:
        data_logger.setLevel(level)
        for handler_owner in (data_logger, *_handler_owners(data_logger)):
            handler_owner.removeFilter(hint)


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _handler_owners(logger: logging.Logger) -> list[logging.Filterer]:
    """The loggers below ``logger`` that Ray Data logs through: a filter on a parent does not
    see its children's records, so each one gets it."""
    return [child for name, child in logging.root.manager.loggerDict.items()
            if name.startswith(logger.name + ".") and isinstance(child, logging.Logger)]


@dataclass(frozen=True)
class WorkerPlan:
    """How many model workers (actors) a job runs, and what each reserves."""

    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    cluster_cpus: float
    cluster_gpus: float

    def describe(self) -> str:
        each = f"{self.cpus_per_worker:g} CPU"
        if self.gpus_per_worker:
            each += f" + {self.gpus_per_worker:g} GPU"
        return (f"{self.workers} worker{'s' if self.workers != 1 else ''} x ({each}) on "
                f"{self.cluster_cpus:g} CPUs, {self.cluster_gpus:g} GPUs")

    def to_dict(self) -> dict[str, float]:
        return {"workers": self.workers, "cpus_per_worker": self.cpus_per_worker,
                "gpus_per_worker": self.gpus_per_worker, "cluster_cpus": self.cluster_cpus,
                "cluster_gpus": self.cluster_gpus}


def plan_workers(cluster_cpus: float, cluster_gpus: float, workers: int | None,
                 gpus_per_worker: float = 0.0) -> WorkerPlan:
    """Size the actor pool so that it never holds every CPU.

    Ray Data starts the actors first; when they reserve all the CPUs, no task that reads files
    can be scheduled and the job waits for ever (ray-project/ray#44687). One CPU (half of a
    one-CPU cluster) stays free for reading; the workers share the rest, at most one CPU each
    and fractions when they must (a worker's torch then runs one thread). ``workers`` None:
    one per GPU share with ``gpus_per_worker``, else one per CPU left.
    """
    if workers is not None and workers < 1:
        raise OptionError(f"--workers must be >= 1, got {workers}")
    if gpus_per_worker < 0:
        raise OptionError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker:g}")
    if cluster_cpus <= 0:
        raise TorchinferError("the Ray cluster has no CPUs to read files with")
    reserve = 1.0 if cluster_cpus >= 2 else cluster_cpus / 2
    spare = cluster_cpus - reserve
    if workers is None:
        if gpus_per_worker:
            workers = max(1, math.floor(cluster_gpus / gpus_per_worker + 1e-9))
        else:
            workers = max(1, math.floor(spare))
    if gpus_per_worker and workers * gpus_per_worker > cluster_gpus + 1e-9:
        raise TorchinferError(f"{workers} workers x {gpus_per_worker:g} GPU need "
                              f"{workers * gpus_per_worker:g} GPUs; the Ray cluster has "
                              f"{cluster_gpus:g}")
    # two decimals: Ray rounds fractional resources, and 0.333... x 3 must still fit
    cpus = math.floor(min(1.0, spare / workers) * 100) / 100
    if cpus <= 0:
        raise TorchinferError(f"{workers} workers do not fit beside the file reading on "
                              f"{cluster_cpus:g} CPUs: use fewer --workers")
    return WorkerPlan(workers, cpus, gpus_per_worker, cluster_cpus, cluster_gpus)


def cluster_resources(ray: Any) -> tuple[float, float]:
    """(CPUs, GPUs) of the connected cluster."""
    resources = ray.cluster_resources()
    return float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0))
