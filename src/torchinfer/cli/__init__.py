"""The ``torchinfer`` command line: ``main`` (the console script) and ``run(args)``.

Both are imported on first use, so a server or a script can import the options objects
(``torchinfer.cli.options``) without typer and rich.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["main", "run"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'torchinfer.cli' has no attribute {name!r}")
    from . import app

    return getattr(app, name)


if TYPE_CHECKING:
    from .app import main, run
