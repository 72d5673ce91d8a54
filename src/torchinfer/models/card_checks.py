"""The checks of a model card's values: a card read from a file is untrusted data.

Each check raises a WeightsError that starts with ``where`` (the file and "metadata", or
"model card:" for one made in code) and names the field.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import WeightsError
from .config import MAX_INPUT_SIDE

# Keyword arguments that make a builder fetch weights: a file may not start a download.
DOWNLOADING_KWARGS = frozenset({"weights", "weights_backbone", "pretrained",
                                "pretrained_backbone", "progress"})
HEAD_KEYS = ("name", "task", "output", "labels", "options")


def check_model_kwargs(kwargs: Any, where: str) -> None:
    """JSON data for the builder, which neither downloads nor resizes past the bound."""
    if not isinstance(kwargs, dict):
        raise WeightsError(f"{where} 'model_kwargs' must be a JSON object, got "
                           f"{type(kwargs).__name__}")
    try:
        json.dumps(kwargs, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{where} 'model_kwargs' must be JSON data ({exc})") from exc
    asked = sorted(DOWNLOADING_KWARGS & kwargs.keys())
    if asked:
        raise WeightsError(f"{where} 'model_kwargs' asks for {', '.join(asked)}: a "
                           "file's own weights are loaded, never downloaded ones")
    # image sizes a builder resizes to inside the model (a detector's min_size/max_size,
    # ViT's image_size): bounded like the preprocessing, since every image pays for them
    sizes = {k: v for k, v in kwargs.items() if "size" in k and isinstance(v, (int, float))
             and not isinstance(v, bool) and v > MAX_INPUT_SIDE}
    if sizes:
        raise WeightsError(f"{where} 'model_kwargs' asks for image sizes {sizes}: at most "
                           f"{MAX_INPUT_SIDE} pixels a side")


def checked_labels(labels: Any, where: str) -> tuple[str, ...]:
    if not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) for x in labels):
        raise WeightsError(f"{where} 'labels' must be a list of names (strings)")
    return tuple(labels)


def checked_input_size(size: Any, where: str) -> tuple[int, int]:
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in size):
        raise WeightsError(f"{where} 'input_size' must be [height, width] in positive "
                           f"ints, got {size!r}")
    return int(size[0]), int(size[1])


def checked_heads(heads: Any, where: str) -> tuple[dict[str, Any], ...]:
    """Heads as JSON data of the right shapes; which tasks and outputs they name is checked
    where the model's outputs are known (``tasks.heads``)."""
    if not isinstance(heads, (list, tuple)) or not heads or \
            not all(isinstance(h, dict) for h in heads):
        raise WeightsError(f"{where} 'heads' must be a non-empty list of JSON objects")
    for head in heads:
        for key in ("name", "task", "output"):
            if not isinstance(head.get(key), str) or not head[key]:
                raise WeightsError(f"{where} every head needs a non-empty string {key!r}, "
                                   f"got {head.get(key)!r}")
        labels = head.get("labels")
        if labels is not None and (not isinstance(labels, list)
                                   or not all(isinstance(x, str) for x in labels)):
            raise WeightsError(f"{where} head {head['name']!r}: 'labels' must be a list of "
                               "names (strings)")
        if not isinstance(head.get("options", {}), dict):
            raise WeightsError(f"{where} head {head['name']!r}: 'options' must be a JSON "
                               "object")
        unknown = sorted(set(head) - set(HEAD_KEYS))
        if unknown:
            raise WeightsError(f"{where} head {head['name']!r} has unknown keys "
                               f"{', '.join(unknown)}")
    names = [h["name"] for h in heads]
    if len(set(names)) != len(names):
        raise WeightsError(f"{where} head names must be unique, got {names}")
    return tuple(dict(h) for h in heads)


def check_string_map(value: Any, name: str, where: str) -> None:
    """``versions`` and ``extra``: names to strings."""
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise WeightsError(f"{where} {name!r} must map names to strings")
