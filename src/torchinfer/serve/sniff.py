"""The image type of a request, read from its first bytes (the server's process, before
anything is sent to the model).

Only common raster formats are decoded. Pillow opens many more (EPS through Ghostscript among
them), and the Content-Type a client sends proves nothing, so the first bytes decide: JPEG,
PNG, GIF, BMP, WebP or TIFF, or 415 before any decoder runs. This module imports neither torch
nor Pillow: the server's process checks types without loading the model's stack.
"""

from __future__ import annotations

from ..errors import TorchinferError

IMAGE_TYPES = "JPEG, PNG, GIF, BMP, WebP or TIFF"


class UnsupportedType(TorchinferError):
    """The bytes are not an image of an accepted type (HTTP 415)."""


def sniff_image(data: bytes) -> str:
    """The image type the bytes start with, or UnsupportedType."""
    head = bytes(data[:16])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if not data:
        raise UnsupportedType("empty body: send an image")
    raise UnsupportedType(f"unsupported image type: the bytes are not {IMAGE_TYPES} (the type "
                          "is read from the bytes, not the Content-Type)")
