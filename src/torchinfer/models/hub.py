"""torchvision's named pretrained weights (``DEFAULT``, ``MobileNet_V2_Weights.IMAGENET1K_V1``),
fetched through torch's hub cache but unpickled safely by us.

torchvision's own path unpickles the cached file with ``weights_only=False``; a tampered cache
file could then run code. We keep torchvision's builders (they set per-weights arguments such as
``num_classes``, ``transform_input`` or ViT's ``image_size``) but hand them the state dict we
loaded with ``weights_only=True``.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import get_model_weights, get_weight
from torchvision.models._api import WeightsEnum

from ..errors import WeightsError, WeightsUnavailableError
from .weights import read_weights

OFFLINE_ENV = "TORCHINFER_OFFLINE"
_WEIGHTS_NAME = re.compile(r"(\w+_Weights\.)?[A-Z][A-Z0-9_]*")
_builder_lock = threading.Lock()


def is_named_weights(spec: str) -> bool:
    """True for ``DEFAULT``, ``IMAGENET1K_V1`` or ``Some_Weights.NAME``: names, not paths."""
    return spec.upper() == "DEFAULT" or bool(_WEIGHTS_NAME.fullmatch(spec))


def resolve_named_weights(model_name: str, spec: str) -> WeightsEnum:
    try:
        enum_cls = get_model_weights(model_name)
    except ValueError as exc:
        raise WeightsError(f"torchvision publishes no weights for {model_name!r}") from exc
    if spec.upper() == "DEFAULT":
        return enum_cls.DEFAULT
    try:
        weights = get_weight(spec) if "." in spec else enum_cls[spec]
    except (KeyError, ValueError, AttributeError) as exc:
        names = ", ".join(w.name for w in enum_cls)
        raise WeightsError(f"unknown weights {spec!r} for {model_name}: use DEFAULT or one of "
                           f"{names}") from exc
    if not isinstance(weights, enum_cls):
        raise WeightsError(f"weights {spec!r} are for another architecture, not {model_name} "
                           f"(which takes {enum_cls.__name__})")
    return weights


def cache_path(weights: WeightsEnum) -> Path:
    """Where torch.hub keeps (or would keep) the file: $TORCH_HOME/hub/checkpoints/<name>."""
    filename = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def fetch_state_dict(weights: WeightsEnum) -> dict[str, torch.Tensor]:
    """The weights' state dict from the local cache, downloading it first when allowed."""
    path = cache_path(weights)
    if not path.is_file():
        _download(weights, path)
    return read_weights(path).tensors()


def _download(weights: WeightsEnum, path: Path) -> None:
    unavailable = (f"{weights} are not in the local cache and could not be downloaded.\n"
                   f"  Download {weights.url}\n  and put it at {path}")
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise WeightsUnavailableError(f"{unavailable}\n  ({OFFLINE_ENV} is set: no download tried)")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # check_hash: torchvision file names carry a prefix of the file's sha256
        torch.hub.download_url_to_file(weights.url, str(path), hash_prefix=_hash_prefix(path))
    except (URLError, OSError, RuntimeError) as exc:
        raise WeightsUnavailableError(f"{unavailable}\n  (download failed: {exc})") from exc


def _hash_prefix(path: Path) -> str | None:
    stem = path.name.split(".")[0]
    candidate = stem.rsplit("-", 1)[-1] if "-" in stem else ""
    return candidate if len(candidate) >= 6 and all(c in "0123456789abcdef" for c in candidate) else None


def build_with_named_weights(builder: Callable[..., nn.Module], weights: WeightsEnum,
                             **kwargs: Any) -> nn.Module:
    state_dict = fetch_state_dict(weights)
    with _serve_state_dict(weights, state_dict):
        return builder(weights=weights, progress=False, **kwargs)


@contextmanager
def _serve_state_dict(weights: WeightsEnum, state_dict: dict[str, torch.Tensor]):
    # Builders call weights.get_state_dict(); shadow it on this enum member for the duration of
    # one build (under a lock: enum members are shared by every thread).
    with _builder_lock:
        weights.get_state_dict = lambda *args, **kw: state_dict
        try:
            yield
        finally:
            del weights.get_state_dict
