"""Hostile images: each becomes one failed result with a precise reason, or a correct result;
none exhausts memory, hangs, or escapes as another exception type."""

from __future__ import annotations

import io
import json
import random
import re
import struct
import subprocess
import sys
import textwrap
import time
from importlib import resources

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from PIL import Image, features
from torch import nn

import torchinfer as ti
from torchinfer.runner.images import ImageLoader
from torchinfer.runner.limits import MAX_ASPECT_RATIO, check_resize
from torchinfer.tasks import segment
from torchinfer.tasks.yolo import letterbox


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


# --- the aspect-ratio rule ------------------------------------------------------------------

def test_short_side_resize_refuses_beyond_100_to_1_and_boxes_take_any_shape():
    check_resize((100 * 7, 7), (256,), "ok")  # exactly at the limit
    with pytest.raises(ti.InputError, match=r"^thin: aspect ratio 100\.14:1 \(701x7 pixels\) is "
                                            r"beyond the limit of 100:1 for a model that resizes "
                                            r"the short side to 256 pixels$"):
        check_resize((701, 7), (256,), "thin")
    with pytest.raises(ti.InputError, match=r"aspect ratio 1,000,000:1 \(1x1000000 pixels\)"):
        check_resize((1, 1_000_000), (520,), "tall")
    check_resize((1_000_000, 1), (224, 224), "fixed box")
    check_resize((1_000_000, 1), None, "no resize")
    assert MAX_ASPECT_RATIO == 100


@pytest.mark.parametrize("size", [(1_000_000, 1), (1, 1_000_000), (641, 1), (3, 5)])
def test_letterbox_of_a_thin_image_keeps_a_pixel(size):
    img = Image.new("RGB", size, (255, 0, 0))
    canvas, lb = letterbox(img, (640, 640))
    assert canvas.shape == (640, 640, 3)
    red = np.argwhere((canvas == (255, 0, 0)).all(axis=2))
    assert len(red)  # the image is in there, at least one pixel thick
    whole = torch.tensor([[0.0, 0.0, 640.0, 640.0]])
    assert lb.to_original(whole).tolist() == [[0.0, 0.0, float(size[0]), float(size[1])]]


def test_loader_refuses_on_the_header_what_the_resize_would_blow_up():
    loader = ImageLoader(resize_size=(256,))
    thin = png(1_000_000, 1)
    start = time.perf_counter()
    with pytest.raises(ti.InputError, match=r"^thin\.png: aspect ratio 1,000,000:1"):
        loader.load(thin, "thin.png")
    assert time.perf_counter() - start < 0.5
    assert loader.load(png(700, 7)).size == (700, 7)
    assert ImageLoader(resize_size=(224, 224)).load(png(1_000_000, 1)).size == (1_000_000, 1)


# --- thin images through the predictors, under a memory limit --------------------------------

