"""The Predictor: every task is ``preprocess -> forward -> postprocess``.

The base class owns everything that is the same for all tasks: decoding inputs, batching,
``torch.inference_mode``, moving data to the device, per-stage timing, streaming with bounded
memory, and turning a bad input into an error record instead of a dead run. A task subclass only
says how to make a batch from images, and how to read the model's output.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, overload

import torch
from PIL import Image

from ..devices import resolve_device
from ..errors import InputError, OptionError
from ..models import LoadedModel
from ..results import Result
from ..runner.images import ImageInput, ImageLoader, describe_source
from ..runner.plan import PROBE_FULL, PROBE_SPLIT, PipelinePlan, choose, fixed_plan, in_turn, split_to_try, usable_cpus
from ..runner.sources import expand_sources
from ..runner.video import is_video, is_webcam, iter_frames

if TYPE_CHECKING:
    from ..runtime.backends import BackendReport, Candidate

R = TypeVar("R", bound=Result)


@dataclass
class Batch:
    """What preprocess hands to forward: the input tensor (CPU, any dtype) and, per image,
    whatever postprocess needs to map predictions back to the original image."""

    tensor: torch.Tensor
    sources: list[str]
    meta: list[Any]


class Normalise:
    """uint8 (N, 3, H, W) -> float32 in [0, 1] -> (x - mean) / std, in place, the arithmetic of
    torchvision's convert + normalize (float32, never float64); mean 0 and std 1 (Ultralytics'
    [0, 1] inputs) skip the two passes that would change nothing."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device):
        shape = (1, len(mean), 1, 1)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(shape)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(shape)
        self.identity = all(m == 0 for m in mean) and all(v == 1 for v in std)

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        x = tensor.float().div_(255.0)
        return x if self.identity else x.sub_(self.mean).div_(self.std)


@dataclass(frozen=True)
class Timing:
    """One batch's seconds: decoding + preprocessing (on whichever thread did it), the model's
    side (prepare + forward + postprocess), and the model waiting for the decoders."""

    decode_s: float
    main_s: float
    wait_s: float
    images: int


@dataclass
class _Decoded:
    """One batch after decoding and preprocessing (on the CPU), with its failures."""

    sources: list[str]
    batch: Batch | None  # None when every input in the batch failed
    errors: dict[int, str]  # position in the batch -> reason
    preprocess_s: float


