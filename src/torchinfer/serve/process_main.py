"""A model process: one served model in a process of its own, started by the server as a fresh
interpreter (``bootstrap``; torch and fork do not mix, and unlike multiprocessing's spawn this
does not run the caller's main script again in the child).

Why a process: the server's process parses HTTP, reads multipart bodies and writes JSON, all
in Python, and so does an eager model between its kernels (torch dispatches each op with the
GIL held). In one process they take turns on one GIL; in two, each has its own
(BENCHMARKS.md has the measured difference, design notes the profile). Decoding happens
here, on this process's decode threads, beside the model: the server's process only checks
an image's type and size and passes the bytes on.

On the main thread, ``ModelProcess.serve`` reads the server's messages (wire.py) and hands
them to the engine (engine.py): a ``predict`` is decoded on a decode thread and queued in the
batcher; each model call's answers go back in one message from the worker that ran it.

Lifetime: the server closes its end for writing to stop this process: it then finishes what
it holds (decoding, queued, running), answers it and exits. It never outlives the server: if
the server dies, sending fails or the parent is gone (watched once a second) and it exits at
once. It runs in a session of its own, so a Ctrl-C or a signal to the server's process group
reaches only the server, which drains the requests in flight through this process before
closing it; a SIGTERM or SIGKILL sent to this process itself still ends it.
"""

from __future__ import annotations

import logging
import mmap
import os
import socket
import sys
import threading
import time
from typing import Any

from ..errors import TorchinferError
from .batcher import Job
from .config import ModelSpec, ServeConfig
from .engine import Encoded, ModelEngine
from .wire import DEPTH, error_to_wire, receive, send

log = logging.getLogger("torchinfer.serve")
PARENT_CHECK_S = 1.0
CANCELLED = object()  # a request cancelled while it was being decoded


def bootstrap() -> None:
    """The model process's entry (process_client.command): its descriptors and its server
    from the command line, what to serve from the socket, then ``main``."""
    exit_with_parent(int(sys.argv[3]))
    sock = socket.socket(fileno=int(sys.argv[1]))
    depth = mmap.mmap(int(sys.argv[2]), DEPTH.size)
    try:
        spec, config = receive(sock)
    except (EOFError, OSError):  # the server went away before saying what to serve
        os._exit(1)
    main(sock, spec, config, depth)


def main(sock: socket.socket, spec: ModelSpec, config: ServeConfig, depth: mmap.mmap) -> None:
    """Serve one model over ``sock`` until the server closes it. ``depth``: a page this
    process keeps equal to its queue's length (the server's ``torchinfer_queue_depth`` reads
    it when scraped, without asking)."""
    ModelProcess(sock, spec, config, depth).serve()
    sys.stdout.flush()
    sys.stderr.flush()
    # no interpreter teardown: the threads are done, and torch's exit handlers only add time
    os._exit(0)


def exit_with_parent(parent: int) -> None:
    """Exit as soon as the server's process is gone, whatever this one is doing (loading,
    a long batch): no orphan keeps a model in memory."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="torchinfer-parent-watch", daemon=True).start()


class ModelProcess:
    """The engine behind one socket: requests in, answers out."""

    def __init__(self, sock: socket.socket, spec: ModelSpec, config: ServeConfig,
                 depth: mmap.mmap):
        self.sock, self.depth = sock, depth
        self.engine = ModelEngine(spec, config, on_batch=self._batched, on_done=self._answer,
                                  on_depth=self._set_depth, own_process=True)
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        # request number -> None while decoding, CANCELLED, or its Job once queued
        self._live: dict[int, Any] = {}
        self._batches: list[tuple[int, list[float]]] = []  # not yet reported

    def serve(self) -> None:
        try:
            self.engine.load()
        except Exception as exc:
            if not isinstance(exc, TorchinferError):
                log.exception("loading model %s", self.engine.name)
            self._send(("failed", str(exc) or type(exc).__name__))
            return
        self._send(("ready", self.engine.describe()))
        while True:
            try:
                message = receive(self.sock)
            except (EOFError, OSError):  # the server closed its end: finish and exit
                break
            self._handle(message)
        self.engine.close()
        self.sock.close()

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind, number = message[0], message[1]
        pool = self.engine.decode_pool
        assert pool is not None
        if kind == "predict" and self.engine.decodes_in_turn:  # the worker decodes it
            self._queue(number, Encoded(message[2], message[3]), message[4])
        elif kind == "predict":
            with self._lock:
                self._live[number] = None
            pool.submit(self._decode_and_queue, *message[1:])
        elif kind == "cancel":
            with self._lock:
                entry = self._live.get(number, CANCELLED)
                if entry is None:
                    self._live[number] = CANCELLED
                elif isinstance(entry, Job) and entry.future.cancel():
                    del self._live[number]  # the worker drops it unrun
        elif kind == "draw":
            pool.submit(self._draw, *message[1:])

    def _decode_and_queue(self, number: int, data: bytes, name: str, options: Any) -> None:
        try:
            decoded = self.engine.decode(data, name)
        except Exception as exc:
            self._fail(number, exc)
            return
        self._queue(number, decoded, options)

    def _queue(self, number: int, image: Any, options: Any) -> None:
        try:
            with self._lock:  # queued under the lock: a cancel finds it, an answer after it
                if self._live.get(number) is CANCELLED:
                    del self._live[number]
                    return
                self._live[number] = self.engine.submit(image, options, number)
        except Exception as exc:  # the batcher is closing
            self._fail(number, exc)

    def _fail(self, number: int, exc: Exception) -> None:
        with self._lock:
            self._live.pop(number, None)
        self._send(("answers", [(number, False, error_to_wire(exc), 0.0, 0.0, 0)], [], None))

    def _draw(self, number: int, data: bytes, name: str, result: Any) -> None:
        try:
            answer: tuple[Any, ...] = (True, self.engine.draw_png(data, name, result))
        except Exception as exc:
            answer = (False, error_to_wire(exc))
        self._send(("drawn", number, *answer))

    def _batched(self, jobs: list[Job]) -> None:
        with self._lock:
            self._batches.append((len(jobs), [job.queue_wait_s for job in jobs]))

    def _answer(self, group: list[Job]) -> None:
        answers = []
        for job in group:
            error = job.future.exception()
            if error is not None and not isinstance(error, TorchinferError):
                log.error("model %s failed on a batch", self.engine.name, exc_info=error)
            value = error_to_wire(error) if error is not None else job.future.result()
            answers.append((job.key, error is None, value, job.queue_wait_s, job.compute_s,
                            job.batch_size))
        with self._lock:
            for job in group:
                self._live.pop(job.key, None)
            batches, self._batches = self._batches, []
        self._send(("answers", answers, batches, group[0].compute_s))

    def _set_depth(self, depth: int) -> None:
        DEPTH.pack_into(self.depth, 0, depth)

    def _send(self, message: Any) -> None:
        try:
            with self._send_lock:
                send(self.sock, message)
        except OSError:  # the server is gone: nobody is left to answer
            os._exit(1)
