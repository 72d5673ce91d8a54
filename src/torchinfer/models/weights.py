"""Read weights from local files safely and fit them to a model, or say exactly why not.

Safe by default: ``torch.load(..., weights_only=True)`` unpickles only tensors and plain
containers. A file that holds pickled Python objects (a whole ``nn.Module``, an Ultralytics
checkpoint) can run arbitrary code when loaded, so it is refused unless the caller passes
``trust_pickle=True``.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UntrustedCodeError, WeightsError, WeightsMismatchError, first_line
from .card import TORCHSCRIPT_EXTRA_FILE, ModelCard

# Where training code usually keeps the weights inside a checkpoint dict, in the order we look.
# EMA weights come after the raw ones: a file that has both gets the raw model, as in timm.
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network",
                   "weights", "params", "ema", "model_ema", "state_dict_ema")
# Keys torch fills in itself when they are absent (BatchNorm checkpoints from before torch 0.4.1).
_OPTIONAL_KEY_SUFFIXES = ("num_batches_tracked",)

TensorDict = dict[str, torch.Tensor]
# torch's weights-only unpickler names the class it refused: "Unsupported global: GLOBAL x.Y"
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


@dataclass
class WeightsFile:
    """What a file holds: a state dict, or a whole model (TorchScript or trusted pickle)."""

    path: Path
    state_dict: TensorDict | None = None
    module: nn.Module | None = None
    format: str = "state_dict"  # state_dict | checkpoint:<key> | safetensors | torchscript | pickle
    card: ModelCard = field(default_factory=ModelCard)  # what the file says about its model

    def tensors(self) -> TensorDict:
        if self.state_dict is not None:
            return self.state_dict
        assert self.module is not None  # one of the two is always set by read_weights
        return dict(self.module.state_dict())


def read_weights(path: str | Path, *, trust_pickle: bool = False) -> WeightsFile:
    """Read a ``.pth``/``.pt``/``.ckpt``/``.bin`` (state dict or checkpoint), ``.safetensors``
    or TorchScript archive. Tensors land on the CPU whatever device saved them."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if not path.is_file():
        raise WeightsError(f"weights path is not a file: {path}")
    if path.stat().st_size == 0:
        raise WeightsError(f"weights file is empty (0 bytes): {path}")
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    if _is_torchscript(path):
        extra = {TORCHSCRIPT_EXTRA_FILE: ""}  # torchinfer's export writes the card here
        try:
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except RuntimeError as exc:
            raise WeightsError(f"{path}: cannot load TorchScript archive ({exc})") from exc
        card = ModelCard.from_torchscript_json(extra[TORCHSCRIPT_EXTRA_FILE], str(path))
        return WeightsFile(path, module=module, format="torchscript", card=card)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _UNSUPPORTED_GLOBAL.search(str(exc))
        callables = pickle_callables(path)
        if found is None and not callables:  # not a pickle of objects, just unreadable
            raise WeightsError(f"{path}: not a readable PyTorch weights file "
                               f"({_last_error_line(exc)})") from exc
        if not trust_pickle:
            named = ", ".join(callables[:3]) if callables else found.group(1)  # type: ignore[union-attr]
            raise UntrustedCodeError(
                f"{path}: refused: the pickle would call {named}; pickled files can run code. "
                "If you trust where it came from, pass trust_pickle=True (CLI: "
                "--trust-pickle).") from exc
        obj = _load_trusted_pickle(path)
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable PyTorch weights file ({first_line(exc)})") from exc
    return _interpret(path, obj)


# Globals torch's weights-only unpickler rebuilds tensors and containers with: not worth naming.
_TENSOR_GLOBALS = ("torch.", "collections.OrderedDict", "builtins.", "__builtin__.", "_codecs.encode",
                   "numpy.core.multiarray._reconstruct", "numpy.dtype", "numpy.ndarray")
_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
                         "SHORT_BINSTRING", "BINSTRING", "STRING"})


