"""The Predictor: every task is ``preprocess -> forward -> postprocess``.

The base class owns what is the same for all tasks: decoding inputs into a batch, the device,
``torch.inference_mode``, per-stage timing, and turning a bad input into an error record
instead of a dead run. A task subclass only says how to make a batch from images and how to
read the model's output.

What it does not own: streaming many inputs and sharing the cores between decoding and the
model (``runner.streamer``), and what runs the model (``runtime``: a faster backend is handed
in with ``use_module``). A server or a Ray actor holds one Predictor and feeds it batches with
``decode`` and ``run``.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar, Generic, TypeVar, overload

import torch
from PIL import Image

from ..devices import resolve_device
from ..errors import InputError, OptionError
from ..models import LoadedModel
from ..models.folding import fold_batch_norms
from ..results import Result
from ..runner.batches import Batch, Decoded, Timing
from ..runner.images import ImageInput, ImageLoader
from ..runner.inputs import Source, iter_sources, one_source
from ..runner.plan import PipelinePlan, fixed_plan
from ..runner.streamer import Streamer

R = TypeVar("R", bound=Result)

__all__ = ["Batch", "Normalise", "Predictor"]


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


class Predictor(ABC, Generic[R]):
    """Base class of all task predictors.

    ``predictor(x)`` runs one input and returns one result (raising InputError if the input is
    bad); ``predictor([x, y])`` returns a list with one result per input (bad inputs get a result
    with ``error`` set); ``predictor.stream(source)`` yields results lazily, in input order.
    """

    task: ClassVar[str]
    # A reduced JPEG decode keeps at least this many times the size the task resizes the
    # image to (``decode_request``): the resize then still does the real filtering
    # (BENCHMARKS.md: the margins measured against a full decode)
    decode_margin: ClassVar[float] = 2.0
    # Whether preprocess shrinks images (``resize_target``): only then may decoding reduce them
    shrinks_images: ClassVar[bool] = False
    normalise: Normalise | None = None  # set by a task that feeds normalised floats
    # Whether another runtime may run the model (the runtime asks; a task that cannot says why)
    supports_backends: bool = True
    supports_backends_reason: str = ""

    def __init__(self, model: LoadedModel, *, device: str | torch.device = "auto",
                 batch_size: int | None = None, max_pixels: int | None = None,
                 bgr: bool = False, channels_last: bool | None = None,
                 decode_workers: int | None = None, exact_decode: bool = False):
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
        # Batch norms folded into their convolutions: the same answers up to rounding, one
        # pass over the activations less each (models.folding); model.module is kept as it is
        self.module = fold_batch_norms(self.module)
        self.loader = ImageLoader(max_pixels=max_pixels, bgr=bgr)
        # Big JPEGs decoded at 1/2..1/8 scale (``decode_request``) unless exact pixels are asked
        # for or the task keeps every pixel; the runtime checks it on photographs through the
        # model and turns it off, saying why (``decode_report``), if it changes the answers.
        self.reduced_decode = not self.reads_every_pixel() and not exact_decode
        self.decode_report: Any = None  # a runtime.decoding.DecodeReport, once checked
        # How decoding and the model share the cores (runner.plan); None on the CPU: measured
        # on the first batches of a stream, then kept for this predictor.
        self.decode_workers = decode_workers
        self.pipeline: PipelinePlan | None = fixed_plan(self.device, decode_workers)
        # What runs the model and why: the runtime that chose it sets its report (a
        # runtime.candidates.BackendReport; typed loosely, since tasks sit below the runtimes).
        # None: eager float32.
        self.backend_report: Any = None
        # What is left to do before the first batch (the runtime's checks and choice of
        # backend, handed in by ``ti.load``); run once by ``prepare``
        self.preparation: Callable[[], None] | None = None
        self._prepare_lock = threading.RLock()
        self._streamer = Streamer(self)

    # --- what a task defines ---------------------------------------------------------------

    @abstractmethod
    def preprocess(self, images: Sequence[Image.Image], sources: Sequence[str]) -> Batch:
        """Turn decoded RGB images into one CPU batch. Keep uint8 if you can: the base class
        moves the batch to the device and calls ``prepare`` there, where conversion is cheap."""

    def reads_every_pixel(self) -> bool:
        """Whether preprocess keeps the image at its size (then no JPEG is decoded reduced):
        tasks that do not shrink images, and models run at the image's own size."""
        return not self.shrinks_images

    def resize_target(self, size: tuple[int, int]) -> tuple[int, int] | None:
        """The (w, h) ``preprocess`` shrinks an upright image of ``size`` (w, h) to; None for a
        task that reads the pixels as they are (then JPEGs are always decoded in full)."""
        return None

    def decode_request(self, size: tuple[int, int]) -> tuple[int, int]:
        """The smallest (w, h) an image of ``size`` may be decoded at: ``decode_margin`` times
        its resize target, never more than the image."""
        target = self.resize_target(size) or size
        m = self.decode_margin
        return min(size[0], math.ceil(target[0] * m)), min(size[1], math.ceil(target[1] * m))

    def prepare(self) -> None:
        """Run what was left for before the first batch (``preparation``: measuring and
        verifying the runtimes, checking the reduced decode; remembered per model and
        machine) now, rather than inside the first call. Safe from several threads; a no-op
        once done. A server calls it at start, so no request waits for it."""
        if self.preparation is None:
            return
        with self._prepare_lock:  # other threads wait here until it is done
            if self.preparation is not None:
                self.preparation()  # raising, it stays pending: tried again next time
                self.preparation = None

    def device_preprocess(self, tensor: torch.Tensor) -> torch.Tensor:
        """Device-side part of preprocessing: uint8 -> normalised float (``normalise``)."""
        return self.normalise(tensor) if self.normalise is not None else tensor

    def forward(self, tensor: torch.Tensor, batch: Batch | None = None) -> Any:
        """Run the model. ``batch`` carries per-image metadata for tasks that need it."""
        return self.module(tensor)

    @abstractmethod
    def postprocess(self, raw: Any, batch: Batch) -> list[R]:
        """One result per image of the batch, in order. A task with per-request options (its
        manifest marks them ``per_request``) takes each as a keyword-only argument, None by
        default: the value of this call, in place of the predictor's own setting (a server
        request's, checked there). The predictor is shared and never changed by a request."""

    @abstractmethod
    def failed(self, source: str, reason: str) -> R:
        """The result recorded for an input that could not be processed."""

    # --- what runs the model -----------------------------------------------------------------

    def use_module(self, module: torch.nn.Module, *, channels_last: bool | None = None) -> None:
        """Run ``module`` (same inputs and outputs as the model) from now on. ``channels_last``:
        whether it wants NHWC input (a session of another runtime takes NCHW)."""
        self.module = module
        if channels_last is not None:
            self.channels_last = channels_last
        if self.decode_workers is None and self.device.type == "cpu":
            self.pipeline = None  # another model: its cost per image is measured again

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
        self.prepare()  # before decoding: the checks may change how images decode
        result = self.run(self.decode([one_source(inputs)]))[0]
        if result.error is not None:
            raise InputError(result.source, result.error)
        return result

    def stream(self, source: ImageInput | Iterable[ImageInput], *,
               batch_size: int | None = None, video_stride: int = 1) -> Iterator[R]:
        """Yield one result per input, in input order, with a bounded number of batches in memory.

        ``source`` may be a path to a file, folder (recursive), glob or ``.txt`` list of paths,
        ``"-"`` (one image's bytes on standard input), or any iterable of inputs; a video file
        gives every ``video_stride``-th frame, named ``<path>#frame=<i>&t=<seconds>``. How
        decoding and the model share the cores is the streamer's (``runner.streamer``)."""
        for _, result in self.stream_sources(iter_sources(source, video_stride=video_stride),
                                             batch_size=batch_size):
            yield result

    def stream_sources(self, sources: Iterable[Source], *,
                       batch_size: int | None = None) -> Iterator[tuple[Source, R]]:
        """(source, result) for typed ``Source`` items already expanded (``runner.inputs``)."""
        self.prepare()  # before decoding: the checks may change how images decode
        return self._streamer.stream(sources, batch_size or self.batch_size)

    def decode(self, sources: list[Source]) -> Decoded:
        """Decode and preprocess ``sources`` into one CPU batch; the ones that fail are kept
        apart with their reasons (any thread may call this). A caller driving ``decode`` and
        ``run`` itself calls ``prepare()`` first: its checks may change how images decode."""
        t0 = time.perf_counter()
        images, errors = self.load_images(sources)
        decoded = self.preprocess_images(sources, images, errors)
        decoded.preprocess_s = time.perf_counter() - t0
        return decoded

    def load_images(self, sources: list[Source]) -> tuple[list[Image.Image], dict[int, str]]:
        """The decoded images of the sources that decode, and the others' reasons (by
        position)."""
        images: list[Image.Image] = []
        errors: dict[int, str] = {}
        for i, source in enumerate(sources):
            try:
                images.append(self.loader.load(
                    source.item, source.name,
                    min_size=self.decode_request if self.reduced_decode else None))
            except InputError as exc:
                errors[i] = exc.reason
        return images, errors

    def preprocess_images(self, sources: list[Source], images: list[Image.Image],
                          errors: dict[int, str]) -> Decoded:
        """``decode``'s second half: the batch of images already decoded (one per source not
        in ``errors``); an image that preprocess refuses joins ``errors`` (a copy)."""
        t0 = time.perf_counter()
        errors = dict(errors)
        names = [s.name for s in sources]
        ok = [i for i in range(len(sources)) if i not in errors]
        batch = self._preprocess_isolating(images, ok, names, errors) if images else None
        return Decoded(list(sources), batch, errors, time.perf_counter() - t0)

    def _preprocess_isolating(self, images: list[Image.Image], ok: list[int],
                              names: list[str], errors: dict[int, str]) -> Batch | None:
        """The batch of the decoded images; when one image is refused by preprocess (an
        InputError), it becomes that input's failure and the others still run."""
        try:
            return self.preprocess(images, [names[i] for i in ok])
        except InputError:
            pass  # find which one, below
        kept: list[Image.Image] = []
        for image, i in zip(images, list(ok)):
            try:
                self.preprocess([image], [names[i]])
                kept.append(image)
            except InputError as exc:
                errors[i] = exc.reason
                ok.remove(i)
        return self.preprocess(kept, [names[i] for i in ok]) if kept else None

    def run(self, decoded: Decoded, *, wait_s: float = 0.0,
            timings: list[Timing] | None = None,
            options: Mapping[str, Any] | None = None) -> list[R]:
        """The seed's three lines, timed: preprocess (finished on the device), model, postprocess.
        One result per source of ``decoded``, failures included, in order.

        ``wait_s``: how long the model waited for this batch to be decoded; ``timings`` gets
        the batch's Timing, for the pipeline plan; ``options``: per-request options for
        ``postprocess``, this call only."""
        results: list[R] = []
        if self.preparation is not None:  # a caller driving batches itself: not charged
            self.prepare()
        if decoded.batch is not None:
            n = len(decoded.batch.sources)
            with torch.inference_mode():
                t0 = time.perf_counter()
                tensor = self.device_preprocess(self.to_device(decoded.batch.tensor))
                self.sync()
                prepare_s = time.perf_counter() - t0
                t1 = time.perf_counter()
                raw = self.forward(tensor, decoded.batch)
                self.sync()
                t2 = time.perf_counter()
                results = self.postprocess(raw, decoded.batch, **(options or {}))
                t3 = time.perf_counter()
            speed = {"preprocess": (decoded.preprocess_s + prepare_s) * 1000 / n,
                     "inference": (t2 - t1) * 1000 / n,
                     "postprocess": (t3 - t2) * 1000 / n,
                     "wait": wait_s * 1000 / n}
            if timings is not None:
                timings.append(Timing(decoded.preprocess_s, prepare_s + t3 - t1, wait_s, n))
            results = [replace(r, speed=speed) for r in results]
        ok = iter(results)
        return [self.failed(src.name, decoded.errors[i]) if i in decoded.errors else next(ok)
                for i, src in enumerate(decoded.sources)]

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A CPU batch on the model's device, in the memory layout the model wants."""
        if tensor.ndim == 4:
            # a batch of stacked HWC images is already channels_last (no copy); other models
            # get NCHW, reordered here in uint8 rather than later as 4x the bytes of float
            tensor = tensor.contiguous(memory_format=torch.channels_last if self.channels_last
                                       else torch.contiguous_format)
        if self.device.type == "cuda":
            # pinned host memory lets the copy overlap with work already queued on the GPU
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def sync(self) -> None:
        """Wait for the device: CUDA runs asynchronously, and without a sync stage times would
        be launch times."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _has_conv2d(module: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in module.modules())
