"""What every request passes before the app sees it: the API key and the body cap.

A plain ASGI layer (no per-request task or copy of the body, unlike Starlette's
BaseHTTPMiddleware). The key is compared in constant time (``hmac.compare_digest``) on every
path but liveness, from ``Authorization: Bearer KEY``, ``X-API-Key: KEY`` or HTTP Basic auth
with the key as password (what a browser sends after its login prompt, so the web page works
with a key too). The body is refused on its Content-Length before any of it is read, and
counted as it arrives otherwise (chunked bodies): past the cap the read fails with BodyTooLarge,
which the app answers with 413.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from ..errors import TorchinferError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/v2/health/live"})  # a liveness probe carries no key


class BodyTooLarge(TorchinferError):
    """The request body is over the server's cap (HTTP 413)."""


def too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"request body over the limit of {limit:,} bytes (--max-body-mb)")


class Guard:
    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int):
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", ())}
        if self.key is not None and scope.get("path") not in OPEN_PATHS \
                and not self._authorised(headers):
            await _send_error(send, 401, "missing or wrong API key: send 'Authorization: Bearer "
                              "KEY' or 'X-API-Key: KEY'",
                              [(b"www-authenticate", b'Basic realm="torchinfer"')])
            return
        length = headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _send_error(send, 400, "Content-Length is not a number")
                return
            if declared > self.max_body_bytes:
                await _send_error(send, 413, str(too_large(self.max_body_bytes)),
                                  [(b"connection", b"close")])
                return
        received = 0
        limit = self.max_body_bytes

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(limit)
            return message

        await self.app(scope, counted, send)

    def _authorised(self, headers: dict[str, bytes]) -> bool:
        assert self.key is not None
        return key_matches(self.key, headers)


def key_matches(key: bytes, headers: Mapping[str, bytes]) -> bool:
    """Whether ``headers`` (lower-case names; HTTP headers or gRPC metadata) carry ``key``:
    ``x-api-key``, ``authorization: Bearer KEY`` or HTTP Basic's password."""
    offered: list[bytes] = []
    if "x-api-key" in headers:
        offered.append(headers["x-api-key"].strip())
    auth = headers.get("authorization", b"")
    scheme, _, value = auth.partition(b" ")
    if scheme.lower() == b"bearer":
        offered.append(value.strip())
    elif scheme.lower() == b"basic":
        try:
            _, _, password = base64.b64decode(value.strip(), validate=True).partition(b":")
            offered.append(password)
        except (binascii.Error, ValueError):
            pass
    # every candidate compared, in constant time each: no early exit on a match
    matches = [hmac.compare_digest(candidate, key) for candidate in offered]
    return any(matches)


async def _send_error(send: Send, status: int, message: str,
                      headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
