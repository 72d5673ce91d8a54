"""A model process as the server's process sees it: started, waited for until it reports
ready, then spoken to from the event loop.

``start()`` starts the process (process_main.py: a fresh interpreter, as multiprocessing's
spawn method starts one, minus re-running the caller's main script; its socket and depth
page inherited as descriptors; a session of its own) and returns; ``wait_ready()`` blocks
until it has loaded and warmed up its model (readiness stays false until then) and returns
its description. From then on the event loop owns the socket: ``predict`` writes one message and
awaits the answer; one reader task per process reads answers and completes the waiting
futures. No thread sits between the two: the loop's own poll wakes on the socket, so an
answer costs the server's process no thread switch and no extra GIL hand-over.

A request that times out sends ``cancel``: the model process drops it unrun if it is still
queued. If the process dies (killed, out of memory, a crash in native code), the reader sees
the socket close: every request waiting on it fails at once with ModelProcessDied (503), the
holder is told (readiness and liveness turn false), and nothing waits for an answer that
cannot come. ``close()`` closes the socket for writing: the process answers what it holds and
exits; one that does not exit in time is killed. The queue depth is an integer in a page both
processes map: the model process keeps it current, the metrics read it without asking.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import mmap
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from ..errors import TorchinferError
from ..results import Result
from .batcher import JobTiming, ShuttingDown
from .config import ModelSpec, ServeConfig
from .metrics import ServerMetrics
from .wire import DEPTH, HEADER, error_from_wire, frame, receive, send

log = logging.getLogger("torchinfer.serve")
EXIT_WAIT_S = 2.0  # after the socket closed, how long to wait for the exit status


def command(sock_fd: int, depth_fd: int) -> list[str]:
    """The command line of a model process (process_main.bootstrap) whose socket and depth
    page are these inherited descriptors; what to serve comes as the socket's first message
    (never on a command line, where ``ps`` shows it: the config holds the API key)."""
    code = "from torchinfer.serve.process_main import bootstrap; bootstrap()"
    return [sys.executable, "-c", code, str(sock_fd), str(depth_fd), str(os.getpid())]


class ModelProcessDied(TorchinferError):
    """The model's process ended while the server was not stopping (HTTP 503)."""


