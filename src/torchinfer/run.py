"""A batch run: stream a predictor over sources, write one JSONL line per input, summarise.

This is what ``torchinfer predict`` does, as a library call, so scripts get the same outputs
(``predictions.jsonl`` and ``summary.json`` in the output folder) without the CLI.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io.sinks import JsonlWriter, write_json_atomic
from .io.sources import expand_sources
from .results import STAGES, Result
from .tasks import Predictor


@dataclass
class RunSummary:
    total: int = 0
    failed: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)  # mean ms per image, per stage
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def succeeded(self) -> int:
        return self.total - self.failed

    @property
    def images_per_second(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "succeeded": self.succeeded, "failed": self.failed,
                "seconds": round(self.seconds, 3),
                "images_per_second": round(self.images_per_second, 2),
                "stage_ms_per_image": {k: round(v, 3) for k, v in self.stage_ms.items()},
                "failures": self.failures, "outputs": self.outputs}


def count_inputs(sources: Iterable[str]) -> int:
    """How many inputs the sources expand to (walks folders; opens no image)."""
    return sum(1 for _ in expand_sources(sources))


def run_to_dir(predictor: Predictor, sources: list[str], out_dir: str | Path, *,
               batch_size: int | None = None,
               on_result: Callable[[Result], None] | None = None,
               run_info: dict[str, Any] | None = None) -> RunSummary:
    """Run ``predictor`` over ``sources``; write ``predictions.jsonl`` and ``summary.json``.

    Bad inputs become lines with an ``error`` field; the run goes on. ``on_result`` sees each
    result as it arrives (progress bars, tables).
    """
    out = Path(out_dir)
    summary = RunSummary()
    totals = dict.fromkeys(STAGES, 0.0)
    timed = 0
    start = time.perf_counter()
    with JsonlWriter(out / "predictions.jsonl") as writer:
        for result in predictor.stream(sources, batch_size=batch_size):
            writer.write(result.to_dict())
            summary.total += 1
            if result.ok:
                timed += 1
                for stage in STAGES:
                    totals[stage] += result.speed.get(stage, 0.0)
            else:
                summary.failed += 1
                summary.failures.append({"source": result.source, "error": result.error or ""})
            if on_result is not None:
                on_result(result)
    summary.seconds = time.perf_counter() - start
    summary.stage_ms = {k: v / timed for k, v in totals.items()} if timed else {}
    summary.outputs = {"predictions": str(writer.path), "summary": str(out / "summary.json")}
    write_json_atomic(out / "summary.json", {**(run_info or {}), **summary.to_dict()})
    return summary
