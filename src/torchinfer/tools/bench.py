"""``torchinfer bench``: one model on every backend x precision x batch size, in one run.

Every configuration is a real predictor (the same one ``predict`` uses) streaming the same
decoded photographs, so the figures include preprocessing and postprocessing, not only the
forward pass. Decoding is left out on purpose: it does not depend on the backend (see
benchmarks/classify_folder.py for whole runs over files). Rounds are interleaved across the
configurations and the best round of each is kept, so load drifting on a shared machine hits
all of them alike; the ratio is to eager torch fp32 at the same batch size, measured in the
same run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from torch import nn

from ..errors import TorchinferError


@dataclass
class BenchRow:
    backend: str  # as asked ("auto" stays "auto"; chosen says what it picked)
    precision: str
    batch: int
    images_per_second: float | None = None
    preprocess_ms: float | None = None  # per image
    inference_ms: float | None = None
    postprocess_ms: float | None = None
    vs_torch_fp32: float | None = None  # images/s ratio to eager torch fp32, same batch
    chosen: str | None = None  # what ran (the auto backend's pick)
    error: str | None = None


@dataclass
class BenchReport:
    model: str
    task: str
    device: str
    images: int
    rounds: int
    cpu: str = ""  # the CPU and its vector flags (the figures depend on them)
    rows: list[BenchRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "rows"},
                "rows": [asdict(r) for r in self.rows]}


def bench(task: str, model: str | Path | nn.Module, weights: str | Path | None = None, *,
          backends: Sequence[str] = ("auto", "torch", "torchscript", "onnxruntime", "openvino"),
          precisions: Sequence[str] = ("fp32", "bf16"), batches: Sequence[int] = (1, 16),
          device: str = "auto", images: int = 64, rounds: int = 3, verify: bool = True,
          sample: Sequence[Image.Image] | None = None, **load_options: Any) -> BenchReport:
    """Measure ``model`` on each backend x precision x batch size (see the module doc).

    sample: the images to stream, repeated up to ``images`` (default: the photographs).
    A configuration that cannot run (or fails verification) gets a row with ``error``.
    ``auto`` is the default every command gets: one row per batch size, its precision auto,
    its pick in ``chosen``.
    """
    from ..api import load
    from ..assets import load_photographs
    from ..runtime.cpu import describe_cpu

    pictures = list(sample) if sample is not None else list(load_photographs().values())
    if not pictures:
        raise TorchinferError("bench needs at least one image")
    inputs = [pictures[i % len(pictures)] for i in range(images)]
    combos = [(b, p) for p in precisions for b in backends if b != "auto"]
    if "auto" in backends:
        combos.append(("auto", "auto"))
    if ("torch", "fp32") not in combos:
        combos.insert(0, ("torch", "fp32"))  # the baseline every ratio refers to
    # one predictor per backend x precision, shared by the batch sizes; "auto" picks for its
    # batch size, so it gets one per batch size
    predictors: dict[tuple[str, str, int], Any] = {}
    rows: dict[tuple[str, str, int], BenchRow] = {}
    for backend, precision in combos:
        shared = None
        for b in batches:
            try:
                if shared is None or backend == "auto":
                    sized = {"batch_size": b} if backend == "auto" else {}
                    shared = load(task, model, weights, device=device, backend=backend,
                                  precision=precision, verify_backend=verify,
                                  **{**load_options, **sized})
                predictors[(backend, precision, b)] = shared
            except TorchinferError as exc:
                failed = [b] if backend == "auto" else list(batches)
                rows.update({(backend, precision, f): BenchRow(backend, precision, f,
                                                               error=str(exc)) for f in failed})
                if backend != "auto":
                    break
    if not predictors:
        raise TorchinferError("no configuration could be loaded:\n" + "\n".join(
            f"  {r.backend}/{r.precision}: {r.error}" for r in rows.values()))
    first = next(iter(predictors.values()))
    report = BenchReport(model=first.model.name, task=task, device=str(first.device),
                         images=images, rounds=rounds, cpu=describe_cpu())
    if first.model.random_init:
        report.notes.append("random weights: speed is representative, answers are not")
    # warm-up: every configuration once (auto picks its backend here)
    for (_, _, b), predictor in predictors.items():
        _stream(predictor, inputs[: 2 * b], b)
    best: dict[tuple[str, str, int], tuple[float, dict[str, float]]] = {}
    for _ in range(rounds):
        for key, predictor in predictors.items():
            seconds, stages = _stream(predictor, inputs, key[2])
            if key not in best or seconds < best[key][0]:
                best[key] = (seconds, stages)
    for (backend, precision, b), (seconds, stages) in best.items():
        chosen = predictors[(backend, precision, b)].backend_report
        rows[(backend, precision, b)] = BenchRow(
            backend, precision, b, images_per_second=images / seconds,
            preprocess_ms=stages["preprocess"], inference_ms=stages["inference"],
            postprocess_ms=stages["postprocess"],
            chosen=chosen.chosen.label if chosen is not None else "torch/fp32")
    for (_backend, _precision, b), row in rows.items():
        base = rows.get(("torch", "fp32", b))
        if row.images_per_second and base is not None and base.images_per_second:
            row.vs_torch_fp32 = row.images_per_second / base.images_per_second
    report.rows = [rows[(bk, p, b)] for bk, p in combos for b in batches if (bk, p, b) in rows]
    return report


def _stream(predictor: Any, inputs: list[Image.Image], batch: int) -> tuple[float, dict[str, float]]:
    """Seconds for the whole stream, and the mean ms per image of each stage."""
    totals = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
    start = time.perf_counter()
    n = 0
    for result in predictor.stream(inputs, batch_size=batch):
        n += 1
        for k in totals:
            totals[k] += result.speed.get(k, 0.0)
    seconds = time.perf_counter() - start
    return seconds, {k: v / max(n, 1) for k, v in totals.items()}


def format_report(report: BenchReport) -> list[tuple[str, ...]]:
    """Table rows: backend, precision, batch, img/s, ratio, preprocess/inference/postprocess."""
    out = []
    for r in report.rows:
        if r.error is not None:
            out.append((r.backend, r.precision, str(r.batch), "-", "-", "-", "-", "-",
                        r.error.splitlines()[0][:80]))
            continue
        out.append((r.backend, r.precision, str(r.batch), f"{r.images_per_second:.1f}",
                    f"{r.vs_torch_fp32:.2f}x" if r.vs_torch_fp32 else "-",
                    f"{r.preprocess_ms:.2f}", f"{r.inference_ms:.2f}", f"{r.postprocess_ms:.2f}",
                    r.chosen if r.backend == "auto" else ""))
    return out

