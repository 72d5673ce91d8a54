"""Turn anything a user may hand us into an 8-bit RGB PIL image, or an InputError naming it.

Accepted: a path, raw bytes, a PIL image, a numpy array (HW or HWC; RGB, or BGR as OpenCV gives
with ``bgr=True``) and a torch tensor (HW or CHW). The PIL image is the one canonical form
because torchvision's reference transforms run on PIL: resizing the same PIL image the same way
is what makes our inputs equal the reference exactly, not just approximately.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # libjpeg-turbo behind a thin binding: the same pixels as Pillow's, decoded faster
    import simplejpeg
except ImportError:  # pragma: no cover - a platform without its wheel: Pillow decodes alone
    simplejpeg = None

from ..errors import InputError, OptionError, first_line
from ..storage.uris import is_uri, read_bytes
from ..storage.uris import unreadable as unreadable_uri
from .limits import check_resize
from .sources import open_error, unreadable
from .video import Unreadable

ImageInput = Union[str, Path, bytes, Image.Image, np.ndarray, torch.Tensor]

# The smallest (w, h) a caller may be handed for an image of (w, h) pixels, upright: what it
# will shrink the image to, times a margin (see Predictor.decode_request)
SizeRequest = Callable[[tuple[int, int]], tuple[int, int]]

# ``img.info`` key of the upright (w, h) of the picture a reduced decode stands for: results
# are given in the file's pixels (``full_size``)
FULL_SIZE = "torchinfer.full_size"

# EXIF orientation -> the transpose that makes the picture upright (as ImageOps.exif_transpose)
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


@dataclass(frozen=True)
class ImageLoader:
    """Decodes inputs to RGB with EXIF orientation applied and a pixel-count limit enforced.

    ``max_pixels`` defaults to Pillow's decompression-bomb limit. The check runs on the header,
    before any pixel is decoded, so a file claiming 100,000 x 100,000 pixels costs nothing.
    ``resize_size``: the task's resize (``PreprocessConfig.resize_size``); images that it would
    blow up are refused on their header too (``limits.check_resize``).

    Pillow keeps its own, process-wide limit (``PIL.Image.MAX_IMAGE_PIXELS``), which this class
    never changes: Pillow refuses images over twice that limit whatever ``max_pixels`` says
    (the reason then says so), and warns (DecompressionBombWarning) between once and twice it.
    Letting a higher ``max_pixels`` through would take changing that global: Pillow has no
    per-call limit, and reads the global in some twenty places besides ``Image.open`` (GIF
    frames, TIFF tiles, ``Image.crop``...), so opening files some other way would not do.
    """

    max_pixels: int | None = None
    bgr: bool = False  # numpy inputs are BGR (cv2.imread); ignored for other kinds
    resize_size: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.max_pixels is not None and self.max_pixels <= 0:
            raise OptionError(f"max_pixels must be positive, got {self.max_pixels}")

    @property
    def pixel_limit(self) -> int:
        if self.max_pixels is not None:
            return self.max_pixels
        return Image.MAX_IMAGE_PIXELS or 89_478_485  # Pillow's default when it was disabled

    def load(self, item: ImageInput, source: str | None = None, *,
             min_short_side: int | None = None,
             min_size: SizeRequest | None = None) -> Image.Image:
        """Return an RGB image for ``item``; raise InputError naming ``source`` on any problem.

        Reduced decoding: ``min_size`` maps the picture's upright (w, h) to the smallest (w, h)
        the caller needs (``min_short_side``: a short side at least that long); a JPEG may then
        be decoded at 1/2, 1/4 or 1/8 scale directly (libjpeg's DCT scaling), never below
        that. Decoding a 12-megapixel photo this way is several times faster; pixels differ
        slightly from a full decode + resize (BENCHMARKS.md). The returned image then carries
        the picture's own size (``full_size``). Without either, every pixel is decoded by
        Pillow: torchvision's reference pixels.
        """
        if min_short_side and min_size is None:
            min_size = short_side_at_least(min_short_side)
        name = source or describe_source(item)
        if isinstance(item, Unreadable):
            raise InputError(name, item.reason)
        if isinstance(item, str) and is_uri(item):  # s3://, gs://...: read whole, then decoded
            reason = unreadable_uri(item)
            if reason is not None:
                raise InputError(name, reason)
            try:
                item = read_bytes(item)
            except OSError as exc:
                raise InputError(name, first_line(exc)) from None
        if isinstance(item, (str, Path)):
            path = os.fspath(item)
            reason = unreadable(path)  # not found, a folder, empty, a named pipe... (one stat)
            if reason is not None:
                raise InputError(name, reason)
            try:
                file = open(path, "rb")  # closed below, after decoding
            except OSError as exc:  # permission denied, under ACLs or a read-only mount too
                raise InputError(name, open_error(exc, path)) from None
            with file:
                return self._decode(file, name, min_size)
        if isinstance(item, (bytes, bytearray, memoryview)):
            if len(item) == 0:
                raise InputError(name, "empty bytes")
            return self._decode(io.BytesIO(item), name, min_size)
        if isinstance(item, Image.Image):
            self._check_size(item.size, name)
            with _decoding_errors(self, name):  # a lazily opened image decodes only now
                img = to_rgb(ImageOps.exif_transpose(item), name)
            self._check_size(img.size, name)
            return img
        if isinstance(item, np.ndarray):
            return self._from_array(item, name, bgr=self.bgr)
        if isinstance(item, torch.Tensor):
            return self._from_tensor(item, name)
        raise InputError(name, f"unsupported input type {type(item).__name__}: expected a path, "
                               "bytes, PIL image, numpy array or tensor")

    def _decode(self, fp: Any, name: str, min_size: SizeRequest | None) -> Image.Image:
        # Pillow's DecompressionBombWarning is left alone: silencing it takes
        # warnings.catch_warnings, which swaps the process-wide filter list and is not
        # thread-safe (decoding runs on worker threads). Our own limit applies either way.
        with _decoding_errors(self, name), Image.open(fp) as img:
            self._check_size(img.size, name)
            if min_size is not None and img.format == "JPEG":
                reduced = self._reduced_jpeg(img, fp, min_size, name)
                if reduced is not None:
                    return reduced
            img.load()  # decode now, inside the try, so corrupt data is reported here
            # in place: without, an upright image is copied (0.2 ms per megapixel);
            # leaving the with block closes the file, not the decoded pixels
            ImageOps.exif_transpose(img, in_place=True)
            rgb = to_rgb(img, name)
        # a few decoders set the size from what they decoded (EPS, ICO entries that disagree
        # with their directory)
        self._check_size(rgb.size, name)
        return rgb

    def _reduced_jpeg(self, img: Image.Image, fp: Any, min_size: SizeRequest, name: str
                      ) -> Image.Image | None:
        """The JPEG ``img`` (opened, header read) decoded at the smallest DCT scale that
        ``min_size`` allows, upright, carrying its full size; None when no reduction helps
        (then Pillow decodes it in full)."""
        stored = img.size
        orientation = img.getexif().get(0x0112, 1)
        turned = orientation in (5, 6, 7, 8)  # stored lying down: upright is (h, w)
        upright = (stored[1], stored[0]) if turned else stored
        want = min_size(upright)
        want = (want[1], want[0]) if turned else want
        # the largest of libjpeg's 1/2, 1/4, 1/8 that stays at least ``want``: the scales
        # Pillow's draft has too, so both decoders give the same pixels (libjpeg-turbo also
        # has 3/8, 5/8...: those would make the answers depend on which one is installed)
        scale = 1
        while scale < 8 and all(math.ceil(s / (2 * scale)) >= v for s, v in zip(stored, want)):
            scale *= 2
        if scale == 1:
            return None  # 1/2 would be too small: decode every pixel
        request = (math.ceil(stored[0] / scale), math.ceil(stored[1] / scale))
        decoded = None
        if simplejpeg is not None and img.mode == "RGB":
            fp.seek(0)
            try:
                decoded = Image.fromarray(simplejpeg.decode_jpeg(
                    fp.read(), colorspace="RGB", min_width=request[0], min_height=request[1]))
            except ValueError:  # what libjpeg warns about: Pillow's decoder has its say below
                decoded = None
        if decoded is None:  # CMYK, greyscale, or data simplejpeg refuses
            img.draft("RGB", request)
            img.load()
            decoded = to_rgb(img, name)
        if orientation in _UPRIGHT:
            decoded = decoded.transpose(_UPRIGHT[orientation])
        decoded.info[FULL_SIZE] = upright
        return decoded

    def _bomb_reason(self, exc: Image.DecompressionBombError) -> str:
        """Why Pillow's own limit refused an image, and what would let it through."""
        pillow = Image.MAX_IMAGE_PIXELS
        if pillow is None or self.pixel_limit <= 2 * pillow:  # ours refuses it as well
            return f"image too large: {exc}"
        return (f"image too large for Pillow: {exc} Pillow's limit is PIL.Image.MAX_IMAGE_PIXELS, "
                "a process-wide setting that torchinfer leaves alone: raise it in your program "
                f"to decode images up to max_pixels={self.pixel_limit:,}")

    def _check_size(self, size: tuple[int, int], name: str) -> None:
        w, h = size
        if w == 0 or h == 0:
            raise InputError(name, f"image has no pixels ({w}x{h})")
        if w * h > self.pixel_limit:
            raise InputError(name, f"image is {w}x{h} = {w * h:,} pixels, over the limit of "
                                   f"{self.pixel_limit:,} (raise max_pixels if it is genuine)")
        check_resize(size, self.resize_size, name)

    def _from_array(self, arr: np.ndarray, name: str, *, bgr: bool) -> Image.Image:
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
            raise InputError(name, f"array of shape {arr.shape}: expected HxW, HxWx3 or HxWx4")
        self._check_size((arr.shape[1], arr.shape[0]), name)
        arr = _to_uint8(arr, name)
        if arr.ndim == 3:
            if bgr:
                arr = arr[:, :, [2, 1, 0, 3][: arr.shape[2]]]
            arr = arr[:, :, :3]
        return to_rgb(Image.fromarray(np.ascontiguousarray(arr)), name)

    def _from_tensor(self, t: torch.Tensor, name: str) -> Image.Image:
        t = t.detach().cpu()
        if t.ndim == 3 and t.shape[0] in (1, 3, 4):
            t = t.permute(1, 2, 0)
        elif t.ndim != 2:
            raise InputError(name, f"tensor of shape {tuple(t.shape)}: expected HxW or CxHxW "
                                   "with C in 1, 3, 4")
        return self._from_array(t.numpy(), name, bgr=False)


@contextlib.contextmanager
def _decoding_errors(loader: ImageLoader, name: str) -> Iterator[None]:
    """Turn whatever Pillow raises on a bad file into an InputError naming it.

    Its decoders report malformed data with the exception of whichever line tripped over it
    (struct.error, IndexError, ZeroDivisionError, TypeError, ...): all of them are the file's
    fault, not the program's. KeyboardInterrupt and SystemExit are not Exceptions and pass.
    """
    try:
        yield
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(name, loader._bomb_reason(exc)) from exc
    except UnidentifiedImageError as exc:
        raise InputError(name, "not a recognised image format") from exc
    except MemoryError as exc:
        raise InputError(name, "not enough memory to decode the image") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow reports truncated or corrupt data as OSError ("image file is truncated").
        raise InputError(name, f"corrupt or truncated image ({exc})") from exc
    except Exception as exc:
        raise InputError(name, f"corrupt image ({_qualified_name(exc)}: {exc})") from exc


def _qualified_name(exc: Exception) -> str:
    kind = type(exc)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


def short_side_at_least(min_short_side: int) -> SizeRequest:
    """A ``min_size`` asking for a short side of at least ``min_short_side``, in proportion to
    the picture (libjpeg picks the largest reduction, 1/2 to 1/8, at least that big in both
    dimensions)."""
    def request(size: tuple[int, int]) -> tuple[int, int]:
        w, h = size
        scale = min(1.0, min_short_side / min(w, h))
        return (math.ceil(w * scale), math.ceil(h * scale))
    return request


def full_size(img: Image.Image) -> tuple[int, int]:
    """The upright (w, h) of the picture ``img`` stands for: its own size, unless it is a
    reduced decode (``ImageLoader.load`` with ``min_size``), whose results are still given in
    the file's pixels."""
    size = img.info.get(FULL_SIZE)
    return (int(size[0]), int(size[1])) if size else img.size


def _to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    """Scale an array to uint8 the way an image viewer would read it."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and (np.nanmin(arr) < 0.0 or np.nanmax(arr) > 1.0):
            raise InputError(name, f"float array with values outside [0, 1] "
                                   f"(min {np.nanmin(arr):.3g}, max {np.nanmax(arr):.3g}); "
                                   "pass uint8 in [0, 255] or float in [0, 1]")
        return np.rint(np.nan_to_num(arr) * 255.0).astype(np.uint8)
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    raise InputError(name, f"unsupported array dtype {arr.dtype}: expected uint8, uint16 or float")


def to_rgb(img: Image.Image, name: str) -> Image.Image:
    """Convert any Pillow mode to RGB without the classic pitfalls.

    16-bit and 32-bit integer modes are rescaled (Pillow's own convert clips them to 255, which
    turns a 16-bit photograph white); palette images with transparency go through RGBA; alpha
    is dropped, as in ``Image.convert("RGB")`` that training pipelines use. CMYK converts via
    Pillow (Adobe's inverted CMYK JPEGs are un-inverted by the decoder).
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        if mode == "I" and arr.size and arr.max() <= 255:
            arr8 = arr.astype(np.uint8)
        elif mode == "I":
            arr8 = (np.clip(arr, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
        else:
            arr8 = (arr.astype(np.uint16) >> 8).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 1.0)
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        return Image.fromarray(np.rint((arr - lo) * scale).astype(np.uint8), mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise InputError(name, f"cannot convert image mode {mode} to RGB ({exc})") from exc


def describe_source(item: Any) -> str:
    """A short name for an input, used in results and error records."""
    if isinstance(item, (str, Path)):
        return str(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"<bytes len={len(item)}>"
    if isinstance(item, Image.Image):
        return getattr(item, "filename", "") or f"<PIL {item.mode} {item.width}x{item.height}>"
    if isinstance(item, np.ndarray):
        return f"<ndarray {item.dtype} {'x'.join(map(str, item.shape))}>"
    if isinstance(item, torch.Tensor):
        return f"<tensor {str(item.dtype).replace('torch.', '')} {'x'.join(map(str, item.shape))}>"
    return f"<{type(item).__name__}>"
