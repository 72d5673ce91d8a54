"""Exceptions with messages a user can act on.

Every error names the thing that is wrong (a file, a model, a device) and, where we can tell,
what to do about it. Library code raises these; the CLI turns them into one red line and an
exit code instead of a traceback.
"""

from __future__ import annotations


class TorchinferError(Exception):
    """Base class: anything the user can fix by changing an argument or a file."""


class OptionError(TorchinferError, ValueError):
    """An option's value is outside what it accepts (``top_k=0``, ``conf=2``...)."""


class ModelNotFoundError(TorchinferError):
    """The model name is neither a torchvision model nor an importable ``pkg.module:factory``."""


class WeightsError(TorchinferError):
    """A weights file cannot be read, or is refused (e.g. a pickle without ``trust_pickle``)."""


class UntrustedCodeError(WeightsError):
    """A file would run code (a pickle's callables, a factory it names) the user did not opt in to."""


class WeightsMismatchError(WeightsError):
    """The weights do not fit the architecture: missing/unexpected keys or shape mismatches."""


class WeightsUnavailableError(WeightsError):
    """Named torchvision weights are neither in the local cache nor downloadable."""


class DeviceError(TorchinferError):
    """The requested device does not exist on this machine."""


class InputError(TorchinferError):
    """One input (a file, bytes, an array) cannot be turned into an image.

    ``source`` names the input so batch runs can record the failure and go on.
    """

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class MissingExtraError(TorchinferError):
    """An optional dependency is missing; the message names the extra that installs it."""

    def __init__(self, package: str, extra: str):
        super().__init__(f"{package} is not installed: pip install 'torchinfer[{extra}]'")


def first_line(message: object) -> str:
    """An error's (or a warning's) message in one line, its first that is not blank
    (pyarrow's, Ray's and torch's span several); the type's name when it says nothing."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return lines[0] if lines else type(message).__name__
