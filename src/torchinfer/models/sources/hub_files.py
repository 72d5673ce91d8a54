"""Folders as the Hugging Face hub holds them, found on disk and checked before anything is
built: timm and transformers both save ``config.json`` + ``model.safetensors``.

A spec names such a folder by its path, or by a hub id found in the local hub cache
(``hf-hub:ORG/NAME``, ``timm/NAME``, ``ORG/NAME``, each optionally ``@REVISION``). Nothing
here downloads: a missing cache entry is an error that says how to fetch it elsewhere.
What a folder's files may ask for is bounded here: the config's size, code it would import
(``auto_map``), pickled weights, label counts.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import TorchinferError, UntrustedCodeError, WeightsError

# a config is a few kilobytes (a detector's 1,000 labels: ~50 KB); more is not a config
MAX_CONFIG_BYTES = 4 * 1024 * 1024
# class counts: ImageNet-21k has 21,843, the largest label sets published are ~100k
MAX_LABELS = 100_000
HUB_PREFIX = "hf-hub:"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class HubFolder:
    """A model folder on disk; ``repo_id`` and ``revision`` (a commit) when it is a snapshot
    of the hub cache."""

    path: Path
    repo_id: str | None = None
    revision: str | None = None

    @property
    def label(self) -> str:
        """How records name it: the hub id at its commit, or the folder."""
        if self.repo_id is None:
            return str(self.path)
        return f"{HUB_PREFIX}{self.repo_id}@{self.revision}" if self.revision else \
            f"{HUB_PREFIX}{self.repo_id}"


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps downloads: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``~/.cache/huggingface/hub`` (``$XDG_CACHE_HOME`` respected), as huggingface_hub decides."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface")
    return Path(home).expanduser() / "hub"


def parse_hub_id(spec: str) -> tuple[str, str | None] | None:
    """(repo id, revision or None) if ``spec`` is a hub id: ``hf-hub:ORG/NAME[@REV]`` always,
    ``ORG/NAME[@REV]`` when no such path exists here; else None."""
    prefixed = spec.startswith(HUB_PREFIX)
    rest = spec[len(HUB_PREFIX):] if prefixed else spec
    if not prefixed and (Path(spec).exists() or "\\" in spec):
        return None
    repo, _, revision = rest.partition("@")
    if not _REPO_ID.match(repo) or ".." in repo:
        return None
    return repo, revision or None


def cache_folder(repo_id: str) -> Path:
    return hub_cache_dir() / f"models--{repo_id.replace('/', '--')}"


def cached_snapshot(repo_id: str, revision: str | None) -> HubFolder | None:
    """The snapshot folder of ``repo_id`` at ``revision`` (a branch, tag or commit; "main" if
    None) in the hub cache, or None when it is not there."""
    root = cache_folder(repo_id)
    wanted = revision or "main"
    if ".." in wanted or wanted.startswith("/"):
        return None  # a revision names a ref inside the cache entry, never a path out of it
    commit = wanted if _COMMIT.match(wanted) else None
    if commit is None:
        ref = root / "refs" / wanted
        if not ref.is_file():
            return None
        commit = ref.read_text(encoding="ascii", errors="replace").strip()
        if not _COMMIT.match(commit):
            return None
    folder = root / "snapshots" / commit
    return HubFolder(folder, repo_id, commit) if (folder / "config.json").is_file() else None


def local_folder(spec: str) -> HubFolder | None:
    """The model folder ``spec`` names (a folder with a ``config.json``, or a hub id in the
    cache), or None."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return HubFolder(path) if (path / "config.json").is_file() else None
    hub_id = parse_hub_id(spec)
    return cached_snapshot(*hub_id) if hub_id is not None else None


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``, size-capped; one line naming the file otherwise."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise WeightsError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if size > MAX_CONFIG_BYTES:
        raise WeightsError(f"{what} {path} is {size:,} bytes; a config is at most "
                           f"{MAX_CONFIG_BYTES:,}: refused")
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"),
                          parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise WeightsError(f"{what} {path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise WeightsError(f"{what} {path} must hold a JSON object, got {type(data).__name__}")
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a config may hold")


def config_kind(folder: HubFolder) -> str | None:
    """"timm" or "transformers", by what ``config.json`` holds (None if neither, or unreadable:
    the error comes when it is loaded)."""
    try:
        config = read_json(folder.path / "config.json", "config")
    except TorchinferError:
        return None
    if isinstance(config.get("architecture"), str) and "pretrained_cfg" in config:
        return "timm"
    if isinstance(config.get("architectures"), list) or isinstance(config.get("model_type"), str):
        return "transformers"
    return None


def refuse_remote_code(folder: HubFolder, configs: dict[str, dict[str, Any]],
                       trust_code: bool) -> None:
    """A config with ``auto_map`` names Python files in the folder that transformers would
    import (``trust_remote_code``): refused unless the caller trusts code."""
    for name, config in configs.items():
        if "auto_map" in config and not trust_code:
            raise UntrustedCodeError(
                f"{folder.path / name} has an auto_map: building it would import Python code "
                "from the model's folder (trust_remote_code); pass --trust-code (Python: "
                "trust_code=True) if you trust it")


def weights_file(folder: HubFolder, trust_pickle: bool) -> Path:
    """The folder's safetensors weights (one file or a sharded index), or its pickled
    ``pytorch_model.bin`` only with ``trust_pickle``."""
    for name in SAFETENSORS:
        if (folder.path / name).is_file():
            return folder.path / name
    pickled = next((folder.path / n for n in PICKLED if (folder.path / n).is_file()), None)
    if pickled is None:
        raise WeightsError(f"{folder.path} holds no weights: expected model.safetensors")
    if not trust_pickle:
        raise WeightsError(f"{folder.path} has only pickled weights ({pickled.name}), which can "
                           "run code when read; convert them to model.safetensors, or pass "
                           "--trust-pickle (Python: trust_pickle=True) if you trust the file")
    return pickled


def bounded_labels(names: list[str], where: Path) -> list[str]:
    if len(names) > MAX_LABELS:
        raise WeightsError(f"{where}: {len(names):,} labels; at most {MAX_LABELS:,} are "
                           "accepted: refused")
    return names


def labels_by_index(mapping: Any, where: Path) -> list[str] | None:
    """``id2label`` ({"0": "cat", ...}) as a list by index; None when absent."""
    if mapping is None:
        return None
    if not isinstance(mapping, dict):
        raise WeightsError(f"{where}: id2label must be an object, got {type(mapping).__name__}")
    if len(mapping) > MAX_LABELS:
        raise WeightsError(f"{where}: {len(mapping):,} labels; at most {MAX_LABELS:,} are "
                           "accepted: refused")
    try:
        by_index = {int(k): str(v) for k, v in mapping.items()}
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{where}: id2label keys must be class indices ({exc})") from exc
    if sorted(by_index) != list(range(len(by_index))):
        raise WeightsError(f"{where}: id2label must number classes 0..{len(by_index) - 1} "
                           "without gaps")
    return [by_index[i] for i in range(len(by_index))]


def missing_message(repo_id: str, revision: str | None) -> str:
    """One line: where the cache entry was looked for, and how to fetch it with network."""
    rev = f" --revision {revision}" if revision else ""
    return (f"{repo_id} is not in the local hub cache ({cache_folder(repo_id)}); nothing is "
            f"downloaded here. On a machine with network: hf download {repo_id}{rev} (set "
            "HF_HUB_CACHE to the same cache), or save the model to a folder and pass its path")
