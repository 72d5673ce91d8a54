"""Procedural datasets: pictures made from a seed, with exact labels (nothing to download).

``shapes`` is imported on first use, so ``python -m torchinfer.datasets.shapes`` runs the module
once, as its own ``__main__``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CLASSES", "Instance", "Scene", "generate_scene", "generate_single", "scene_rng",
           "write_classification", "write_detection", "write_segmentation"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import shapes

        return getattr(shapes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
