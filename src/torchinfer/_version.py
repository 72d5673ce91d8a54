"""torchinfer's version, written here and nowhere else: pyproject.toml reads it from this file
(``[tool.setuptools.dynamic]``), the package root re-exports it, and the modules that record
it (model cards, the memo's keys, the server's metadata) import it from here. It imports
nothing, so every layer may import it."""

__version__ = "0.1.0"