CHILD = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    from PIL import Image
    import torchinfer as ti

    folder = Path(sys.argv[1])
    for name, size in (("wide", (1_000_000, 1)), ("tall", (1, 1_000_000)),
                       ("ratio100", (2000, 20)), ("normal", (96, 64))):
        Image.new("RGB", size, (200, 30, 30)).save(folder / f"{name}.png")
    normal = str(folder / "normal.png")
    predictors = {task: ti.load(task, name, device="cpu") for task, name in
                  (("classify", "shapes_classifier"), ("segment", "shapes_segmenter"),
                   ("detect", "shapes_detector"))}
    for p in predictors.values():
        p([normal, normal])  # what a first batch allocates is not the hostile inputs' doing
    vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    soft = vm + (2 << 30) if hard == resource.RLIM_INFINITY else min(vm + (2 << 30), hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    for task, predictor in predictors.items():
        names = ["wide", "tall", "normal"] + (["ratio100"] if task == "classify" else [])
        for r in predictor([str(folder / f"{n}.png") for n in names]):
            shape = (r.image_size if task == "detect" else
                     r.mask.shape if task == "segment" and r.error is None else None)
            print(json.dumps({"task": task, "image": Path(r.source).stem, "error": r.error,
                              "shape": list(shape) if shape else None}), flush=True)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc: Linux")
def test_thin_images_under_a_memory_limit(tmp_path):
    """A 1,000,000 x 1 PNG is 1 % of the pixel limit; resized to a short side of 256 it would
    be 196 GB. Once the models are loaded, the process may grow by 2 GiB at most."""
    run = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    results = {(x["task"], x["image"]): x for x in map(json.loads, run.stdout.splitlines())}
    assert len(results) == 10
    for task, short_side in (("classify", 128), ("segment", 256)):
        for image, size in (("wide", "1000000x1"), ("tall", "1x1000000")):
            assert results[task, image]["error"] == (
                f"aspect ratio 1,000,000:1 ({size} pixels) is beyond the limit of 100:1 for a "
                f"model that resizes the short side to {short_side} pixels")
    assert results["classify", "ratio100"]["error"] is None
    # the letterbox fits any shape into its box
    assert results["detect", "wide"] == {"task": "detect", "image": "wide", "error": None,
                                         "shape": [1, 1_000_000]}
    assert results["detect", "tall"]["error"] is None
    assert results["detect", "tall"]["shape"] == [1_000_000, 1]
    assert all(results[task, "normal"]["error"] is None
               for task in ("classify", "segment", "detect"))
    assert results["segment", "normal"]["shape"] == [64, 96]


# --- batch containers: bounded by the images, not by the tallest times the widest ---------------

def colour_segmenter() -> nn.Module:
    """Background / red from a fixed 1x1 conv, at half resolution."""
    conv = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[0.0, 0, 0], [40, -40, -40]]).view(2, 3, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, -10]))
    return nn.Sequential(nn.AvgPool2d(2), conv)


