"""Bad and unusual inputs, made inside the tests: each is either decoded correctly or turned
into an error that names the file and the problem."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import torchinfer as ti
from torchinfer.runner.images import ImageLoader

loader = ImageLoader()


def rgb_array(h=60, w=90) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 40)], axis=-1).astype(np.uint8)


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming width x height, with a tiny IDAT: a pixel bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(rgb_array(400, 600)).save(buf, "JPEG", quality=95)
    path = tmp_path / "truncated.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ti.InputError, match=r"truncated\.jpg: corrupt or truncated image"):
        loader.load(path)


def test_zero_bytes_and_text_named_jpg(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ti.InputError, match=r"empty\.jpg: empty file \(0 bytes\)"):
        loader.load(tmp_path / "empty.jpg")
    (tmp_path / "notes.jpg").write_text("this is not a picture")
    with pytest.raises(ti.InputError, match=r"notes\.jpg: not a recognised image format"):
        loader.load(tmp_path / "notes.jpg")
    with pytest.raises(ti.InputError, match=r"missing\.png: file not found"):
        loader.load(tmp_path / "missing.png")


def test_16bit_png_is_rescaled_not_clipped(tmp_path):
    ramp = (np.arange(256 * 64, dtype=np.uint32).reshape(64, 256) * 4).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)  # mode I;16
    img = loader.load(path)
    assert img.mode == "RGB"
    out = np.asarray(img)[:, :, 0]
    # Pillow's plain convert("RGB") would clip everything above 255 to white
    np.testing.assert_array_equal(out, (ramp >> 8).astype(np.uint8))
    assert out.min() == 0 and out.max() == 255


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    rgb = rgb_array()
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, quality=98)
    img = loader.load(path)
    assert img.mode == "RGB" and img.size == (90, 60)
    assert np.abs(np.asarray(img).astype(int) - rgb.astype(int)).mean() < 6


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    stored = np.zeros((40, 80, 3), np.uint8)
    stored[:10, :10] = (255, 0, 0)  # red block at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, quality=100, exif=exif)
    img = np.asarray(loader.load(path))
    assert img.shape == (80, 40, 3)
    expected = np.rot90(np.asarray(Image.open(path).convert("RGB")), k=-1)  # clockwise
    np.testing.assert_array_equal(img, expected)
    assert img[:10, -10:, 0].mean() > 200  # the red block is now top-right


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (32, 24), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    img = np.asarray(loader.load(path))
    assert img.shape == (24, 32, 3)
    assert tuple(img[12, 16]) == (255, 0, 0)


def test_pixel_bomb_header_is_refused_without_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(100_000, 100_000))
    start = time.perf_counter()
    with pytest.raises(ti.InputError, match=r"bomb\.png: image too large.*10000000000 pixels"):
        loader.load(path)
    assert time.perf_counter() - start < 1.0
    # our own, lower limit is checked on the header too
    small_limit = ImageLoader(max_pixels=1000)
    Image.fromarray(rgb_array()).save(tmp_path / "ok.png")
    with pytest.raises(ti.InputError, match=r"90x60 = 5,400 pixels, over the limit of 1,000"):
        small_limit.load(tmp_path / "ok.png")


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "1", "I", "F"])
def test_every_pillow_mode_becomes_rgb(mode):
    img = Image.fromarray(rgb_array()).convert(mode)
    out = loader.load(img)
    assert out.mode == "RGB" and out.size == (90, 60)


def test_palette_with_transparency():
    img = Image.fromarray(rgb_array()).convert("P")
    img.info["transparency"] = 0
    assert loader.load(img).mode == "RGB"


def test_arrays_tensors_and_bgr():
    rgb = rgb_array()
    np.testing.assert_array_equal(np.asarray(loader.load(rgb)), rgb)
    bgr_loader = ImageLoader(bgr=True)
    np.testing.assert_array_equal(np.asarray(bgr_loader.load(np.ascontiguousarray(rgb[:, :, ::-1]))), rgb)
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    np.testing.assert_array_equal(np.asarray(loader.load(chw)), rgb)
    as_float = chw.float() / 255
    np.testing.assert_array_equal(np.asarray(loader.load(as_float)), rgb)
    gray = loader.load(rgb[:, :, 0])
    assert gray.mode == "RGB"
    with pytest.raises(ti.InputError, match="values outside"):
        loader.load(rgb.astype(np.float32))
    with pytest.raises(ti.InputError, match="expected HxW, HxWx3 or HxWx4"):
        loader.load(np.zeros((4, 4, 7), np.uint8))
    with pytest.raises(ti.InputError, match="unsupported input type int"):
        loader.load(42)


def test_bytes_input():
    buf = io.BytesIO()
    Image.fromarray(rgb_array()).save(buf, "PNG")
    np.testing.assert_array_equal(np.asarray(loader.load(buf.getvalue())), rgb_array())
    with pytest.raises(ti.InputError, match="empty bytes"):
        loader.load(b"")


def test_pillow_limit_is_never_changed(monkeypatch, tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    ImageLoader(max_pixels=10 * before)
    assert Image.MAX_IMAGE_PIXELS == before  # a process-wide setting: the program's to change
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.fromarray(rgb_array(30, 40)).save(tmp_path / "small.png")  # 1,200 pixels
    Image.fromarray(rgb_array(50, 60)).save(tmp_path / "big.png")  # 3,000: over twice Pillow's
    # between Pillow's limit and twice it, Pillow only warns and our limit decides
    with pytest.warns(Image.DecompressionBombWarning):
        assert ImageLoader(max_pixels=1500).load(tmp_path / "small.png").size == (40, 30)
    with pytest.warns(Image.DecompressionBombWarning), \
            pytest.raises(ti.InputError, match=r"40x30 = 1,200 pixels, over the limit of 1,000"):
        ImageLoader().load(tmp_path / "small.png")  # ours defaults to Pillow's
    # beyond twice its limit Pillow refuses, whatever ours says; the reason says what to change
    with pytest.raises(ti.InputError, match=r"big\.png: image too large for Pillow: .* "
                                            r"PIL\.Image\.MAX_IMAGE_PIXELS, .* max_pixels=5,000$"):
        ImageLoader(max_pixels=5000).load(tmp_path / "big.png")
    assert Image.MAX_IMAGE_PIXELS == 1000
