"""The small trained models that ship inside the package (``scripts/train_shapes.py``), so the
demo and the tests have right answers on a machine with no downloads.

Each is a ``.safetensors`` file that describes itself: besides the weights, its metadata names
the architecture (``architecture``: a ``package.module:factory`` path, with ``model_kwargs``),
the ``task``, the ``labels`` and the ``preprocess`` config. ``load_model("shapes_detector")``
and ``load_model("path/to/file.safetensors")`` both build it from that alone.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from . import shapes
from .registry import ModelEntry, registered_models

# name -> task: the registered factories of the shapes module, each with its trained file
BUNDLED = {m.name: m.task for m in registered_models()
           if m.factory.__module__ == shapes.__name__ and m.task is not None}


def bundled_path(name: str) -> Path | None:
    """The packaged file of a bundled model name, or None if ``name`` is not one."""
    if name not in BUNDLED:
        return None
    path = Path(str(resources.files("torchinfer") / "assets" / f"{name}.safetensors"))
    return path if path.is_file() else None


def bundled_entries(task: str | None = None) -> list[ModelEntry]:
    """The bundled models whose file is present, as ``list_models`` rows."""
    return [ModelEntry(name, t, ("bundled",), None) for name, t in BUNDLED.items()
            if (task is None or t == task) and bundled_path(name) is not None]