class ModelProcessClient:
    """One model process. ``on_exit(message)`` is called (on the event loop) if it dies."""

    def __init__(self, spec: ModelSpec, config: ServeConfig, metrics: ServerMetrics | None = None,
                 on_exit: Callable[[str], None] | None = None):
        self.spec, self.config = spec, config
        self.name, self.metrics, self.on_exit = spec.name, metrics, on_exit
        self.drain_timeout_s = config.timeout_s + 30  # every request has given up by then
        self.process: subprocess.Popen[bytes] | None = None
        self._sock, self._child_end = socket.socketpair()
        # the queue depth: an unlinked file's page, mapped here and in the model process
        self._depth_file = tempfile.TemporaryFile()
        self._depth_file.truncate(mmap.PAGESIZE)
        self._depth = mmap.mmap(self._depth_file.fileno(), DEPTH.size)
        self.failure: str | None = None
        self._numbers = itertools.count()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._attaching: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._ready = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def depth(self) -> int:
        return int(DEPTH.unpack_from(self._depth, 0)[0])

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # --- starting -------------------------------------------------------------------------

    def start(self) -> None:
        fds = (self._child_end.fileno(), self._depth_file.fileno())
        # the server's import path, as spawn passes it: the same torchinfer, however found
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        # a session of its own: a signal to the server's group (Ctrl-C) is the server's to
        # handle; it drains the requests in flight through this process, then closes it
        self.process = subprocess.Popen(command(*fds), pass_fds=fds, env=env,
                                        start_new_session=True)
        # only the child holds its end now: when the child dies, this end reads EOF
        self._child_end.close()
        self._depth_file.close()  # the page stays mapped
        send(self._sock, (self.spec, self.config))

    def wait_ready(self) -> dict[str, Any]:
        """Block until the model is loaded and warmed up; its description. A TorchinferError
        saying why when it fails to load (the process then exits)."""
        try:
            kind, payload = receive(self._sock)
        except (EOFError, OSError):
            self._wait(EXIT_WAIT_S)
            raise TorchinferError(f"the process of model {self.name} exited while loading "
                                  f"({self._status()})") from None
        if kind != "ready":
            self._wait(EXIT_WAIT_S)
            raise TorchinferError(payload)
        self._ready = True
        return dict(payload)

    def abort_loading(self) -> None:
        """Kill the process if it has not reported ready (nothing of it is in use yet)."""
        self._closing = True
        if not self._ready and self.process is not None:
            self.process.kill()

    async def attach(self) -> None:
        """Hand the socket to the running event loop (once; the first caller's loop)."""
        loop = asyncio.get_running_loop()
        if self._attaching is None:
            self._loop = loop
            self._attaching = loop.create_task(self._connect())
        elif self._loop is not loop:
            raise RuntimeError(f"model {self.name}: its process is spoken to from one event "
                               "loop only")
        await asyncio.shield(self._attaching)

    async def _connect(self) -> None:
        self._sock.setblocking(False)
        reader, self._writer = await asyncio.open_unix_connection(sock=self._sock)
        assert self._loop is not None
        # kept: the loop holds only a weak reference to a task
        self._reader = self._loop.create_task(self._read(reader),
                                              name=f"torchinfer-answers-{self.name}")

    # --- requests -------------------------------------------------------------------------

    async def predict(self, data: bytes, name: str, options: Any
                      ) -> tuple[Result, JobTiming]:
        """The result of one encoded image with ``options`` (sorted pairs), and its timing."""
        return await self._ask("predict", data, name, options)

    async def draw(self, data: bytes, name: str, result: Result) -> bytes:
        """The annotated picture of ``result`` on its image, as PNG."""
        return await self._ask("draw", data, name, result)

    async def _ask(self, kind: str, *args: Any) -> Any:
        if self._writer is None:
            await self.attach()
        if self.failure is not None:
            raise ModelProcessDied(self.failure)
        if self._closing:
            raise ShuttingDown("the server is shutting down")
        assert self._loop is not None and self._writer is not None
        number = next(self._numbers)
        future = self._loop.create_future()
        self._pending[number] = future
        self._writer.write(frame((kind, number, *args)))
        try:
            return await future
        except asyncio.CancelledError:  # timed out or the client left: drop it unrun
            if self._pending.pop(number, None) is not None and kind == "predict":
                with contextlib.suppress(Exception):
                    self._writer.write(frame(("cancel", number)))
            raise

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                size = HEADER.unpack(await reader.readexactly(HEADER.size))[0]
                self._dispatch(pickle.loads(await reader.readexactly(size)))
        except (asyncio.IncompleteReadError, OSError):
            pass
        await self._ended()

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        if message[0] == "drawn":
            _, number, ok, value = message
            self._complete(number, ok, value)
            return
        _, answers, batches, compute_s = message
        for number, ok, value, queue_wait_s, answer_compute_s, batch_size in answers:
            self._complete(number, ok, (value, JobTiming(queue_wait_s, answer_compute_s,
                                                         batch_size)) if ok else value)
        if self.metrics is not None:
            self.metrics.observe_batches(self.name, batches, compute_s)

    def _complete(self, number: int, ok: bool, value: Any) -> None:
        future = self._pending.pop(number, None)
        if future is None or future.done():  # given up on meanwhile
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(error_from_wire(value))

    async def _ended(self) -> None:
        """The socket closed: expected while closing; otherwise the process died."""
        if not self._closing:
            await asyncio.to_thread(self._wait, EXIT_WAIT_S)
            if self.process is not None and self.process.poll() is None:
                self.process.kill()  # it closed its socket but lives on: unusable
            self.failure = f"the process of model {self.name} ended unexpectedly " \
                           f"({self._status()})"
        error: Exception = ModelProcessDied(self.failure) if self.failure else \
            ShuttingDown("the server is shutting down")
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)
        if self._writer is not None:
            self._writer.close()
        if self.failure is not None and self.on_exit is not None:
            self.on_exit(self.failure)

    # --- stopping -------------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Let the process answer what it holds and exit; kill it past ``timeout`` (default:
        the request timeout and 30 s). Blocks: call it off the event loop."""
        self._closing = True
        if self.process is None:  # never started
            self._sock.close()
            self._child_end.close()
            self._depth_file.close()
            return
        self._close_for_writing()
        if not self._wait(self.drain_timeout_s if timeout is None else timeout):
            log.warning("model %s: its process did not finish in time; killing it", self.name)
            self.process.kill()
            self._wait(None)
        if self._loop is None:
            self._sock.close()

    def _close_for_writing(self) -> None:
        """EOF to the process, after every message already written (the loop's buffer)."""
        loop, writer = self._loop, self._writer
        if loop is not None and writer is not None and loop.is_running():
            def write_eof() -> None:
                with contextlib.suppress(Exception):
                    writer.write_eof()

            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(write_eof)
                return
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    def _wait(self, timeout: float | None) -> bool:
        """Wait for the process to exit (and reap it); whether it has."""
        assert self.process is not None
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _status(self) -> str:
        code = self.process.returncode if self.process is not None else None
        if code is None:
            return "still running"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"
