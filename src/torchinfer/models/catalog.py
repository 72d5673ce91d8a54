"""``list_models``: every name that can be built, torchvision's and torchinfer's own."""

from __future__ import annotations

from .bundled import bundled_entries
from .registry import ModelEntry, registered_models, torchvision_entries


def list_models(task: str | None = None) -> list[ModelEntry]:
    """torchvision's models, the bundled ones and those registered with ``register_model``."""
    entries = torchvision_entries(task) + bundled_entries(task)
    listed = {e.name for e in entries}
    entries += [ModelEntry(m.name, m.task or "-", (), None) for m in registered_models()
                if m.name not in listed and (task is None or m.task == task)]
    return entries