class Predictor(ABC, Generic[R]):
    """Base class of all task predictors.

    ``predictor(x)`` runs one input and returns one result (raising InputError if the input is
    bad); ``predictor([x, y])`` returns a list with one result per input (bad inputs get a result
    with ``error`` set); ``predictor.stream(source)`` yields results lazily, in input order.
    """

    task: ClassVar[str]
    # When set, JPEGs may be decoded at a reduced scale whose short side stays >= this many
    # pixels (a task sets it when it shrinks images anyway; see ImageLoader.load).
    decode_short_side: int | None = None

    def __init__(self, model: LoadedModel, *, device: str | torch.device = "auto",
                 batch_size: int | None = None, max_pixels: int | None = None,
                 bgr: bool = False, channels_last: bool | None = None,
                 decode_workers: int | None = None):
        if batch_size is not None and batch_size < 1:
            raise OptionError(f"batch_size must be >= 1, got {batch_size}")
        if decode_workers is not None and decode_workers < 0:
            raise OptionError(f"decode_workers must be >= 0, got {decode_workers}")
        self.model = model
        self.device = resolve_device(device)
        # CPU: small batches keep activations in cache (BENCHMARKS.md: mobilenet_v2 and
        # resnet18 run fastest per image at 4); accelerators want larger ones.
        self.batch_size = batch_size or (4 if self.device.type == "cpu" else 32)
        self.module = model.module.to(self.device).eval()
        # NHWC ("channels_last") is what oneDNN and cuDNN convolutions run fastest on
        # (BENCHMARKS.md: 1.1-2x on CPU); None means "if the model has 2-D convolutions".
        if channels_last is None:
            channels_last = self.device.type != "mps" and _has_conv2d(self.module)
        self.channels_last = channels_last
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.loader = ImageLoader(max_pixels=max_pixels, bgr=bgr)
        # Threads decoding + preprocessing batches ahead of the model, and the model's own threads
        # meanwhile (torchinfer.runner.plan). None on the CPU: chosen from the first batches.
        self.decode_workers = decode_workers
        self.pipeline: PipelinePlan | None = fixed_plan(self.device, decode_workers)
        # What runs the model (set_backend); eager float32 unless asked otherwise.
        self.backend_report: BackendReport | None = None
        self._auto_candidates: list[Candidate] | None = None

    # --- what a task defines ---------------------------------------------------------------

    @abstractmethod
    def preprocess(self, images: Sequence[Image.Image], sources: Sequence[str]) -> Batch:
        """Turn decoded RGB images into one CPU batch. Keep uint8 if you can: the base class
        moves the batch to the device and calls ``prepare`` there, where conversion is cheap."""

    normalise: Normalise | None = None  # set by a task that feeds normalised floats

    def prepare(self, tensor: torch.Tensor) -> torch.Tensor:
        """Device-side part of preprocessing: uint8 -> normalised float (``normalise``)."""
        return self.normalise(tensor) if self.normalise is not None else tensor

    def forward(self, tensor: torch.Tensor, batch: Batch | None = None) -> Any:
        """Run the model. ``batch`` carries per-image metadata for tasks that need it."""
        return self.module(tensor)

    @abstractmethod
    def postprocess(self, raw: Any, batch: Batch) -> list[R]:
        """One result per image of the batch, in order."""

    @abstractmethod
    def failed(self, source: str, reason: str) -> R:
        """The result recorded for an input that could not be processed."""

    # --- choosing the backend ------------------------------------------------------------------

    def set_backend(self, backend: str = "torch", precision: str = "fp32", *,
                    verify: bool = True) -> None:
        """Run the model on ``backend`` ("torch", "torchscript", "onnxruntime" or "auto") in
        ``precision`` ("fp32", "bf16", "fp16"). Each candidate is verified against this float32
        eager model on photographs preprocessed by this predictor and refused (BackendError)
        beyond its precision's tolerance; "auto" times the verified ones on the first real batch
        and keeps the fastest. ``backend_report`` says what runs and why."""
        from ..runtime import backends as runtime

        runtime.check_choice(backend, precision)
        if (backend, precision) == ("torch", "fp32"):
            return
        if not self.supports_backends:
            raise runtime.BackendError(f"{self.model.name} runs on torch in fp32 only: "
                                       f"{self.supports_backends_reason}")
        batches = self.verification_batches()
        reference = self.module
        candidates = [runtime.build(self.model, self.module, self.task, b, p, self.device,
                                    batches[0])
                      for b, p in runtime.candidates_for(backend, precision, self.device)]
        if verify:
            candidates = [runtime.verify(c, reference, batches, self.task) for c in candidates]
        if backend == "auto":
            self._auto_candidates = candidates  # timed on the first real batch (_run)
            return
        chosen = candidates[0]
        if not chosen.usable:
            raise runtime.BackendError(runtime.refusal(chosen))
        self._use(chosen)
        self.backend_report = runtime.BackendReport(
            chosen, candidates, "requested" + ("" if verify else ", not verified"))

    supports_backends: bool = True
    supports_backends_reason: str = ""

    def _use(self, candidate: Candidate) -> None:
        self.module = candidate.module
        if candidate.backend == "onnxruntime":
            self.channels_last = False  # the session takes NCHW: reorder once, in uint8
        if self.decode_workers is None and self.device.type == "cpu":
            self.pipeline = None  # another model: its cost per image is measured again

    def verification_batches(self) -> list[torch.Tensor]:
        """The photographs (torchinfer.testing) through this predictor's own preprocess and
        prepare, as device batches of equal-shaped images."""
        from ..testing import load_photographs

        groups: dict[tuple[int, ...], list[torch.Tensor]] = {}
        for name, img in load_photographs().items():
            tensor = self.preprocess([img], [name]).tensor
            groups.setdefault(tuple(tensor.shape[1:]), []).append(tensor)
        return [self.prepare(self._to_device(torch.cat(group))) for group in groups.values()]

    def _choose_backend(self, tensor: torch.Tensor, batch: Batch) -> None:
        from ..runtime import backends as runtime

        candidates, self._auto_candidates = self._auto_candidates or [], None
        reference = self.module

        def run(module: torch.nn.Module) -> None:
            self.module = module
            self.forward(tensor, batch)
            self._sync()

        try:
            chosen, reason = runtime.pick_fastest(candidates, run, len(batch.sources))
        finally:
            self.module = reference
        self._use(chosen)
        self.backend_report = runtime.BackendReport(chosen, candidates, reason)
        for c in candidates:  # only the chosen one stays in memory
            if c is not chosen:
                c.module = None

    # --- running -----------------------------------------------------------------------------

    @overload
    def __call__(self, inputs: ImageInput) -> R: ...
    @overload
    def __call__(self, inputs: list[ImageInput] | tuple[ImageInput, ...]) -> list[R]: ...

    def __call__(self, inputs: Any) -> R | list[R]:
        """One input -> one result (raises InputError on a bad input);
        a list/tuple -> a list of results, one per input, failures recorded in ``error``.
        Folders, globs and list files go through ``stream``."""
        if isinstance(inputs, (list, tuple)):
            return list(self.stream(inputs))
        result = self._run(self._decode([(describe_source(inputs), inputs)]))[0]
        if result.error is not None:
            raise InputError(result.source, result.error)
        return result

    def stream(self, source: ImageInput | Iterable[ImageInput], *,
               batch_size: int | None = None, video_stride: int = 1) -> Iterator[R]:
        """Yield one result per input, in input order, with a bounded number of batches in memory.

        ``source`` may be a path to a file, folder (recursive), glob or ``.txt`` list of paths,
        ``"-"`` (one image's bytes on standard input), or any iterable of inputs; a video file
        gives every ``video_stride``-th frame, named ``<path>#frame=<i>&t=<seconds>``.

        Decoding runs in turn with the model (a batch per core decoded at once while the model
        waits), or overlapped: ``decode_workers`` threads decode ahead (at most
        ``decode_workers + 1`` batches) while the model runs on the other cores. Results come
        in input order either way. By default an accelerator decodes on up to 8 threads, and
        the CPU times its first batches in turn, then overlapped, and keeps the faster
        (``torchinfer.runner.plan``; the choice is kept in ``self.pipeline``)."""
        size = batch_size or self.batch_size
        chunks = _chunks(_iter_inputs(source, video_stride), size)
        if self.pipeline is None:
            self.pipeline = yield from self._probe(chunks)
        # not measured (too few good batches so far): the rest in turn, the next stream measures
        plan = self.pipeline or in_turn(usable_cpus(), "in turn: not measured yet")
        with self._model_threads(plan.model_threads):
            if plan.overlapped:
                yield from self._overlapped(chunks, plan.decode_workers)
            else:
                yield from self._in_turn(chunks, plan.decode_workers)

    def _in_turn(self, chunks: Iterator[list[tuple[str, Any]]], workers: int,
                 timings: list[Timing] | None = None) -> Iterator[R]:
        """Decode, then run the model, in turn: ``workers`` batches decoded at once, one per
        thread, while the model waits (fewer than 2: decoded on this thread)."""
        if workers < 2:
            for chunk in chunks:
                yield from self._run(self._decode(chunk), timings=timings)
            return
        with ThreadPoolExecutor(max_workers=workers, initializer=torch.set_num_threads,
                                initargs=(1,), thread_name_prefix="torchinfer-decode") as pool:
            while group := list(itertools.islice(chunks, workers)):
                t0 = time.perf_counter()
                decoded = list(pool.map(self._decode, group))
                wait_s = (time.perf_counter() - t0) / len(group)
                for batch in decoded:
                    yield from self._run(batch, wait_s=wait_s, timings=timings)

    def _overlapped(self, chunks: Iterator[list[tuple[str, Any]]], workers: int,
                    timings: list[Timing] | None = None) -> Iterator[R]:
        """Batches decoded by ``workers`` threads, at most ``workers + 1`` ahead, run in order."""
        # one torch thread per decoder (stacking a batch is a torch op): their cores are
        # counted in the decode threads, not shared with the model's
        with ThreadPoolExecutor(max_workers=workers, initializer=torch.set_num_threads,
                                initargs=(1,), thread_name_prefix="torchinfer-decode") as pool:
            ahead: collections.deque[Future[_Decoded]] = collections.deque()
            for chunk in chunks:
                ahead.append(pool.submit(self._decode, chunk))
                if len(ahead) > workers:
                    yield from self._run_next(ahead, timings)
            while ahead:
                yield from self._run_next(ahead, timings)

    def _probe(self, chunks: Iterator[list[tuple[str, Any]]]) -> Generator[R, None, PipelinePlan | None]:
        """Run the first batches in turn, then (if it may pay) overlapped, timed, and choose
        the plan (torchinfer.runner.plan). The first batch of each way is warm-up, not counted."""
        cores = usable_cpus()
        turns: list[Timing] = []
        with self._model_threads(None):
            yield from self._in_turn(itertools.islice(chunks, PROBE_FULL), cores, turns)
        if len(turns) < PROBE_FULL:
            return None
        decode_ms = _ms_per_image(turns, lambda t: t.decode_s)
        model_ms = min(t.main_s * 1000 / t.images for t in turns[1:])
        in_turn_ms = _ms_per_image(turns[1:], lambda t: t.wait_s + t.main_s)
        split = split_to_try(decode_ms, model_ms, cores)
        if not split:
            return choose(in_turn_ms, cores, detail=f"decode {decode_ms:.2f} + model "
                                                    f"{model_ms:.2f} ms/img")
        overlapped: list[Timing] = []
        with self._model_threads(cores - split):
            yield from self._overlapped(itertools.islice(chunks, PROBE_SPLIT), split, overlapped)
        if len(overlapped) < 2:  # the warm-up batch alone says nothing
            return None
        return choose(in_turn_ms, cores, split,
                      _ms_per_image(overlapped[1:], lambda t: t.wait_s + t.main_s))

    def _run_next(self, ahead: collections.deque[Future[_Decoded]],
                  timings: list[Timing] | None = None) -> list[R]:
        t0 = time.perf_counter()
        decoded = ahead.popleft().result()
        return self._run(decoded, wait_s=time.perf_counter() - t0, timings=timings)

    @contextlib.contextmanager
    def _model_threads(self, threads: int | None) -> Iterator[None]:
        """Run the model on ``threads`` intra-op threads meanwhile (None: its default). Torch's
        count is set for the calling thread, which also prepares and postprocesses, and given
        back afterwards. An ONNX Runtime session is sized when created, so it keeps its size;
        its threads spin between calls, so torch, which then only normalises and postprocesses,
        keeps to one thread rather than spin against them (BENCHMARKS.md)."""
        set_threads = getattr(self.module, "set_threads", None)
        if set_threads is not None:
            set_threads(threads or usable_cpus())
            threads = 1
        if threads is None:
            yield
            return
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    def _decode(self, items: list[tuple[str, Any]]) -> _Decoded:
        t0 = time.perf_counter()
        images, sources, errors = [], [], {}
        for i, (name, item) in enumerate(items):
            sources.append(name)
            try:
                images.append(self.loader.load(item, name, min_short_side=self.decode_short_side))
            except InputError as exc:
                errors[i] = exc.reason
        ok = [i for i in range(len(sources)) if i not in errors]
        batch = self._preprocess_isolating(images, ok, sources, errors) if images else None
        return _Decoded(sources, batch, errors, time.perf_counter() - t0)

    def _preprocess_isolating(self, images: list[Image.Image], ok: list[int],
                              sources: list[str], errors: dict[int, str]) -> Batch | None:
        """The batch of the decoded images; when one image is refused by preprocess (an
        InputError), it becomes that input's failure and the others still run."""
        try:
            return self.preprocess(images, [sources[i] for i in ok])
        except InputError:
            pass  # find which one, below
        kept: list[Image.Image] = []
        for image, i in zip(images, list(ok)):
            try:
                self.preprocess([image], [sources[i]])
                kept.append(image)
            except InputError as exc:
                errors[i] = exc.reason
                ok.remove(i)
        return self.preprocess(kept, [sources[i] for i in ok]) if kept else None

    def _run(self, decoded: _Decoded, *, wait_s: float = 0.0,
             timings: list[Timing] | None = None) -> list[R]:
        """The seed's three lines, timed: preprocess (finished on the device), model, postprocess.

        ``wait_s``: how long the model waited for this batch to be decoded; ``timings`` gets
        the batch's Timing, for the pipeline plan."""
        results: list[R] = []
        if decoded.batch is not None:
            n = len(decoded.batch.sources)
            with torch.inference_mode():
                t0 = time.perf_counter()
                tensor = self.prepare(self._to_device(decoded.batch.tensor))
                self._sync()
                prepare_s = time.perf_counter() - t0
                if self._auto_candidates is not None:  # once, not charged to this batch
                    self._choose_backend(tensor, decoded.batch)
                t1 = time.perf_counter()
                raw = self.forward(tensor, decoded.batch)
                self._sync()
                t2 = time.perf_counter()
                results = self.postprocess(raw, decoded.batch)
                t3 = time.perf_counter()
            speed = {"preprocess": (decoded.preprocess_s + prepare_s) * 1000 / n,
                     "inference": (t2 - t1) * 1000 / n,
                     "postprocess": (t3 - t2) * 1000 / n,
                     "wait": wait_s * 1000 / n}
            if timings is not None:
                timings.append(Timing(decoded.preprocess_s, prepare_s + t3 - t1, wait_s, n))
            results = [replace(r, speed=speed) for r in results]
        ok = iter(results)
        return [self.failed(src, decoded.errors[i]) if i in decoded.errors else next(ok)
                for i, src in enumerate(decoded.sources)]

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.ndim == 4:
            # a batch of stacked HWC images is already channels_last (no copy); other models
            # get NCHW, reordered here in uint8 rather than later as 4x the bytes of float
            tensor = tensor.contiguous(memory_format=torch.channels_last if self.channels_last
                                       else torch.contiguous_format)
        if self.device.type == "cuda":
            # pinned host memory lets the copy overlap with work already queued on the GPU
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def _sync(self) -> None:
        # CUDA runs asynchronously: without a sync, stage times would be launch times.
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _ms_per_image(timings: list[Timing], seconds: Callable[[Timing], float]) -> float:
    return sum(seconds(t) for t in timings) * 1000 / sum(t.images for t in timings)


def _has_conv2d(module: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in module.modules())


def _iter_inputs(source: Any, video_stride: int = 1) -> Iterator[tuple[str, Any]]:
    """(name, item) pairs; paths that name folders, globs or list files are expanded, videos
    into their frames."""
    items = [source] if isinstance(source, (str, Path, os.PathLike)) else source
    if isinstance(items, (bytes, Image.Image, torch.Tensor)) or hasattr(items, "__array__"):
        items = [items]
    for item in items:
        if isinstance(item, str) and item == "-":  # the bytes of one image on standard input
            yield "<stdin>", sys.stdin.buffer.read()
        elif isinstance(item, (str, os.PathLike)):
            for path in expand_sources([item]):
                if is_video(path) or is_webcam(path):
                    yield from iter_frames(path, video_stride)
                else:
                    yield path, path
        else:
            yield describe_source(item), item


def _chunks(it: Iterator[tuple[str, Any]], size: int) -> Iterator[list[tuple[str, Any]]]:
    while chunk := list(itertools.islice(it, size)):
        yield chunk
