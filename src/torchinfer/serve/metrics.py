"""The server's Prometheus series, written in the text exposition format (version 0.0.4).

A few dozen lines instead of a dependency: counters, gauges and histograms with labels, safe
to update from the event loop and the model threads at once. The format, as Prometheus reads
it: ``# HELP`` and ``# TYPE`` once per family, before its samples; a histogram has cumulative
``_bucket{le="..."}`` samples ending with ``le="+Inf"`` (equal to ``_count``), then ``_sum``
and ``_count``; label values escape backslash, double quote and newline.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# seconds: from a fast batch of a tiny model to a request that waited for a slow one
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Family:
    kind = ""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str]):
        self.name, self.help, self.label_names = name, help_text, tuple(label_names)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> Labels:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {sorted(labels)}")
        return tuple((k, str(labels[k])) for k in self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def lines(self) -> list[str]:
        raise NotImplementedError


class Counter(_Family):
    kind = "counter"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()):
        super().__init__(name, help_text, label_names)
        self._values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [f"{self.name}{_labels(k)} {_number(v)}" for k, v in items]


class Gauge(_Family):
    """A value read when the metrics are scraped (``read`` gives (labels, value) pairs)."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str],
                 read: Callable[[], Iterable[tuple[dict[str, str], float]]]):
        super().__init__(name, help_text, label_names)
        self._read = read

    def lines(self) -> list[str]:
        samples = sorted((self._key(labels), value) for labels, value in self._read())
        return self.header() + [f"{self.name}{_labels(k)} {_number(v)}" for k, v in samples]


class Histogram(_Family):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str],
                 buckets: Sequence[float]):
        super().__init__(name, help_text, label_names)
        self.bounds = tuple(sorted(buckets))
        # per label set: counts per bucket (not cumulative; +Inf last), sum
        self._values: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        slot = bisect.bisect_left(self.bounds, value)  # le: a value equal to a bound is in it
        with self._lock:
            counts, total = self._values.setdefault(key, ([0] * (len(self.bounds) + 1), [0.0]))
            counts[slot] += 1
            total[0] += value

    def snapshot(self, **labels: str) -> tuple[int, float]:
        """(count, sum) of one label set."""
        with self._lock:
            counts, total = self._values.get(self._key(labels), ([0], [0.0]))
            return sum(counts), total[0]

    def lines(self) -> list[str]:
        out = self.header()
        with self._lock:
            items = sorted((k, (list(c), s[0])) for k, (c, s) in self._values.items())
        for key, (counts, total) in items:
            running = 0
            for bound, count in zip((*self.bounds, math.inf), counts):
                running += count
                le = 'le="' + _number(bound) + '"'
                out.append(f"{self.name}_bucket{_labels(key, le)} {running}")
            out.append(f"{self.name}_sum{_labels(key)} {_number(total)}")
            out.append(f"{self.name}_count{_labels(key)} {running}")
        return out


class ServerMetrics:
    """Every series the server exports. ``queue_depth`` and ``ready`` are read from the models
    when scraped: ``depths()`` gives (model, queued requests, ready) for each."""

    def __init__(self, depths: Callable[[], Iterable[tuple[str, int, bool]]]):
        self.requests = Counter("torchinfer_requests_total",
                                "Requests answered, by model, endpoint and HTTP status.",
                                ("model", "endpoint", "status"))
        self.failures = Counter("torchinfer_request_failures_total",
                                "Requests answered with an error (status >= 400), by model, "
                                "endpoint and HTTP status.", ("model", "endpoint", "status"))
        self.latency = Histogram("torchinfer_request_duration_seconds",
                                 "Time from the request's arrival to its answer.", ("model",),
                                 LATENCY_BUCKETS)
        self.queue_wait = Histogram("torchinfer_queue_wait_seconds",
                                    "Time a decoded request waited for the model worker.",
                                    ("model",), LATENCY_BUCKETS)
        self.compute = Histogram("torchinfer_compute_seconds",
                                 "Time the model worker spent on each batch (decoding, when "
                                 "the worker decodes, prepare, forward, postprocess).",
                                 ("model",), LATENCY_BUCKETS)
        self.batch_size = Histogram("torchinfer_batch_size", "Requests run together per model "
                                    "call.", ("model",), BATCH_BUCKETS)
        self.queue_depth = Gauge("torchinfer_queue_depth", "Decoded requests waiting for the "
                                 "model worker.", ("model",),
                                 lambda: [({"model": m}, d) for m, d, _ in depths()])
        self.ready = Gauge("torchinfer_model_ready", "1 when the model is loaded and serving.",
                           ("model",), lambda: [({"model": m}, float(r)) for m, _, r in depths()])
        self._families: list[_Family] = [self.requests, self.failures, self.latency,
                                         self.queue_wait, self.compute, self.batch_size,
                                         self.queue_depth, self.ready]

    def answered(self, model: str, endpoint: str, status: int, seconds: float | None) -> None:
        self.requests.inc(model=model, endpoint=endpoint, status=str(status))
        if status >= 400:
            self.failures.inc(model=model, endpoint=endpoint, status=str(status))
        if seconds is not None:
            self.latency.observe(seconds, model=model)

    def observe_batches(self, model: str, batches: Iterable[tuple[int, Sequence[float]]],
                        compute_s: float | None) -> None:
        """What a model's batcher reports: per batch taken, its size and each request's queue
        wait; per model call, its seconds (None: no call)."""
        for size, waits in batches:
            self.batch_size.observe(size, model=model)
            for wait in waits:
                self.queue_wait.observe(wait, model=model)
        if compute_s is not None:
            self.compute.observe(compute_s, model=model)

    def render(self) -> str:
        return "\n".join(line for family in self._families for line in family.lines()) + "\n"
