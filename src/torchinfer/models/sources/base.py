"""What a model source is: something that recognises a ``-m`` value and builds what it names.

A source answers three questions about a model spec (the string after ``-m``, or ``model=``
in Python):

- ``recognises(spec)``: is it mine? Cheap, and never imports an optional package: a timm
  folder is recognised without timm installed, so that loading it can name the extra;
- ``task(spec)``: which task, if the name or the files say (without building the model);
- ``load(spec, request)``: the module in eval mode with its preprocessing recipe, labels and
  task, as a ``LoadedModel``.

Sources are kept in a table (``sources.registry``) that the CLI, the server and Ray all read
through ``load_model``; a third-party package adds one through the ``torchinfer.sources``
entry-point group.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ...errors import MissingExtraError
from ..building import Trust
from ..loaded import LoadedModel


@dataclass(frozen=True)
class SourceRequest:
    """What the caller asked for besides the spec: weights to load into what is built, the
    head's size, strictness, what files may do (``trust``), and builder arguments."""

    weights: str | Path | None = None
    num_classes: int | None = None
    strict: bool = True
    trust: Trust = field(default_factory=Trust)
    model_kwargs: dict[str, Any] = field(default_factory=dict)


class ModelSource(ABC):
    """One kind of model a user can name. Subclasses set ``name`` and, for an optional
    package, ``requires`` = (import name, torchinfer extra)."""

    name: ClassVar[str]
    requires: ClassVar[tuple[str, str] | None] = None

    @abstractmethod
    def recognises(self, spec: str) -> bool:
        """Whether ``spec`` names a model of this source (no building, no optional imports)."""

    def task(self, spec: str) -> str | None:
        """The task the name or its files say, or None when only building would tell."""
        return None

    def holds_weights(self, spec: str) -> bool:
        """Whether what ``spec`` names brings its own weights (a file, a saved folder); else
        it is built with random weights unless weights are given."""
        return False

    @abstractmethod
    def load(self, spec: str, request: SourceRequest) -> LoadedModel:
        """Build the model ``spec`` names, in eval mode on the CPU, with its recipe and labels."""

    def check_installed(self) -> None:
        """Raise MissingExtraError naming the extra when the optional package is absent."""
        if self.requires is None:
            return
        module, extra = self.requires
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(module, extra)
