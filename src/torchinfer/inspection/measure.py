"""``inspect_model``: parameters, MACs/FLOPs, shapes and memory of a model for one input (the
counting itself is in :mod:`.counting`, the report types in :mod:`.report`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from torch import nn

from ..errors import OptionError
from .counting import Trace, count_on_meta, count_real, model_device
from .report import LayerStats, ModelReport

__all__ = ["RunOn", "inspect_model"]

RunOn = Literal["auto", "meta", "real"]

# Bytes per parameter for the memory estimates in the report.
_BYTES_FP32, _BYTES_FP16, _BYTES_INT8 = 4, 2, 1


def inspect_model(
    model: nn.Module,
    *,
    input_shape: Sequence[int] = (1, 3, 224, 224),
    depth: int | None = None,
    include_other_ops: bool = False,
    file_path: str | os.PathLike[str] | None = None,
    run_on: RunOn = "auto",
) -> ModelReport:
    """Count parameters, MACs/FLOPs, shapes and memory of ``model`` for one input.

    Args:
        model: the model, built by the caller; it is not modified (mode, device,
            weights and hooks are as before when this returns).
        input_shape: shape of the single input tensor, batch included.
        depth: fold the per-layer rows to this depth (1 = the model's children);
            None keeps the whole tree.  Folded rows aggregate their subtree.
        include_other_ops: also estimate elementwise work (norms, activations,
            adds, softmax, pooling, resizing) as ``other_ops``; ``macs`` is the
            same either way.
        file_path: a saved model file whose size to report.
        run_on: "auto" (meta, falling back to real compute when the model cannot
            run on meta), "meta" (fail instead of falling back) or "real" (run on
            the model's own device with a seeded random input).
    """
    shape = _validate(model, input_shape, depth, file_path, run_on)
    param_stats = _param_stats(model)

    meta_error: str | None = None
    trace: Trace | None = None
    counted_on = "meta"
    if run_on in ("auto", "meta"):
        try:
            trace = count_on_meta(model, shape)
        except Exception as exc:  # any failure: missing meta kernel, .item(), data-dependent shape...
            if run_on == "meta":
                raise RuntimeError(f"{type(model).__name__} cannot be counted on meta tensors: {exc}") from exc
            meta_error = _first_sentence(exc)
    if trace is None:
        device = model_device(model)
        if device.type == "meta":
            raise RuntimeError(
                f"{type(model).__name__} is on the meta device and cannot run on meta tensors"
                + (f" ({meta_error})" if meta_error else "")
                + "; build it on a real device to count it with real compute"
            )
        trace = count_real(model, shape, device)
        counted_on = str(device)

    all_rows = _build_rows(model, trace, include_other_ops)
    unused = _never_run(model, trace)
    total = all_rows[0]
    layers = tuple(row for row in all_rows if depth is None or row.depth <= depth)
    return ModelReport(
        model_name=type(model).__name__,
        input_shape=shape,
        counted_on=counted_on,
        fallback_reason=meta_error,
        **param_stats,
        params_in_eval=param_stats["params_total"] - _unique_params(model, unused),
        unused_modules=tuple(unused),
        macs=total.macs,
        flops=2 * total.macs,
        other_ops=total.other_ops,
        activation_bytes=trace.activation_elements * _BYTES_FP32,
        file_size_bytes=os.path.getsize(file_path) if file_path is not None else None,
        depth=depth,
        layers=layers,
        uncounted_ops=tuple(sorted(trace.uncounted_ops)),
    )



def _validate(
    model: nn.Module,
    input_shape: Sequence[int],
    depth: int | None,
    file_path: str | os.PathLike[str] | None,
    run_on: str,
) -> tuple[int, ...]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise TypeError(f"input_shape must be a sequence of ints, got {input_shape!r}")
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise OptionError(f"input_shape must be non-empty positive ints, got {input_shape!r}")
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 0):
        raise OptionError(f"depth must be None or an int >= 0, got {depth!r}")
    if file_path is not None and not Path(file_path).is_file():
        raise FileNotFoundError(f"model file not found: {file_path}")
    if run_on not in ("auto", "meta", "real"):
        raise ValueError(f"run_on must be 'auto', 'meta' or 'real', got {run_on!r}")
    return shape


def _param_stats(model: nn.Module) -> dict[str, int]:
    # parameters()/buffers() already de-duplicate tensors shared between modules.
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    buffers = list(model.buffers())
    return {
        "params_total": total,
        "params_trainable": trainable,
        "params_frozen": total - trainable,
        "buffers_total": sum(b.numel() for b in buffers),
        "buffers_bytes": sum(b.numel() * b.element_size() for b in buffers),
        "param_bytes_fp32": total * _BYTES_FP32,
        "param_bytes_fp16": total * _BYTES_FP16,
        "param_bytes_int8": total * _BYTES_INT8,
    }


def _never_run(model: nn.Module, trace: Trace) -> list[str]:
    """The outermost modules that hold parameters and that the forward never entered, nor any
    module inside them."""
    called = [path for path, n in trace.calls.items() if n]
    unused: list[str] = []
    for path, module in model.named_modules():
        if not path or any(path.startswith(u + ".") for u in unused):
            continue
        inside = any(c == path or c.startswith(path + ".") for c in called)
        if not inside and next(module.parameters(), None) is not None:
            unused.append(path)
    return unused


def _unique_params(model: nn.Module, paths: list[str]) -> int:
    """Parameters held only by the modules at ``paths`` (a tensor shared with a module that
    ran counts as run)."""
    modules = dict(model.named_modules())
    inside = {id(p) for path in paths for p in modules[path].parameters()}
    outside = {id(p) for path, m in model.named_modules() if path and path not in paths
               and not any(path.startswith(u + ".") for u in paths)
               for p in m.parameters(recurse=False)}
    return sum(p.numel() for p in model.parameters() if id(p) in inside - outside)


def _build_rows(model: nn.Module, trace: Trace, include_other_ops: bool) -> list[LayerStats]:
    """One row per module in named_modules() order, with inclusive totals summed
    over the ownership tree (children before parents)."""
    named = list(model.named_modules())
    macs = {path: trace.self_flops.get(path, 0) // 2 for path, _ in named}
    other = {path: trace.self_other.get(path, 0) for path, _ in named}
    # Work attributed to paths outside the tree cannot happen (hooks only exist on
    # tree modules), so every self count lands on a row.
    for path, _ in reversed(named):
        if path:
            parent = path.rsplit(".", 1)[0] if "." in path else ""
            macs[parent] += macs[path]
            other[parent] += other[path]
    total_macs = macs[""]
    return [
        LayerStats(
            path=path,
            type_name=type(module).__name__,
            depth=0 if not path else path.count(".") + 1,
            params=sum(p.numel() for p in module.parameters()),
            macs=macs[path],
            self_macs=trace.self_flops.get(path, 0) // 2,
            macs_percent=100.0 * macs[path] / total_macs if total_macs else 0.0,
            other_ops=other[path] if include_other_ops else None,
            calls=trace.calls.get(path, 0),
            output_shapes=trace.output_shapes.get(path, ()),
        )
        for path, module in named
    ]


def _first_sentence(exc: BaseException) -> str:
    """The exception's first sentence: enough to say why meta failed, short enough for a table."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if len(text) > 160 and ". " in text:
        text = text[: text.index(". ") + 1]
    return f"{type(exc).__name__}: {text}"[:300]
