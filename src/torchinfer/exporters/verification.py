"""Proving an exported file computes what the PyTorch model computes: the same real inputs,
photographs (``torchinfer.assets``) preprocessed the way the predictors preprocess them, through both, every output
element compared (``verify.Comparison``), batch by batch."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image
from torch import nn

from ..assets import load_photographs
from ..errors import TorchinferError, first_line
from ..models import LoadedModel, PreprocessConfig
from ..models.onnx_session import make_session
from ..tasks.registry import task_spec
from ..verify import Comparison, OutputCheck
from .common import ExportError, ExportReport, agreement_kind, output_name


def preprocess_images(cfg: PreprocessConfig, images: Sequence[Image.Image],
                      task: str) -> list[torch.Tensor]:
    """(3, H, W) float32 tensors made by the task's own predictor (its preprocess and
    prepare: resize and crop, or the letterbox, then normalisation), so the file is verified
    on exactly what it will be fed. The predictor gets a stand-in module: only its
    preprocessing runs, and the model being exported is left as it is."""
    stand_in = LoadedModel(module=nn.Identity(), name="verification", task=task,
                           preprocess=cfg, labels=None, weights=None)
    predictor = task_spec(task).predictor_for(stand_in, device="cpu", channels_last=False)
    out = []
    for i, img in enumerate(images):
        batch = predictor.preprocess([img.convert("RGB")], [f"photograph {i}"])
        out.append(predictor.device_preprocess(batch.tensor)[0].contiguous())
    return out


def verify_onnx(report: ExportReport, file: Path, reference: nn.Module, cfg: PreprocessConfig,
                images: Sequence[Image.Image] | None, dynamic_batch: bool,
                batch_size: int) -> ExportReport:
    """``report`` with the comparison of ``file`` in ONNX Runtime against ``reference`` on
    ``images`` (default: the bundled photographs), at batch 1 and ``batch_size``."""
    t0 = time.perf_counter()
    inputs = preprocess_images(cfg, verification_images(images), report.task)
    comparison = Comparison(output_name(report.task), report.tolerance,
                            agreement_kind(report.task))
    try:
        # CPU on both sides on purpose: this compares the exported graph with the model, not
        # GPU kernels (TF32 alone would exceed the fp32 tolerance).
        session = make_session(file, device="cpu")
    except TorchinferError as exc:  # e.g. an op without a kernel for this dtype
        return replace(report, verified=True, inputs=len(inputs),
                       checks=(comparison.failed(1, str(exc)),),
                       verify_seconds=time.perf_counter() - t0)
    sizes = [1] + ([batch_size] if dynamic_batch and batch_size > 1 else [])
    checks = tuple(check(reference, ort_runner(session), inputs, size, comparison,
                         "onnxruntime") for size in sizes)
    providers = tuple(session.get_providers())
    del session  # release the file before it is renamed
    return replace(report, verified=True, inputs=len(inputs), checks=checks,
                   providers=providers, verify_seconds=time.perf_counter() - t0)


def verification_images(images: Sequence[Image.Image] | None) -> list[Image.Image]:
    """The images given, or the bundled photographs; never none."""
    if images is None:
        images = list(load_photographs().values())
    if not images:
        raise ExportError("verify_inputs is empty: verification needs at least one image")
    return list(images)


def batches(inputs: list[torch.Tensor], size: int) -> list[torch.Tensor]:
    """Consecutive batches of ``size`` images (the last one filled up from the start, so every
    batch has the size under test). Images of different shapes (no crop) are centre-cropped
    to their common size: still real pixels, and one tensor per batch."""
    n = max(len(inputs), size)
    padded = [inputs[i % len(inputs)] for i in range(math.ceil(n / size) * size)]
    out = []
    for i in range(0, len(padded), size):
        group = padded[i:i + size]
        h = min(t.shape[1] for t in group)
        w = min(t.shape[2] for t in group)
        out.append(torch.stack([F.center_crop(t, [h, w]) for t in group]))
    return out


def check(reference: nn.Module, run: Callable[[torch.Tensor], np.ndarray],
           inputs: list[torch.Tensor], size: int, comparison: Comparison,
           runtime: str) -> OutputCheck:
    """Run every batch of ``size`` through PyTorch and ``run`` (the exported file in its
    runtime), comparing as it goes (segmentation logits of 8 photographs at 520 px are ~1 GB:
    nothing is kept but the running maxima)."""
    acc = comparison.start(size)
    for batch in batches(inputs, size):
        with torch.inference_mode():
            ref = reference(batch).float().numpy()
            try:
                got = run(batch)
            except Exception as exc:  # noqa: BLE001 - a frozen shape, a missing kernel
                return comparison.failed(size, f"{runtime} failed on input shape "
                                               f"{tuple(batch.shape)}: {first_line(exc)}")
        if got.shape != ref.shape:
            return comparison.failed(size, f"{runtime} gave shape {tuple(got.shape)} where "
                                           f"PyTorch gave {tuple(ref.shape)} (input shape "
                                           f"{tuple(batch.shape)})")
        acc.add(ref, np.asarray(got, dtype=np.float32))
    return acc.result()


def ort_runner(session: Any) -> Callable[[torch.Tensor], np.ndarray]:
    feed = session.get_inputs()[0]
    dtype = np.float16 if feed.type == "tensor(float16)" else np.float32
    return lambda batch: session.run(None, {feed.name: batch.numpy().astype(dtype)})[0]
