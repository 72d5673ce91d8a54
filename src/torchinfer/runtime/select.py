"""Choosing what runs a predictor's model: the backend and precision asked for, verified on
photographs, or the fastest verified one timed on the first real batch ("auto").

The predictor knows no backend: it runs whatever module it is handed (``use_module``) and
offers its own preprocessing for the verification photographs. Everything backend-specific
(exports, sessions, frozen graphs, tolerances) stays in ``runtime``.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..assets import load_photographs
from .backends import (
    BackendError,
    BackendReport,
    Candidate,
    build,
    cache_dir,
    candidates_for,
    check_choice,
    model_fingerprint,
    pick_fastest,
    refusal,
    verify,
)

if TYPE_CHECKING:
    from ..runner.batches import Batch
    from ..tasks.base import Predictor


def apply_backend(predictor: Predictor, backend: str = "torch", precision: str = "fp32", *,
                  verify_outputs: bool = True) -> None:
    """Run ``predictor``'s model on ``backend`` ("torch", "torchscript", "onnxruntime" or
    "auto") in ``precision`` ("fp32", "bf16", "fp16"). Each candidate is verified against the
    float32 eager model on photographs preprocessed by the predictor and refused (BackendError)
    beyond its precision's tolerance; "auto" times the verified ones on the first real batch
    and keeps the fastest. ``predictor.backend_report`` says what runs and why."""
    check_choice(backend, precision)
    if (backend, precision) == ("torch", "fp32"):
        return
    if not predictor.supports_backends:
        raise BackendError(f"{predictor.model.name} runs on torch in fp32 only: "
                           f"{predictor.supports_backends_reason}")
    batches = verification_batches(predictor)
    reference = predictor.module
    candidates = [build(predictor.model, reference, predictor.task, b, p, predictor.device,
                        batches[0])
                  for b, p in candidates_for(backend, precision, predictor.device)]
    if verify_outputs:
        candidates = [verify(c, reference, batches, predictor.task) for c in candidates]
    if backend == "auto":
        predictor.before_first_batch = _FastestOnFirstBatch(predictor, candidates)
        return
    chosen = candidates[0]
    if not chosen.usable:
        raise BackendError(refusal(chosen))
    _use(predictor, chosen)
    predictor.backend_report = BackendReport(
        chosen, candidates, "requested" + ("" if verify_outputs else ", not verified"))


# "default": a run of at least this many images pays for building and timing the candidates
# (exporting and verifying mobilenet_v2 for ONNX Runtime: ~5 s on 2 cores, which ORT's 2-3x
# faster forward wins back within ~250 images; BENCHMARKS.md)
LONG_RUN_IMAGES = 256


def apply_default_backend(predictor: Predictor, images: int | None, *,
                          verify_outputs: bool = True) -> str:
    """The backend a plain command gets: the choice measured earlier for this model, batch
    size and machine (kept in the cache), else for a run of ``images`` >= LONG_RUN_IMAGES the
    fastest verified one measured on its first batch ("auto", then kept), else eager
    PyTorch. A one-image call never pays for an export. Returns what was done."""
    if not predictor.supports_backends or predictor.model.weights_format == "onnx":
        return "torch"
    memo = _choice_file(predictor)
    try:
        backend = json.loads(memo.read_text())["backend"]
        check_choice(backend, "fp32")
    except (OSError, ValueError, KeyError, TypeError, BackendError):
        backend = None
    if backend is not None:
        if backend != "torch":
            apply_backend(predictor, backend, "fp32", verify_outputs=verify_outputs)
            predictor.backend_report.reason = f"measured fastest earlier on this machine ({memo.name})"
        return backend
    if images is None or images < LONG_RUN_IMAGES:
        return "torch"
    apply_backend(predictor, "auto", "fp32", verify_outputs=verify_outputs)
    chooser = predictor.before_first_batch
    assert isinstance(chooser, _FastestOnFirstBatch)
    chooser.remember = memo
    return "auto"


def _choice_file(predictor: Predictor) -> Path:
    """Where the measured choice for this model, weights, batch size and machine is kept."""
    machine = "-".join((platform.machine(), _cpu_name(), str(os.cpu_count()),
                        str(torch.get_num_threads()), predictor.device.type,
                        str(predictor.batch_size)))
    key = model_fingerprint(predictor.model, predictor.task, f"choice {machine}")
    return cache_dir() / "backend" / f"{predictor.model.name.replace('/', '_')}-{key}.json"


def _cpu_name() -> str:
    """The CPU's model name (the winner changes with its vector units)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def verification_batches(predictor: Predictor) -> list[torch.Tensor]:
    """The photographs through the predictor's own preprocess and prepare, as device batches
    of equal-shaped images."""
    groups: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for name, img in load_photographs().items():
        tensor = predictor.preprocess([img], [name]).tensor
        groups.setdefault(tuple(tensor.shape[1:]), []).append(tensor)
    return [predictor.prepare(predictor.to_device(torch.cat(group))) for group in groups.values()]


def _use(predictor: Predictor, candidate: Candidate) -> None:
    assert candidate.module is not None  # usable candidates keep their module
    # an ONNX Runtime session takes NCHW: the batch is reordered once, in uint8
    predictor.use_module(candidate.module,
                         channels_last=False if candidate.backend == "onnxruntime" else None)


class _FastestOnFirstBatch:
    """The "auto" choice: on the first real batch, before it is timed, every verified
    candidate runs it; the fastest is kept and the others are let go."""

    def __init__(self, predictor: Predictor, candidates: list[Candidate]):
        self.predictor, self.candidates = predictor, candidates
        self.remember: Path | None = None  # where to keep the choice for later runs

    def __call__(self, tensor: torch.Tensor, batch: Batch) -> None:
        predictor, reference = self.predictor, self.predictor.module

        def run(module: torch.nn.Module) -> None:
            predictor.module = module
            predictor.forward(tensor, batch)
            predictor.sync()

        try:
            chosen, reason = pick_fastest(self.candidates, run, len(batch.sources))
        finally:
            predictor.module = reference
        _use(predictor, chosen)
        predictor.backend_report = BackendReport(chosen, self.candidates, reason)
        for c in self.candidates:  # only the chosen one stays in memory
            if c is not chosen:
                c.module = None
        if self.remember is not None:
            try:
                self.remember.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.remember.with_suffix(".tmp")
                tmp.write_text(json.dumps({"backend": chosen.backend, "reason": reason}))
                tmp.replace(self.remember)
            except OSError:
                pass  # a read-only cache: measured again next time