def pickle_callables(path: Path) -> list[str]:
    """The ``module.name`` globals the pickles in ``path`` would import (and may call), other
    than torch's own tensor rebuilders, read without unpickling anything (``pickletools``)."""
    found: list[str] = []
    for data in _pickle_streams(path):
        for name in _globals_in(data):
            if not name.startswith(_TENSOR_GLOBALS) and name not in found:
                found.append(name)
    return found


def _pickle_streams(path: Path) -> list[bytes]:
    try:
        if zipfile.is_zipfile(path):  # torch.save's archive: the object graph is */data.pkl
            with zipfile.ZipFile(path) as zf:
                return [zf.read(n) for n in zf.namelist() if n.endswith(".pkl")][:16]
        with path.open("rb") as fh:
            return [fh.read(64 << 20)]  # legacy format: pickles one after another
    except (OSError, zipfile.BadZipFile, RuntimeError):
        return []


def _globals_in(data: bytes) -> list[str]:
    """GLOBAL and STACK_GLOBAL targets of every pickle in ``data`` (one after another)."""
    import io
    import pickletools

    names: list[str] = []
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        strings: list[str] = []  # strings pushed so far: STACK_GLOBAL takes the last two
        memo: dict[int, str] = {}  # memo slot -> string, for strings fetched back by GET
        memo_size, top_is_string = 0, False
        try:
            arg: Any
            for op, arg, _pos in pickletools.genops(stream):
                name, pushed_string = op.name, False
                if name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif name in _STRING_OPS:
                    strings.append(arg.decode("latin-1") if isinstance(arg, bytes) else str(arg))
                    pushed_string = True
                elif name in ("MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"):
                    slot = memo_size if name == "MEMOIZE" else int(arg)
                    memo_size = max(memo_size, slot + 1)
                    if top_is_string:
                        memo[slot] = strings[-1]
                    pushed_string = top_is_string  # a PUT leaves the stack as it was
                elif name in ("BINGET", "LONG_BINGET", "GET") and int(arg) in memo:
                    strings.append(memo[int(arg)])
                    pushed_string = True
                top_is_string = pushed_string
        except Exception:  # noqa: BLE001 - not (or no longer) a pickle: stop scanning
            break
    return names


def _load_trusted_pickle(path: Path) -> Any:
    try:
        # Explicitly requested by the caller through trust_pickle=True (see read_weights).
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # unpickling user classes can fail in many ways
        raise WeightsError(f"{path}: cannot unpickle ({type(exc).__name__}: {first_line(exc)}); "
                           "the classes it references must be importable") from exc


def _interpret(path: Path, obj: Any) -> WeightsFile:
    if isinstance(obj, nn.Module):
        return WeightsFile(path, module=obj, format="pickle")
    if _is_tensor_dict(obj):
        return WeightsFile(path, state_dict=dict(obj), format="state_dict")
    if isinstance(obj, Mapping):
        for key in CHECKPOINT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return WeightsFile(path, module=inner, format=f"pickle:{key}")
            if isinstance(inner, Mapping) and _is_tensor_dict(inner):
                return WeightsFile(path, state_dict=dict(inner), format=f"checkpoint:{key}")
        keys = ", ".join(map(str, list(obj)[:8]))
        raise WeightsError(f"{path}: a dict without model weights; looked for one of "
                           f"{', '.join(CHECKPOINT_KEYS)} but found keys: {keys}")
    raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict or model")


def _read_safetensors(path: Path) -> WeightsFile:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a valid safetensors file ({exc})") from exc
    card = ModelCard.from_safetensors_metadata(metadata, str(path))
    return WeightsFile(path, state_dict=tensors, format="safetensors", card=card)


def _is_torchscript(path: Path) -> bool:
    # torch.save and torch.jit.save both write zip archives; only TorchScript has code/ in it.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in zf.namelist())


def _is_tensor_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def _last_error_line(exc: BaseException) -> str:
    # torch's unpickling errors end with the actual reason after paragraphs of advice
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    reasons = [ln for ln in lines if "Unsupported" in ln or "error" in ln.lower()]
    return (reasons or lines or [type(exc).__name__])[-1]


# ---------------------------------------------------------------------------------------------
# Fitting a state dict to a model


