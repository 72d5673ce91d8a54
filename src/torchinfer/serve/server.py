"""The served models together: loading them in the background, readiness, metrics, draining.

``Server.start()`` returns at once and loads the models on a thread, so the socket answers
(liveness yes, readiness no) while weights load and warm up; every model's process is started
first, so they load side by side; ``ready`` turns true when every model has reported ready.
``stop()`` refuses new requests, answers everything queued, and stops the models' processes.
A model process that dies makes the server ``broken``: readiness and liveness turn false (an
orchestrator restarts it) and ``on_failure`` is told (the command stops the server).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from ..errors import TorchinferError
from .config import ModelSpec, ServeConfig
from .holder import ModelHolder
from .metrics import ServerMetrics
from .repository import repository_models
from .search import open_indexes

log = logging.getLogger("torchinfer.serve")


class UnknownModel(TorchinferError):
    """No model of that name is served (HTTP 404)."""


class NotReady(TorchinferError):
    """The model is loading, failed to load, or the server is stopping (HTTP 503)."""


class Server:
    def __init__(self, config: ServeConfig, *,
                 on_failure: Callable[[str], None] | None = None):
        self.config = config.check()
        self.metrics = ServerMetrics(self._depths)
        self.on_failure = on_failure
        self.holders = {spec.name: ModelHolder(spec, config, self.metrics,
                                               on_failure=self._failed)
                        for spec in config.models}
        # the run folders /v1/search searches, each with the model that embeds its queries
        self.indexes = open_indexes(config)
        # what may be loaded on request (the model repository extension), by name
        self.repository = repository_models(config.model_repository)
        self.stopping = False
        self._loader: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._repository_lock: asyncio.Lock | None = None  # made on the serving loop

    @property
    def ready(self) -> bool:
        return not self.stopping and all(h.ready for h in list(self.holders.values()))

    @property
    def broken(self) -> bool:
        """A model's process died: this server cannot serve it again (liveness false)."""
        return any(h.crashed for h in list(self.holders.values()))

    def holder(self, name: str) -> ModelHolder:
        try:
            return self.holders[name]
        except KeyError:
            raise UnknownModel(f"unknown model {name!r}: this server has "
                               f"{', '.join(self.holders)}") from None

    def model_ready(self, name: str) -> bool:
        """Whether ``name`` serves now; a model of the repository not loaded is not ready,
        any other name is UnknownModel."""
        if name not in self.holders and name in self.repository:
            return False
        return self.holder(name).ready and not self.stopping

    def ready_holder(self, name: str) -> ModelHolder:
        holder = self.holder(name)
        if self.stopping:
            raise NotReady("the server is shutting down")
        if not holder.ready:
            detail = f": {holder.error}" if holder.error else ""
            raise NotReady(f"model {name} is {holder.state}{detail}")
        return holder

    def start(self) -> None:
        """Load every model on a background thread (called on the serving event loop, the
        models' connections are bound to it as each becomes ready)."""
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None  # bound on each model's first request instead
        self._loader = threading.Thread(target=self.load_all, name="torchinfer-load",
                                        daemon=True)
        self._loader.start()

    def load_all(self) -> None:
        initial = list(self.holders.values())  # models loaded on request come and go beside
        for holder in initial:
            holder.start_loading()
        for holder in initial:
            if self.stopping:
                return
            try:
                holder.load()
            except Exception as exc:  # reported; the other models still load
                if self.stopping:  # stopped while loading: not a failure
                    return
                message = f"model {holder.name} ({holder.spec.model}) failed to load: {exc}"
                log.error(message)
                self._failed(message)
                if not isinstance(exc, TorchinferError):
                    log.exception("loading %s", holder.name)
                continue
            log.info("model %s ready (%s, %.1f s)", holder.name, holder.task,
                     holder.load_seconds or 0.0)
            if self._loop is not None and not self._loop.is_closed():
                asyncio.run_coroutine_threadsafe(holder.attach(), self._loop)

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Wait for the loading thread; True when every model is ready."""
        if self._loader is not None:
            self._loader.join(timeout)
        return self.ready

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new requests, answer the queued ones, stop the models (blocks: call it off
        the event loop, which still receives the last answers)."""
        self.stopping = True
        holders = list(self.holders.values())
        for holder in holders:  # a model process still loading: no wait
            holder.abort_loading()
        if self._loader is not None:
            self._loader.join(timeout)
        for holder in holders:
            holder.close(timeout)

    def _failed(self, message: str) -> None:
        if self.on_failure is not None:
            self.on_failure(message)

    def _depths(self) -> list[tuple[str, int, bool]]:
        return [(name, h.depth, h.ready) for name, h in list(self.holders.items())]

    # --- the model repository extension -------------------------------------------------------

    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Every model this server serves or may load (``ready_only``: those ready to serve),
        with its state: READY, LOADING, UNAVAILABLE (not loaded, or failed: ``reason`` says
        why)."""
        states = {"ready": "READY", "loading": "LOADING"}
        out = []
        for name in sorted({*self.repository, *self.holders}):
            holder = self.holders.get(name)
            entry = {"name": name, "version": "1",
                     "state": states.get(holder.state, "UNAVAILABLE") if holder else
                     "UNAVAILABLE", "reason": ""}
            if holder is not None and holder.error:
                entry["reason"] = holder.error
            elif holder is None:
                entry["reason"] = "unloaded"
            if entry["state"] == "READY" or not ready_only:
                out.append(entry)
        return out

    async def load_model(self, name: str) -> None:
        """Load ``name`` from the repository and return once it is ready (a loaded one is
        left as it is); TorchinferError saying why it could not be."""
        async with self._lock():
            if name in self.holders and self.holders[name].state in ("ready", "loading"):
                return
            if name not in self.repository:
                known = ", ".join(self.repository) or "none: start the server with " \
                                                     "--model-repository DIR"
                raise UnknownModel(f"no model {name!r} in the model repository ({known})")
            spec = ModelSpec(model=str(self.repository[name]), name=name)
            holder = ModelHolder(spec, self.config, self.metrics, on_failure=log.error)
            self.holders[name] = holder  # requests meanwhile answer 503 "loading"
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, holder.load)
            except Exception as exc:
                self.holders.pop(name, None)
                raise TorchinferError(f"model {name} failed to load: {exc}") from None
            await holder.attach()
            log.info("model %s loaded on request (%s, %.1f s)", name, holder.task,
                     holder.load_seconds or 0.0)

    async def unload_model(self, name: str) -> None:
        """Stop serving ``name``: new requests answer 404 at once, those in flight finish."""
        async with self._lock():
            holder = self.holders.pop(name, None)
            if holder is None:
                raise UnknownModel(f"model {name!r} is not loaded")
            await asyncio.get_running_loop().run_in_executor(
                None, holder.close, self.config.timeout_s)

    def _lock(self) -> asyncio.Lock:
        if self._repository_lock is None:
            self._repository_lock = asyncio.Lock()
        return self._repository_lock
