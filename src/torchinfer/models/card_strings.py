"""A model card as a map of strings: the one form every file format keeps a card in.

The keys are the card's fields (``architecture``, ``model_kwargs``, ``task``, ``labels``,
``preprocess``, ``model_name``, ``input_size``, ``precision``, ``detector_format``,
``heads``), JSON where the value is not a string, and ``<package>_version`` for each recorded
version (torch's as ``torch`` alone, as the bundled models' headers have it). Any other key
is the card's ``extra``, kept as written; ``format`` is the container's own (``card_formats``)
and never part of the card. This module and ``card_formats`` are the only code that knows
these keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import TorchinferError, WeightsError
from .config import PreprocessConfig

# The container's own key: written by some formats (card_formats), never part of the card.
FORMAT_KEY = "format"
# The keys the card's own fields are stored under (ModelCard's fields less versions, extra
# and source: tests/test_model_card.py keeps the two in step).
CARD_KEYS = frozenset({"architecture", "model_kwargs", "task", "labels", "preprocess",
                       "model_name", "input_size", "precision", "detector_format", "heads"})
# Versions are stored as "<package>_version", except torch's in the bundled models' headers.
VERSION_KEYS = {"torch": "torch"}
VERSION_SUFFIX = "_version"


def card_strings(card: Mapping[str, Any]) -> dict[str, str]:
    """A card's fields (by name, as ``ModelCard`` holds them) as strings; absent ones left
    out."""
    out: dict[str, str] = {}
    for name in ("architecture", "task", "model_name"):
        if card[name] is not None:
            out[name] = card[name]
    if card["model_kwargs"]:
        out["model_kwargs"] = json.dumps(card["model_kwargs"])
    if card["labels"] is not None:
        out["labels"] = json.dumps(list(card["labels"]))
    if card["preprocess"] is not None:
        out["preprocess"] = json.dumps(card["preprocess"].to_dict())
    if card["input_size"] is not None:
        out["input_size"] = json.dumps(list(card["input_size"]))
    out["precision"] = card["precision"]
    if card["detector_format"] is not None:
        out["detector_format"] = card["detector_format"]
    if card["heads"] is not None:
        out["heads"] = json.dumps(list(card["heads"]))
    for package, version in card["versions"].items():
        out[VERSION_KEYS.get(package, package + VERSION_SUFFIX)] = version
    return {**out, **card["extra"]}


def card_fields(meta: Mapping[str, str], source: str) -> dict[str, Any]:
    """``ModelCard``'s keyword arguments from a map of strings read from ``source`` (its
    ``source`` too); a value that is not the JSON it should be is a WeightsError naming it."""
    rest = {k: v for k, v in meta.items() if k != FORMAT_KEY}

    def text(key: str) -> str | None:
        value = rest.pop(key, None)
        return value or None  # an empty value says nothing

    def data(key: str) -> Any:
        raw = rest.pop(key, None)
        if raw is None or raw == "":
            return None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, TypeError) as exc:
            raise WeightsError(f"{source}: metadata {key!r} is not valid JSON ({exc})") from exc

    kwargs = data("model_kwargs")
    fields = dict(architecture=text("architecture"), task=text("task"),
                  model_name=text("model_name"), detector_format=text("detector_format"),
                  precision=text("precision") or "fp32",
                  model_kwargs={} if kwargs is None else kwargs, labels=data("labels"),
                  preprocess=_preprocess(data("preprocess"), source),
                  input_size=data("input_size"), heads=data("heads"))
    versions = {package: rest.pop(key) for key in list(rest)
                if (package := version_package(key)) is not None}
    return {**fields, "versions": versions, "extra": rest, "source": source}


def version_package(key: str) -> str | None:
    """The package whose version ``key`` holds, or None for another key."""
    named = next((p for p, k in VERSION_KEYS.items() if k == key), None)
    if named is None and key.endswith(VERSION_SUFFIX) and len(key) > len(VERSION_SUFFIX):
        named = key.removesuffix(VERSION_SUFFIX)
    return named


def _preprocess(value: Any, source: str) -> PreprocessConfig | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise WeightsError(f"{source}: metadata 'preprocess' must be a JSON object, got "
                           f"{type(value).__name__}")
    try:
        return PreprocessConfig.from_dict(value)
    except TorchinferError as exc:
        raise WeightsError(f"{source}: metadata 'preprocess' is not a preprocessing config "
                           f"({exc})") from exc
