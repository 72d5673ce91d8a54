"""Choosing what runs a predictor's model, once per model and machine.

``auto`` (the default everywhere: ``ti.load``, ``predict``, ``serve``, Ray, ``bench``) builds
every available backend in float32, and in bfloat16 too where the CPU runs it natively,
verifies each against the eager float32 model on the photographs (by the task's agreement
measure: top-1, pixels, boxes), times the verified ones on a batch of photographs at the
predictor's batch size, and keeps the fastest. A named backend or precision pins it. The
verdicts and the choice are remembered (``memo``) per model stamp, machine, request and batch
size, so later loads build only the chosen candidate; the report says what was reused.

None of this happens while loading: ``ti.load`` leaves a ``Preparation`` on the predictor,
which runs before its first batch, or when ``predictor.prepare()`` is called (a server does
at start). The predictor knows no backend: it runs whatever module it is handed
(``use_module``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..assets import load_photographs
from ..devices import usable_cpus
from ..runner.streamer import size_session, torch_threads
from .backend import PRECISIONS, BackendError, BuildRequest
from .candidates import BackendReport, Candidate, build, pick_fastest, refusal, verify
from .cpu import cpu_name, native_bf16, vector_flags
from .decoding import check_reduced_decode
from .memo import cache_dir, file_stamp, memo_enabled, model_stamp, read_memo, update_memo
from .registry import available_backends, get_backend

if TYPE_CHECKING:
    from ..runner.batches import Batch
    from ..tasks.base import Predictor

AUTO = "auto"
# the backend that owns a model loaded from its own file format: it runs there only
FILE_BACKENDS = {"onnx": "onnxruntime", "openvino": "openvino"}


def default_request() -> tuple[str, str]:
    """The (backend, precision) of a call that names neither: ``$TORCHINFER_BACKEND`` and
    ``$TORCHINFER_PRECISION`` where set (a deployment or a test suite pinning its runtime
    without changing code), else auto and auto."""
    return (os.environ.get("TORCHINFER_BACKEND") or AUTO,
            os.environ.get("TORCHINFER_PRECISION") or AUTO)


def check_request(backend: str, precision: str) -> None:
    """Refuse an unknown backend or precision before anything is built."""
    if backend != AUTO:
        get_backend(backend)  # raises naming the choices
    if precision not in (AUTO, *PRECISIONS):
        raise BackendError(f"unknown precision {precision!r}: use auto, {', '.join(PRECISIONS)}")


def candidate_pairs(backend: str, precision: str, device: torch.device,
                    weights_format: str | None = None, *,
                    calibrated: bool = False) -> list[tuple[str, str]]:
    """(backend, precision) pairs to consider. A named backend and precision: that one (built
    even where it cannot run, so the refusal says why). ``auto`` precision: fp32, bf16 where
    the CPU runs it natively, and int8 where calibration images were given (``calibrated``;
    on CUDA, reduced precision is asked for by name). ``auto`` backend: every available
    backend that runs the precision on ``device``. A model loaded from a backend's own file
    runs on that backend only."""
    owner = FILE_BACKENDS.get(weights_format or "")
    if backend == AUTO:
        names = [owner] if owner else [b.name for b in available_backends()]
    else:
        names = [backend]
    if precision == AUTO:
        wanted = ["fp32"] + (["bf16"] if device.type == "cpu" and native_bf16() else []) + (
            ["int8"] if calibrated and device.type == "cpu" else [])
    else:
        wanted = [precision]
    pairs = []
    for name in names:
        if backend != AUTO and precision != AUTO:
            return [(name, precision)]
        try:
            runs = get_backend(name).precisions(device)
        except Exception:  # a runtime that cannot even say what it runs
            if backend != AUTO:
                return [(name, wanted[0])]  # named: built, so its error is shown
            continue
        pairs += [(name, p) for p in wanted if p in runs]
    return pairs


@dataclass
class Preparation:
    """What ``ti.load`` leaves for before the first batch: the reduced JPEG decode's check
    and the choice of backend and precision. Called once, by ``Predictor.prepare``."""

    predictor: Predictor
    backend: str
    precision: str
    verify: bool = True
    memo: bool = True
    calibration: Path | None = None  # images for int8's quantisation
    source: str | None = None  # memo.source_stamp of the model's file, taken at load

    def __call__(self) -> None:
        p = self.predictor
        stamp = model_stamp(p.model, p.task, self.source)
        memo = memo_file(p, stamp) if memo_enabled(self.memo) else None
        check_reduced_decode(p, verify=self.verify, memo=memo)  # on the eager fp32 module
        choose_runtime(p, self.backend, self.precision, verify=self.verify, memo=memo,
                       calibration=self.calibration, stamp=stamp)


def choose_runtime(predictor: Predictor, backend: str, precision: str, *,
                   verify: bool = True, memo: Path | None = None,
                   calibration: Path | None = None, stamp: str | None = None) -> None:
    """Make ``predictor`` run on the choice for ``backend`` x ``precision`` (see the module
    doc); ``predictor.backend_report`` says what runs, why and what was reused. Raises
    BackendError when nothing asked for can run it. ``calibration``: a folder of images for
    int8's quantisation (int8 is a candidate only with one). ``stamp``: ``memo.model_stamp``,
    naming the files backends keep (None: named by a hash of the weights)."""
    check_request(backend, precision)
    eager = (backend, precision) in ((AUTO, AUTO), ("torch", AUTO), ("torch", "fp32"))
    if not predictor.supports_backends or predictor.model.weights_format == "torchscript":
        if not eager:
            why = predictor.supports_backends_reason or "a TorchScript file runs on torch"
            raise BackendError(f"{predictor.model.name} runs on torch in fp32 only: {why}")
        return  # eager float32, as loaded
    owner = FILE_BACKENDS.get(predictor.model.weights_format or "")
    if owner is not None and backend not in (AUTO, owner):
        if not eager:
            raise BackendError(f"{predictor.model.name} is a {owner} file: it runs on {owner}, "
                               f"not {backend}")
        backend, precision = owner, "fp32"  # "torch" (a pinned default): the file, as it is
    pairs = candidate_pairs(backend, precision, predictor.device, predictor.model.weights_format,
                            calibrated=calibration is not None)
    if owner is not None and pairs == [(owner, "fp32")]:
        itself = Candidate(owner, "fp32", predictor.module)  # the file, as it was loaded
        predictor.backend_report = BackendReport(itself, [itself], "the file's own runtime")
        return
    if pairs == [("torch", "fp32")] or (not pairs and eager):
        return
    if not pairs:
        raise BackendError(f"nothing here runs {backend} in {precision} on "
                           f"{predictor.device.type} (see torchinfer env)")
    calibrate = Calibration(predictor, calibration) if calibration is not None else None
    key = f"{backend}/{precision}/batch {predictor.batch_size}" + (
        "" if verify else "/unverified")
    if calibrate is not None:  # int8's verdict and the choice depend on the images
        key += f"/calibration {calibrate.stamp[:12]}"
    kept = read_memo(memo) if memo is not None else {}
    verdicts = kept.get("verdicts", {})
    choice = kept.get("choices", {}).get(key)
    if isinstance(choice, dict) and isinstance(choice.get("reason"), str) and \
            choice.get("chosen") in {f"{b}/{p}" for b, p in pairs}:
        chosen_backend, chosen_precision = choice["chosen"].split("/")
        reused = _build_checked(predictor, [(chosen_backend, chosen_precision)], verdicts,
                                verify, stamp, calibrate)
        if reused and reused[0].usable:
            _use(predictor, reused[0], f"{choice['reason']}; remembered ({memo.name})"
                 if memo is not None else choice["reason"], reused)
            return
    candidates = _build_checked(predictor, pairs, verdicts, verify, stamp, calibrate)
    try:
        if len(candidates) == 1:
            chosen = candidates[0]
            if not chosen.usable:
                raise BackendError(refusal(chosen))
            reason = "requested"
        else:
            chosen, reason = _time(predictor, candidates)
        if not verify and chosen.check is None and chosen.remembered is None:
            reason += ", not verified"
        if memo is not None and len(candidates) > 1:
            update_memo(memo, "choices", {key: {"chosen": chosen.label, "reason": reason}})
    finally:  # what was learnt about each candidate, kept even when none can run
        if memo is not None:
            update_memo(memo, "verdicts", {
                verdict_key(c.label, calibrate): _verdict(c) for c in candidates
                if c.remembered is None and (c.check is not None or c.lasting_error)})
    for c in candidates:  # only the chosen one stays in memory
        if c is not chosen:
            c.module = None
    _use(predictor, chosen, reason, candidates)


def _build_checked(predictor: Predictor, pairs: list[tuple[str, str]],
                   verdicts: dict[str, Any], verify_outputs: bool, stamp: str | None,
                   calibrate: Calibration | None = None) -> list[Candidate]:
    """Each pair built and verified, unless a remembered verdict says how it went."""
    batches: list[torch.Tensor] | None = None
    out = []
    for b, p in pairs:
        label = f"{b}/{p}"
        verdict = verdicts.get(verdict_key(label, calibrate))
        verdict = verdict if isinstance(verdict, dict) else None
        if verdict is not None and not verdict.get("passed") and verify_outputs:
            why = f"refused earlier on this machine: {verdict.get('why')}"
            out.append(Candidate(b, p, None, error=why, remembered=why))
            continue
        if batches is None:
            batches = verification_batches(predictor)
        layout = get_backend(b).layout
        example = batches[0].contiguous() if layout == "NCHW" else batches[0]
        request = BuildRequest(predictor.model, predictor.module, predictor.task, p,
                               predictor.device, example, stamp,
                               calibration=calibrate.batches if calibrate else None,
                               calibration_stamp=calibrate.stamp if calibrate else None)
        candidate = build(request, b)
        if verdict is not None and verdict.get("passed"):
            candidate.remembered = verdict.get("why")
        elif verify_outputs:
            candidate = verify(candidate, predictor.module, batches, predictor.task)
        out.append(candidate)
    return out


def verdict_key(label: str, calibrate: Calibration | None) -> str:
    """An int8 verdict holds for its calibration images only."""
    return f"{label}/calibration {calibrate.stamp[:12]}" if calibrate is not None and \
        label.endswith("/int8") else label


class Calibration:
    """int8's calibration images: the folder's stamp now, its prepared batches (one image
    each, NCHW, as the predictor prepares real ones) when first asked for."""

    MAX_IMAGES = 300  # NNCF's default subset: enough for the ranges of every layer

    def __init__(self, predictor: Predictor, folder: Path):
        if not Path(folder).is_dir():
            raise BackendError(f"calibration folder {folder} does not exist or is not a folder")
        self.predictor, self.folder = predictor, Path(folder)
        self.stamp = file_stamp(self.folder)
        self._batches: list[torch.Tensor] | None = None

    def batches(self) -> list[torch.Tensor]:
        if self._batches is None:
            from ..runner.inputs import iter_sources

            out = []
            for source in iter_sources(str(self.folder)):
                decoded = self.predictor.decode([source])
                if decoded.batch is not None:
                    tensor = self.predictor.to_device(decoded.batch.tensor)
                    out.append(self.predictor.device_preprocess(tensor).contiguous())
                if len(out) >= self.MAX_IMAGES:
                    break
            if not out:
                raise BackendError(f"calibration folder {self.folder} holds no image "
                                   "torchinfer can read")
            self._batches = out
        return self._batches


def _verdict(candidate: Candidate) -> dict[str, Any]:
    if candidate.usable:
        why = candidate.check.describe() if candidate.check is not None else "built"
        return {"passed": True, "why": why}
    failed = candidate.error or (candidate.check.describe() if candidate.check else "refused")
    return {"passed": False, "why": failed}


def _time(predictor: Predictor, candidates: list[Candidate]) -> tuple[Candidate, str]:
    """The fastest usable candidate on a batch of photographs at the predictor's batch size,
    each fed the layout it wants."""
    tensor, batch = timing_batch(predictor)
    layouts = {"NCHW": tensor.contiguous(), None: tensor}
    inputs = {id(c.module): layouts[get_backend(c.backend).layout] for c in candidates
              if c.module is not None}
    nchw = {id(c.module) for c in candidates if get_backend(c.backend).layout == "NCHW"}
    reference, layout = predictor.module, predictor.channels_last

    def run(module: torch.nn.Module) -> None:
        predictor.module = module
        predictor.channels_last = layout and id(module) not in nchw  # as _use will set it
        # threads as a stream gives them: a runtime with its own pool gets every core, and
        # torch keeps to one thread around it (two pools spinning on the same cores would
        # time the contention, not the runtime)
        with torch_threads(size_session(module, None)):
            predictor.forward(inputs[id(module)], batch)
            predictor.sync()

    try:
        return pick_fastest(candidates, run, len(batch.sources))
    finally:
        predictor.module, predictor.channels_last = reference, layout


def _use(predictor: Predictor, candidate: Candidate, reason: str,
         candidates: list[Candidate]) -> None:
    assert candidate.module is not None  # usable candidates keep their module
    layout = get_backend(candidate.backend).layout
    predictor.use_module(candidate.module, channels_last=False if layout == "NCHW" else None)
    predictor.backend_report = BackendReport(candidate, candidates, reason)


def memo_file(predictor: Predictor, stamp: str | None) -> Path | None:
    """Where what is measured about this model (``stamp``: ``memo.model_stamp``) on this
    machine is kept (None: a model with no file behind it, measured afresh each time)."""
    if stamp is None:
        return None
    name = predictor.model.name.replace("/", "_").replace("\\", "_")
    return cache_dir() / "memo" / f"{name}-{stamp}-{machine_key(predictor.device)}.json"


def machine_key(device: torch.device) -> str:
    """What the runtimes' speed and answers depend on besides the model: the CPU and its
    vector units, the cores this process may use, torch's threads, the device and the
    runtimes' versions."""
    versions = {}
    for b in available_backends():
        module = b.requires[0] if b.requires else "torch"
        versions[b.name] = _version(module)
    text = json.dumps([cpu_name(), vector_flags(), usable_cpus(), torch.get_num_threads(),
                       str(device), versions, _gpu_name(device)])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "?"


def _gpu_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else ""


def verification_batches(predictor: Predictor) -> list[torch.Tensor]:
    """The photographs through the predictor's own preprocessing, as device batches of
    equal-shaped images."""
    groups: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for name, img in load_photographs().items():
        tensor = predictor.preprocess([img], [name]).tensor
        groups.setdefault(tuple(tensor.shape[1:]), []).append(tensor)
    return [predictor.device_preprocess(predictor.to_device(torch.cat(group)))
            for group in groups.values()]


def timing_batch(predictor: Predictor) -> tuple[torch.Tensor, Batch]:
    """A batch of ``predictor.batch_size`` photographs (repeated as needed) of the most
    common shape, prepared as the predictor prepares real ones."""
    photos = list(load_photographs().items())
    shapes: dict[tuple[int, ...], list[int]] = {}
    for i, (name, img) in enumerate(photos):
        shapes.setdefault(tuple(predictor.preprocess([img], [name]).tensor.shape[1:]), []).append(i)
    group = max(shapes.values(), key=len)
    picks = [photos[group[i % len(group)]] for i in range(predictor.batch_size)]
    batch = predictor.preprocess([img for _, img in picks], [name for name, _ in picks])
    return predictor.device_preprocess(predictor.to_device(batch.tensor)), batch

