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

BUNDLED = {"shapes_classifier": "classify", "shapes_segmenter": "segment",
           "shapes_detector": "detect"}


def bundled_path(name: str) -> Path | None:
    """The packaged file of a bundled model name, or None if ``name`` is not one."""
    if name not in BUNDLED:
        return None
    path = Path(str(resources.files("torchinfer") / "assets" / f"{name}.safetensors"))
    return path if path.is_file() else None
