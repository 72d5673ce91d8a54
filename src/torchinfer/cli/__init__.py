"""The ``torchinfer`` command line: ``main`` (the console script) and ``run(args)``."""

from .app import main, run

__all__ = ["main", "run"]
