"""What a server runs: its models and its limits, from the command line or a small file.

Nothing here imports torch or the web stack: the command checks a configuration (a key for a
non-loopback address, model names, limits) before anything slow happens.

A model is named on the command line as ``[NAME=][TASK:]MODEL``::

    shapes_detector                      the bundled detector; its task from its own metadata
    detect:shapes_detector               the task said outright
    fast=classify:models/net.onnx        served as /v1/models/fast

or in a file (JSON, or YAML read with ``yaml.safe_load``: plain data, never objects)::

    host: 127.0.0.1
    max_delay_ms: 2
    models:
      - model: shapes_detector
        name: shapes
        options: {conf: 0.3, backend: torch}   # what `predict` takes (ti.load's keywords)
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import OptionError, TorchinferError

API_KEY_ENV = "TORCHINFER_API_KEY"
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
# How long the worker waits for more requests to fill a batch once it holds one (design
# notes: measured at concurrency 1 to 64; requests that arrive while the model runs batch
# anyway, so waiting only pays when the model is idle and costs a lone request this much).
DEFAULT_MAX_DELAY_MS = 2.0
DEFAULT_MAX_QUEUE = 128  # requests admitted per model (decoding or waiting) before 503
DEFAULT_TIMEOUT_S = 30.0

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ModelSpec:
    """One model to serve: ``model`` and ``weights`` as ``ti.load`` takes them, its ``task``
    (None: read from the model's own metadata, or torchvision's name), the ``name`` in URLs,
    ``options`` for ``ti.load`` (backend, precision, device, batch_size, conf, top_k...) and
    its batching (None: the server's)."""

    model: str
    task: str | None = None
    name: str = ""
    weights: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    max_batch_size: int | None = None
    max_delay_ms: float | None = None

    def __post_init__(self) -> None:
        if not self.name:
            stem = Path(self.model).stem if _looks_like_file(self.model) else self.model
            object.__setattr__(self, "name", re.sub(r"[^A-Za-z0-9_.-]", "_", stem)[:64])
        if not _NAME.match(self.name):
            raise OptionError(f"model name {self.name!r}: use letters, digits, '_', '.', '-' "
                              "(at most 64)")

    @classmethod
    def parse(cls, text: str, known_tasks: tuple[str, ...]) -> ModelSpec:
        """``[NAME=][TASK:]MODEL`` (see the module doc)."""
        name = ""
        head, sep, rest = text.partition("=")
        if sep and _NAME.match(head) and rest:
            name, text = head, rest
        task: str | None = None
        first, sep, rest = text.partition(":")
        if sep and first in known_tasks:
            task, text = first, rest
        if not text:
            raise OptionError(f"-m {text!r}: name a model ([NAME=][TASK:]MODEL)")
        return cls(model=text, task=task, name=name)


@dataclass(frozen=True)
class IndexSpec:
    """A ``predict embed`` run folder searched at ``/v1/search?index=NAME``; the query image
    is embedded by the served model that made it (``serve.search`` pairs them)."""

    folder: str
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            stem = Path(self.folder.rstrip("/\\")).name
            object.__setattr__(self, "name", re.sub(r"[^A-Za-z0-9_.-]", "_", stem)[:64])
        if not _NAME.match(self.name):
            raise OptionError(f"index name {self.name!r}: use letters, digits, '_', '.', '-' "
                              "(at most 64)")

    @classmethod
    def parse(cls, text: str) -> IndexSpec:
        """``[NAME=]RUN_DIR``."""
        head, sep, rest = text.partition("=")
        if sep and _NAME.match(head) and rest:
            return cls(folder=rest, name=head)
        return cls(folder=text)


def _looks_like_file(model: str) -> bool:
    return os.sep in model or "/" in model or Path(model).suffix.lower() in {
        ".onnx", ".pt", ".pth", ".safetensors", ".torchscript", ".ts", ".jit"}


@dataclass(frozen=True)
class ServeConfig:
    """A server: models and limits. ``check()`` refuses what would be unsafe."""

    models: tuple[ModelSpec, ...]
    indexes: tuple[IndexSpec, ...] = ()  # run folders /v1/search searches
    model_repository: tuple[str, ...] = ()  # folders whose models may be loaded on request
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = None  # the OIP over gRPC too, on this port (None: not served)
    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_pixels: int | None = None  # None: the CLI's limit (Pillow's, 89,478,485)
    max_queue: int = DEFAULT_MAX_QUEUE
    max_batch_size: int | None = None  # None: each predictor's batch size
    max_delay_ms: float = DEFAULT_MAX_DELAY_MS
    timeout_s: float = DEFAULT_TIMEOUT_S
    # threads decoding requests beside the model (None: as predict's plan says,
    # engine.server_split; 0: each worker decodes what it takes, in turn with the model)
    decode_threads: int | None = None
    model_threads: int | None = None  # torch intra-op threads of each model worker (same)
    # batches of one model run at once, each worker on model_threads (None: the spare cores
    # over model_threads on a CPU, one on a GPU; engine.default_workers)
    model_workers: int | None = None
    # processes running each model (process_main.py), each with its own GIL, decode threads
    # and batcher; 0: the model runs in the server's process, on threads (local.py)
    model_processes: int = 1
    warmup: bool = True  # run the bundled photographs through each model before ready

    def check(self) -> ServeConfig:
        """Self, or an OptionError saying what is wrong (a one-line CLI error)."""
        if not self.models and not self.model_repository:
            raise OptionError("no model to serve: pass -m MODEL (repeatable), --config FILE "
                              "or --model-repository DIR")
        names = [m.name for m in self.models]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise OptionError(f"model name(s) {', '.join(twice)} given twice: name them "
                              "NAME=MODEL")
        check_address(self.host, self.api_key)
        index_names = [i.name for i in self.indexes]
        if len(set(index_names)) != len(index_names):
            raise OptionError("an index name is given twice: name them NAME=RUN_DIR")
        for what, value, low in (("max_body_bytes", self.max_body_bytes, 1),
                                 ("max_queue", self.max_queue, 1),
                                 ("max_batch_size", self.max_batch_size, 1),
                                 ("decode_threads", self.decode_threads, 0),
                                 ("model_threads", self.model_threads, 1),
                                 ("model_workers", self.model_workers, 1),
                                 ("model_processes", self.model_processes, 0),
                                 ("max_pixels", self.max_pixels, 1)):
            if value is not None and value < low:
                raise OptionError(f"{what} must be >= {low}, got {value}")
        if not 0 <= self.max_delay_ms <= 10_000:
            raise OptionError(f"max_delay_ms must be in [0, 10000], got {self.max_delay_ms}")
        if not self.timeout_s > 0:
            raise OptionError(f"timeout must be > 0 seconds, got {self.timeout_s}")
        if not 0 <= self.port <= 65535:
            raise OptionError(f"port must be in [0, 65535], got {self.port}")
        if self.grpc_port is not None and not 0 < self.grpc_port <= 65535:
            raise OptionError(f"grpc_port must be in [1, 65535], got {self.grpc_port}")
        if self.grpc_port is not None and self.grpc_port == self.port:
            raise OptionError(f"the gRPC port and the HTTP port are both {self.port}")
        return self

    def with_overrides(self, **values: Any) -> ServeConfig:
        """A copy with the given values; None leaves a value as it is."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


def check_address(host: str, api_key: str | None) -> None:
    """Refuse to serve other machines without a key (OptionError: a one-line CLI error)."""
    if not is_loopback(host) and not api_key:
        raise OptionError(f"--host {host} is reachable from other machines: set an API key "
                          f"with --api-key or {API_KEY_ENV} (or bind 127.0.0.1)")
    if api_key is not None and len(api_key) < 16:
        raise OptionError("the API key must be at least 16 characters")


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def read_config(path: str | Path) -> ServeConfig:
    """A ServeConfig from a JSON or YAML file (models and limits; see the module doc)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TorchinferError(f"cannot read config {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise TorchinferError(f"{path}: reading YAML needs pyyaml (pip install pyyaml), "
                                  "or write the config as JSON") from None
        try:
            data = yaml.safe_load(text)  # plain data only: no tags that build objects
        except yaml.YAMLError as exc:
            raise TorchinferError(f"{path} is not valid YAML: {exc}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TorchinferError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}") \
                from None
    if not isinstance(data, dict):
        raise TorchinferError(f"{path}: expected a mapping with 'models', got "
                              f"{type(data).__name__}")
    return config_from_dict(data, str(path))


def config_from_dict(data: Mapping[str, Any], where: str = "config") -> ServeConfig:
    known = {f.name for f in fields(ServeConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TorchinferError(f"{where}: unknown key(s) {', '.join(unknown)}; known: "
                              f"{', '.join(sorted(known))}")
    if "api_key" in data:
        raise TorchinferError(f"{where}: keep the API key out of files: use {API_KEY_ENV} or "
                              "--api-key")
    models = []
    for i, entry in enumerate(data.get("models") or ()):
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or "model" not in entry:
            raise TorchinferError(f"{where}: models[{i}] needs a 'model'")
        allowed = {f.name for f in fields(ModelSpec)}
        extra = sorted(set(entry) - allowed)
        if extra:
            raise TorchinferError(f"{where}: models[{i}] has unknown key(s) {', '.join(extra)}; "
                                  f"known: {', '.join(sorted(allowed))}")
        if not isinstance(entry.get("options", {}), dict):
            raise TorchinferError(f"{where}: models[{i}].options must be a mapping")
        try:
            models.append(ModelSpec(**entry))
        except OptionError as exc:
            raise TorchinferError(f"{where}: models[{i}]: {exc}") from None
    indexes = []
    for i, entry in enumerate(data.get("indexes") or ()):
        if isinstance(entry, str):
            entry = {"folder": entry}
        if not isinstance(entry, dict) or set(entry) - {"folder", "name"} or \
                not isinstance(entry.get("folder"), str):
            raise TorchinferError(f"{where}: indexes[{i}] is a run folder, or {{folder, name}}")
        try:
            indexes.append(IndexSpec(**entry))
        except OptionError as exc:
            raise TorchinferError(f"{where}: indexes[{i}]: {exc}") from None
    rest = {k: v for k, v in data.items() if k not in ("models", "indexes")}
    if "model_repository" in rest:
        folders = rest["model_repository"]
        if not isinstance(folders, list) or not all(isinstance(f, str) for f in folders):
            raise TorchinferError(f"{where}: model_repository is a list of folders")
        rest["model_repository"] = tuple(folders)
    return ServeConfig(models=tuple(models), indexes=tuple(indexes), **rest)