def red_square(size: tuple[int, int]) -> Image.Image:
    img = Image.new("RGB", size, (128, 128, 128))
    img.paste((255, 0, 0), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    return img


def test_segmentation_batch_of_both_orientations_lies_the_tall_ones_down():
    seg = ti.load("segment", colour_segmenter(), device="cpu", labels=["bg", "red"],
                  mean=(0, 0, 0), std=(1, 1, 1), input_size=64, batch_size=3)
    images = [red_square((1280, 64)), red_square((64, 1280)), red_square((96, 64))]
    batch = seg.preprocess(images, ["wide", "tall", "small"])
    assert tuple(batch.tensor.shape) == (3, 3, 64, 1280)  # not 1280 x 1280
    assert [g.transposed for g in batch.meta] == [False, True, False]
    together = seg(images)
    for img, result in zip(images, together):
        alone = seg(img)
        assert result.size == (img.height, img.width)
        np.testing.assert_array_equal(result.mask, alone.mask)
        truth = np.zeros((img.height, img.width), np.uint8)
        truth[img.height // 4: img.height // 2, img.width // 4: img.width // 2] = 1
        assert (result.mask == truth).mean() > 0.99


class FakeTorchvisionDetector(nn.Module):
    """Takes a list of (3, h, w) images like torchvision's detectors; remembers them."""

    returns_torchvision_detections = True

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        self.seen: list[torch.Tensor] = []

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.seen = [img.clone() for img in images]
        empty = torch.zeros(0)
        return [{"boxes": torch.zeros(0, 4), "scores": empty, "labels": empty.long()}
                for _ in images]


def test_torchvision_detector_batch_lays_images_end_to_end():
    module = FakeTorchvisionDetector()
    det = ti.load("detect", module, device="cpu", labels=["a"], mean=(0, 0, 0), std=(1, 1, 1))
    assert det.decoder == "torchvision"
    images = [red_square((1000, 10)), red_square((10, 1000)), red_square((30, 20))]
    batch = det.preprocess(images, ["wide", "tall", "small"])
    assert batch.tensor.numel() == 3 * (10_000 + 10_000 + 600)  # not 3 x 1000 x 1000 each
    results = det(images)
    assert [r.image_size for r in results] == [(10, 1000), (1000, 10), (20, 30)]
    for img, seen in zip(images, module.seen):
        expected = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
        assert torch.equal(seen, expected)
    with pytest.raises(ti.InputError, match=r"aspect ratio 1,000:1 .* short side to 800 pixels"):
        det(png(1000, 1))


# --- upsampling back to the original size, in tiles ---------------------------------------------

def smooth_logits(classes: int, h: int, w: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    coarse = torch.randn(1, classes, h // 8 + 2, w // 8 + 2) * 5
    return TF.interpolate(coarse, size=(h, w), mode="bilinear")[0]


@pytest.mark.parametrize("size", [(300, 420), (7, 5000), (1, 3000)])
def test_tiled_upsampling_equals_the_whole(monkeypatch, size):
    logits = smooth_logits(6, 40, 60, seed=size[1])
    full = TF.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
    # tiles of 1,000 floats: many bands, and rows split into pieces
    monkeypatch.setattr(segment, "MAX_UPSAMPLED_ELEMENTS", 6 * 1000)
    mask = segment.upsampled_argmax(logits, size, torch.uint8)
    assert mask.dtype == torch.uint8
    assert (mask.long() == full.argmax(0)).float().mean() > 0.9999
    mask, probs = segment.upsampled_softmax(logits, size, torch.uint8)
    assert probs.dtype == torch.float16 and probs.shape == (6, *size)
    assert torch.allclose(probs.float(), full.softmax(0), atol=2e-3)
    assert (mask.long() == full.argmax(0)).float().mean() > 0.9999


def test_tiles_cover_every_pixel_once():
    for height, width, pixels in ((10, 7, 20), (3, 50, 20), (5, 5, 1), (4, 4, 1000)):
        hits = np.zeros((height, width), int)
        for rows, cols in segment._tiles(height, width, pixels):
            assert (rows.stop - rows.start) * (cols.stop - cols.start) <= max(pixels, 1)
            hits[rows, cols] += 1
        assert (hits == 1).all()


# --- a seeded fuzzer -------------------------------------------------------------------------

FORMATS = [("PNG", {}), ("JPEG", {"quality": 90}), ("GIF", {}), ("BMP", {}), ("WEBP", {}),
           ("TIFF", {}), ("TIFF", {"compression": "tiff_lzw"})]  # Pillow's decoder, libtiff's
if features.check("avif"):
    FORMATS.append(("AVIF", {}))
MUTANTS = 300
SIZE_VALUES = (0, 1, 2, 255, 65535, 65536, 1 << 24, (1 << 31) - 1, (1 << 32) - 1)


def picture() -> Image.Image:
    photos = resources.files("torchinfer") / "assets" / "photos"
    with Image.open(io.BytesIO((photos / "chelsea.jpg").read_bytes())) as img:
        return img.convert("RGB").resize((48, 32), Image.BILINEAR)


def mutate(data: bytes, size: tuple[int, int], rng: random.Random) -> bytes:
    """Byte flips, truncation, a width or height field rewritten, or a spliced copy."""
    out = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0:
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.randrange(256)
    elif kind == 1:
        del out[rng.randrange(1, len(out)):]
    elif kind == 2:
        fields = [(m.start(), fmt) for fmt in (">I", "<I", ">H", "<H") for v in size
                  for m in re.finditer(re.escape(struct.pack(fmt, v)), data)]
        pos, fmt = rng.choice(fields)
        bits = 8 * struct.calcsize(fmt)
        value = rng.choice(SIZE_VALUES + (rng.randrange(1 << bits),)) % (1 << bits)
        out[pos:pos + bits // 8] = struct.pack(fmt, value)
    else:
        start = rng.randrange(len(out))
        out[rng.randrange(len(out)):start] = data[start:start + rng.randint(1, 64)]
    return bytes(out)


def mutants() -> list[tuple[str, bytes]]:
    img = picture()
    items = []
    for seed, (fmt, options) in enumerate(FORMATS):
        buf = io.BytesIO()
        img.save(buf, fmt, **options)
        rng = random.Random(seed)
        items += [(f"{fmt}{options.get('compression', '')}-{i}", mutate(buf.getvalue(), img.size, rng))
                  for i in range(MUTANTS)]
    return items


@pytest.fixture(scope="module")
def fuzzed() -> list[tuple[str, bytes]]:
    return mutants()


@pytest.mark.filterwarnings("ignore")  # Pillow warns about what it can read of broken files
def test_fuzzed_images_decode_to_rgb_or_raise_input_error(fuzzed):
    loader = ImageLoader(max_pixels=1 << 20)  # headers made huge are refused, not allocated
    outcomes, slowest = {"ok": 0, "refused": 0}, 0.0
    for name, data in fuzzed:
        start = time.perf_counter()
        try:
            img = loader.load(data, name)
        except ti.InputError as exc:
            assert exc.source == name and exc.reason, name
            outcomes["refused"] += 1
        except Exception as exc:  # the point: name the input that escaped, and how
            pytest.fail(f"{name}: {type(exc).__name__} escaped the loader: {exc}")
        else:
            assert img.mode == "RGB" and img.width > 0 and img.height > 0, name
            outcomes["ok"] += 1
        slowest = max(slowest, time.perf_counter() - start)
    assert outcomes["ok"] > len(fuzzed) // 10 and outcomes["refused"] > len(fuzzed) // 10
    assert slowest < 2.0


@pytest.mark.filterwarnings("ignore")
def test_fuzzed_images_through_a_predictor_batch(fuzzed):
    subset = fuzzed[::10]
    loader = ImageLoader(max_pixels=1 << 20)
    refused = set()
    for name, data in subset:
        try:
            loader.load(data, name)
        except ti.InputError:
            refused.add(name)
    clf = ti.load("classify", "shapes_classifier", device="cpu", max_pixels=1 << 20)
    results = clf([data for _, data in subset])
    assert len(results) == len(subset)
    for (name, _), result in zip(subset, results):
        assert (result.error is not None) or len(result.topk) > 0, name
        if name in refused:
            assert result.error, name
    assert sum(r.error is None for r in results) > len(subset) // 10


def test_unknown_dds_pixel_format_is_refused():
    """Found by the fuzzer: Pillow raises NotImplementedError for it (as it raises RuntimeError
    for some broken AVIF files and AttributeError for some SPIDER ones)."""
    buf = io.BytesIO()
    picture().save(buf, "DDS")
    data = bytearray(buf.getvalue())
    data[80:84] = struct.pack("<I", 0x100)  # DDS_PIXELFORMAT.dwFlags: no known flag
    with pytest.raises(ti.InputError, match=r"^x\.dds: corrupt image \(NotImplementedError: "
                                            r"Unknown pixel format flags"):
        ImageLoader().load(bytes(data), "x.dds")


@pytest.mark.parametrize("raised", [struct.error("unpack requires a buffer of 4 bytes"),
                                    IndexError("list index out of range"),
                                    ZeroDivisionError("division by zero"),
                                    RuntimeError("Failed to decode frame 0"), MemoryError()])
def test_odd_decoder_exceptions_become_input_errors(monkeypatch, raised):
    def load(self):
        raise raised

    data = png(8, 8)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", load)
    with pytest.raises(ti.InputError, match=r"^x\.png: (corrupt image|not enough memory)") as info:
        ImageLoader().load(data, "x.png")
    assert info.value.__cause__ is raised


@pytest.mark.parametrize("raised", [KeyboardInterrupt, SystemExit])
def test_interrupts_are_not_swallowed(monkeypatch, raised):
    def load(self):
        raise raised

    data = png(8, 8)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", load)
    with pytest.raises(raised):
        ImageLoader().load(data, "x.png")