@dataclass(frozen=True)
class KeyReport:
    """How a state dict's keys line up with a model's."""

    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # key, checkpoint, model

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def strip_common_prefixes(state_dict: TensorDict, model_keys: set[str]) -> TensorDict:
    """Drop wrapper prefixes (``module.`` from DataParallel/DDP, ``_orig_mod.`` from
    torch.compile, ``model.`` from Lightning...) that every key has and the model's keys lack."""
    sd = state_dict
    while sd:
        first = next(iter(sd))
        if "." not in first:
            break
        prefix = first.split(".", 1)[0] + "."
        if not all(k.startswith(prefix) for k in sd) or any(k.startswith(prefix) for k in model_keys):
            break
        stripped = {k[len(prefix):]: v for k, v in sd.items()}
        if len(model_keys & stripped.keys()) <= len(model_keys & sd.keys()):
            break  # stripping does not help: leave the keys as they are
        sd = stripped
    return sd


def compare_keys(state_dict: TensorDict, model: nn.Module) -> KeyReport:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith(_OPTIONAL_KEY_SUFFIXES)]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [(k, tuple(state_dict[k].shape), tuple(v.shape)) for k, v in expected.items()
                  if k in state_dict and state_dict[k].shape != v.shape]
    return KeyReport(missing, unexpected, mismatched)


def load_into(model: nn.Module, state_dict: TensorDict, *, strict: bool = True,
              source: str = "weights") -> KeyReport:
    """Load ``state_dict`` into ``model``; on any mismatch raise an error that lists it.

    Shapes are checked before anything is copied, so a failed load leaves the model untouched.
    With ``strict=False`` missing and unexpected keys are allowed (and returned), but a shape
    mismatch is still refused: there is no sensible partial value for a wrong-shaped tensor.
    """
    sd = strip_common_prefixes(state_dict, set(model.state_dict()))
    report = compare_keys(sd, model)
    if report.mismatched or (strict and not report.ok):
        raise WeightsMismatchError(describe_mismatch(report, source, model))
    model.load_state_dict(sd, strict=strict)
    return report


def describe_mismatch(report: KeyReport, source: str, model: nn.Module, limit: int = 5) -> str:
    lines = [f"{source} do not fit {type(model).__name__}:"]

    def block(title: str, items: list[str]) -> None:
        if items:
            more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
            lines.append(f"  {len(items)} {title}: {', '.join(items[:limit])}{more}")

    block("missing keys", report.missing)
    block("unexpected keys", report.unexpected)
    block("shape mismatches", [f"{k} checkpoint {list(a)} vs model {list(b)}"
                               for k, a, b in report.mismatched])
    hint = _likely_cause(report, model)
    if hint:
        lines.append(f"  likely cause: {hint}")
    return "\n".join(lines)


def _likely_cause(report: KeyReport, model: nn.Module) -> str | None:
    n_model = len(model.state_dict())
    if report.mismatched:
        heads = head_class_counts(report)
        if heads:
            n_ckpt, n_mod = next(iter(heads.items()))
            return (f"the checkpoint's output layer has {n_ckpt} classes, the model {n_mod}: "
                    f"pass num_classes={n_ckpt} (CLI: --num-classes {n_ckpt})")
    if report.missing and len(report.missing) == n_model - sum(
            1 for k in model.state_dict() if k.endswith(_OPTIONAL_KEY_SUFFIXES)):
        return "no key matches: the weights are for a different architecture, or use other names"
    if report.unexpected and not report.missing and not report.mismatched:
        return "the checkpoint has extra layers (e.g. auxiliary heads); use strict=False to ignore them"
    return None


def head_class_counts(report: KeyReport) -> dict[int, int]:
    """{checkpoint classes: model classes} when the mismatches are only output-layer sizes:
    every mismatched tensor differs in dim 0 alone (a Linear/Conv head's weight and bias)."""
    counts: dict[int, int] = {}
    for _key, ckpt_shape, model_shape in report.mismatched:
        if len(ckpt_shape) != len(model_shape) or ckpt_shape[1:] != model_shape[1:]:
            return {}
        counts[ckpt_shape[0]] = model_shape[0]
    return counts if len(counts) == 1 else {}
