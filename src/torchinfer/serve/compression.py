"""HTTP compression of infer requests and answers, as Triton's clients ask for it
(``tritonclient.http``'s ``request_compression_algorithm`` / ``response_compression_algorithm``):
a request body with ``Content-Encoding: gzip`` or ``deflate`` (zlib's format), and an answer
compressed when ``Accept-Encoding`` names either. A binary answer's
``Inference-Header-Content-Length`` counts the JSON header before compression.

A compressed request is inflated only up to the server's body cap: a small body that would
inflate past it is refused (413) without inflating the rest.
"""

from __future__ import annotations

import zlib

from .guard import too_large
from .oip import ProtocolError

ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}  # zlib's window bits
MIN_COMPRESSED_BYTES = 1024  # smaller answers go as they are: the header would cost more
LEVEL = 1  # zlib's fastest: a mask compresses well at any level, and time is the budget


def inflated(body: bytes, encoding: str | None, limit: int) -> bytes:
    """``body`` as sent before its ``Content-Encoding``, at most ``limit`` bytes."""
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return body
    if name not in ENCODINGS:
        raise ProtocolError(f"Content-Encoding {encoding!r}: send gzip, deflate or none")
    inflater = zlib.decompressobj(ENCODINGS[name])
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ProtocolError(f"the body is not {name} data: {exc}") from None
    if len(out) > limit:
        raise too_large(limit)
    if not inflater.eof:
        raise ProtocolError(f"the {name} body ends before its data does")
    if inflater.unused_data:
        raise ProtocolError(f"{len(inflater.unused_data)} bytes after the {name} data")
    return out


def chosen(accept_encoding: str | None) -> str | None:
    """The encoding to answer in, from an ``Accept-Encoding`` header: gzip, else deflate,
    leaving out those it gives ``q=0``; None for neither."""
    accepted = set()
    for part in (accept_encoding or "").split(","):
        name, _, params = part.strip().partition(";")
        q = params.strip().removeprefix("q=")
        try:
            weight = float(q) if params.strip().startswith("q=") else 1.0
        except ValueError:
            weight = 1.0
        if weight > 0:
            accepted.add(name.strip().lower())
    return next((e for e in ENCODINGS if e in accepted), None)


def deflated(body: bytes, encoding: str) -> bytes:
    """``body`` compressed as ``encoding`` (gzip or deflate)."""
    packer = zlib.compressobj(LEVEL, zlib.DEFLATED, ENCODINGS[encoding])
    return packer.compress(body) + packer.flush()
