"""What goes between the server's process and a model process: pickled tuples in frames of
``!Q`` length + payload over one Unix socket pair, and errors as plain data.

Both ends are this package, started by the server itself (the model process runs the
server's own interpreter with the server's import path), so pickle carries the messages:
results are typed objects with numpy arrays, which pickle copies once. No other process can
reach the socket pair. The messages (``predict`` and ``draw`` carry a request number; answers name it):

    server -> model   ("predict", n, image bytes, name, options)   ("draw", n, bytes, name, result)
                      ("cancel", n)                   EOF (write half closed): drain and exit
    model -> server   ("ready", description) or ("failed", reason), once, first
                      ("answers", [(n, ok, result or error, queue s, compute s, batch size)],
                       [(batch size, [queue s...])...], compute s or None)
                      ("drawn", n, ok, png bytes or error)

Errors cross as tuples (``error_to_wire``): InputError keeps its source and reason (the CLI
record's text), a TorchinferError its class of answer, anything else becomes ModelFailure
(HTTP 500) with its type and message; exceptions themselves do not always pickle back.
"""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Any

from ..errors import InputError, OptionError, TorchinferError
from .batcher import ShuttingDown
from .sniff import UnsupportedType

HEADER = struct.Struct("!Q")
DEPTH = struct.Struct("q")  # the model's queue length, in a page both processes map


class ModelFailure(Exception):
    """The model raised something other than a TorchinferError (HTTP 500; logged by the
    model process with its traceback)."""


def frame(message: Any) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(payload)) + payload


def send(sock: socket.socket, message: Any) -> None:
    """Blocking send of one message (the model process's side)."""
    sock.sendall(frame(message))


def receive(sock: socket.socket) -> Any:
    """Blocking read of one message; EOFError when the other side closed its end."""
    size = HEADER.unpack(_exactly(sock, HEADER.size))[0]
    return pickle.loads(_exactly(sock, size))


def _exactly(sock: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        count = sock.recv_into(view[got:])
        if count == 0:
            raise EOFError("the other process closed its end")
        got += count
    return buffer


def error_to_wire(exc: BaseException) -> tuple[str, ...]:
    if isinstance(exc, InputError):
        return ("input", exc.source, exc.reason)
    for kind, cls in _KINDS.items():
        if isinstance(exc, cls):
            return (kind, str(exc))
    return ("failure", f"{type(exc).__name__}: {exc}")


def error_from_wire(data: tuple[str, ...]) -> Exception:
    kind, *rest = data
    if kind == "input":
        return InputError(rest[0], rest[1])
    cls = _KINDS.get(kind, ModelFailure)
    return cls(rest[0])


# most specific first: the first class an error is an instance of names its kind
_KINDS: dict[str, type[Exception]] = {"unsupported": UnsupportedType, "shutdown": ShuttingDown,
                                      "option": OptionError, "error": TorchinferError}
