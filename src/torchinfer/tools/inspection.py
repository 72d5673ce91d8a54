"""Model inspection: parameters, MACs/FLOPs, output shapes and memory, per layer.

The counts are meant to be trusted against published numbers (torchvision's
``meta["num_params"]`` and ``meta["_ops"]``), so the conventions are explicit:

* **MACs** are multiply-accumulates of the matrix-like aten ops (convolution,
  mm/addmm/bmm/baddbmm, scaled-dot-product attention), counted by
  :class:`torch.utils.flop_counter.FlopCounterMode` at the aten level.  Biases,
  batch norm, activations, residual adds, pooling and resizing are *not* MACs
  (published MAC counts exclude them).  **FLOPs = 2 x MACs**, always.
* **other_ops** (opt-in) estimates that elementwise work separately, with the
  per-element costs listed in :data:`OTHER_OP_COSTS`.
* Counting describes *inference*: it runs on a copy in ``eval()`` mode with
  autograd off, the fused multi-head-attention fast path disabled and
  scaled-dot-product attention forced to the math kernel, so the number does
  not depend on the caller's mode, ``torch.inference_mode()``, the device or the
  kernel the dispatcher would pick.
* It first runs on ``meta`` tensors (no data, no real compute: a 600-GFLOP
  model is counted in well under a second).  Models with data-dependent
  control flow (detection: NMS, score thresholds) cannot run on meta; they are
  run for real on the model's own device with a seeded ``torch.rand`` input of
  ``input_shape``, and the report says so (``counted_on``, ``fallback_reason``).

Only torch, rich (lazily, for the table) and the standard library are used.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from ..errors import OptionError

if TYPE_CHECKING:  # rich is imported lazily so that `import torchinfer.tools.inspection` stays light
    from rich.table import Table

__all__ = [
    "OTHER_OP_COSTS",
    "LayerStats",
    "ModelReport",
    "format_count",
    "inspect_model",
]

RunOn = Literal["auto", "meta", "real"]

# Bytes per parameter for the memory estimates in the report.
_BYTES_FP32, _BYTES_FP16, _BYTES_INT8 = 4, 2, 1

# Seed of the random input used when a model has to run on real tensors, so a
# data-dependent count (detections above threshold) is reproducible.
_REAL_INPUT_SEED = 0


# --------------------------------------------------------------------------------------
# Report types
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerStats:
    """One module of the model (one row of the per-layer table).

    ``params``, ``macs`` and ``other_ops`` are *inclusive*: a row aggregates its
    whole subtree, so folding the table to a depth keeps totals intact.  The
    work a module does itself (e.g. ``F.linear`` on its own weights inside
    ``nn.MultiheadAttention``) rather than in a child module is ``self_macs``;
    hence ``macs == self_macs + sum(child.macs)`` for every row.

    A module instance registered under two names appears once, under its first
    name, and its work is attributed there.
    """

    path: str  # dotted module path as in named_modules(); "" is the model itself
    type_name: str
    depth: int  # 0 for the model, 1 for its children, ...
    params: int
    macs: int
    self_macs: int
    macs_percent: float  # share of the model's total MACs, 0..100
    other_ops: int | None  # None unless include_other_ops was requested
    calls: int  # how many times forward ran (0: not used for this input)
    output_shapes: tuple[tuple[int, ...], ...]  # tensors of the first call's output

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        """Shape of the first output tensor, or None if the module was not called."""
        return self.output_shapes[0] if self.output_shapes else None


@dataclass(frozen=True)
class ModelReport:
    """What :func:`inspect_model` found.  All counts are plain ints (elements, MACs, bytes).

    ``activation_bytes`` estimates activation memory as the fp32 size of every
    output tensor of every *leaf* module call (a module without children), i.e.
    what a forward pass writes if nothing is freed early.  Outputs that are the
    very tensor the module received (in-place ``ReLU(inplace=True)``) are not
    counted twice; work done outside leaf modules (a functional residual add)
    is not included.  It is an upper-bound-style estimate, not the peak of an
    allocator.
    """

    model_name: str
    input_shape: tuple[int, ...]
    counted_on: str  # "meta" or the real device ("cpu", "cuda:0") the count ran on
    fallback_reason: str | None  # why meta was not used, if it was not
    params_total: int
    params_trainable: int
    params_frozen: int
    # parameters of the modules one eval-mode forward runs: a module that holds parameters but
    # never runs (GoogLeNet's and Inception's auxiliary heads, built for training) is left out
    params_in_eval: int
    unused_modules: tuple[str, ...]  # the outermost modules with parameters that never ran
    buffers_total: int  # elements in registered buffers (BN running stats, ...)
    buffers_bytes: int  # at the buffers' own dtypes
    macs: int
    flops: int  # always 2 * macs
    other_ops: int | None  # elementwise work, only when requested; never part of macs
    activation_bytes: int
    param_bytes_fp32: int
    param_bytes_fp16: int
    param_bytes_int8: int
    file_size_bytes: int | None
    depth: int | None  # the depth `layers` is folded to (None: full tree)
    layers: tuple[LayerStats, ...]
    uncounted_ops: tuple[str, ...]  # ops that ran, do arithmetic, but have no MAC formula

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        return _jsonable(dataclasses.asdict(self))

    def to_rich_table(self, *, title: str | None = None) -> Table:
        """A rich Table of the per-layer rows, with the totals in the caption."""
        from rich.table import Table

        table = Table(title=title or f"{self.model_name} {_shape_str(self.input_shape)}")
        table.add_column("Layer", no_wrap=True)
        table.add_column("Type")
        table.add_column("Output shape")
        table.add_column("Params", justify="right")
        table.add_column("MACs", justify="right")
        table.add_column("% MACs", justify="right")
        if self.other_ops is not None:
            table.add_column("Other ops", justify="right")
        for row in self.layers:
            name = "  " * max(row.depth - 1, 0) + (row.path.rsplit(".", 1)[-1] if row.path else "(model)")
            cells = [
                name,
                row.type_name,
                ", ".join(_shape_str(s) for s in row.output_shapes) if row.calls else "-",
                format_count(row.params),
                format_count(row.macs),
                f"{row.macs_percent:.2f}",
            ]
            if self.other_ops is not None:
                cells.append(format_count(row.other_ops or 0))
            table.add_row(*cells)
        table.caption = "\n".join(self.summary_lines())
        return table

    def summary_lines(self) -> list[str]:
        """Human-readable totals, one fact per line (used as the table caption)."""
        lines = [
            f"Params: {self.params_total:,} (trainable {self.params_trainable:,}, frozen {self.params_frozen:,})",
        ]
        if self.unused_modules:
            lines.append(f"Params run in eval mode: {self.params_in_eval:,} "
                         f"({', '.join(self.unused_modules)} never run: "
                         f"{self.params_total - self.params_in_eval:,})")
        lines += [
            f"Buffers: {self.buffers_total:,} elements, {_bytes_str(self.buffers_bytes)}",
            f"MACs: {self.macs:,} ({self.gmacs:.3f} G)   FLOPs = 2 x MACs: {self.flops:,} ({self.gflops:.3f} G)",
        ]
        if self.other_ops is not None:
            lines.append(f"Other (elementwise) ops, not in MACs: {self.other_ops:,}")
        lines += [
            "Param memory: "
            f"fp32 {_bytes_str(self.param_bytes_fp32)}, fp16 {_bytes_str(self.param_bytes_fp16)}, "
            f"int8 {_bytes_str(self.param_bytes_int8)}",
            f"Activations (fp32, sum of leaf outputs): {_bytes_str(self.activation_bytes)}",
        ]
        if self.file_size_bytes is not None:
            lines.append(f"File size: {_bytes_str(self.file_size_bytes)}")
        how = "meta tensors (no compute)" if self.counted_on == "meta" else f"real compute on {self.counted_on}"
        lines.append(f"Counted on {how}, input {_shape_str(self.input_shape)}")
        if self.fallback_reason:
            lines.append(f"Meta run failed: {self.fallback_reason}")
        if self.uncounted_ops:
            lines.append(f"Not counted (no formula): {', '.join(self.uncounted_ops)}")
        return lines


# --------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------


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
    trace: _Trace | None = None
    counted_on = "meta"
    if run_on in ("auto", "meta"):
        try:
            trace = _count_on_meta(model, shape)
        except Exception as exc:  # any failure: missing meta kernel, .item(), data-dependent shape...
            if run_on == "meta":
                raise RuntimeError(f"{type(model).__name__} cannot be counted on meta tensors: {exc}") from exc
            meta_error = _one_line(exc)
    if trace is None:
        device = _model_device(model)
        if device.type == "meta":
            raise RuntimeError(
                f"{type(model).__name__} is on the meta device and cannot run on meta tensors"
                + (f" ({meta_error})" if meta_error else "")
                + "; build it on a real device to count it with real compute"
            )
        trace = _count_real(model, shape, device)
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


def format_count(n: int | float) -> str:
    """1234567 -> '1.23M' (K, M, G, T; plain below 1000)."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}"
    return str(int(n)) if float(n).is_integer() else f"{n:.2f}"


# --------------------------------------------------------------------------------------
# Validation and static (no forward pass) statistics
# --------------------------------------------------------------------------------------


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


def _never_run(model: nn.Module, trace: _Trace) -> list[str]:
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


def _model_device(model: nn.Module) -> torch.device:
    for tensor in _chain_tensors(model):
        return tensor.device
    return torch.device("cpu")


def _chain_tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    yield from model.parameters()
    yield from model.buffers()


# --------------------------------------------------------------------------------------
# Elementwise ("other") op costs
# --------------------------------------------------------------------------------------

# Estimated operations per *output* element (or per input element for
# reductions, see _REDUCTIONS).  Keys are aten op names; ops whose name is not
# available in the running torch are skipped.  The figures follow common
# practice (fvcore/thop style): one op per element for pointwise maths, batch
# norm folds into one multiply-add per element (2), layer/group norm needs mean,
# variance, normalise and affine (5), softmax is exp + sum + divide (3), a
# bilinear sample weighs 4 neighbours (4), bicubic 16.
OTHER_OP_COSTS: dict[str, int] = {
    # activations
    **dict.fromkeys(
        [
            "relu", "relu_", "relu6", "gelu", "gelu_", "silu", "silu_", "sigmoid", "sigmoid_",
            "tanh", "tanh_", "hardswish", "hardswish_", "hardsigmoid", "hardsigmoid_",
            "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "elu", "elu_", "mish",
            "mish_", "softplus", "clamp", "clamp_", "clamp_min", "clamp_min_", "clamp_max",
            "clamp_max_", "exp", "exp_", "sqrt", "rsqrt", "abs", "neg",
        ],
        1,
    ),
    # binary arithmetic
    **dict.fromkeys(
        ["add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "rsub", "addcmul", "where"],
        1,
    ),
    # normalisation.  These are the ops that reach the dispatcher after the
    # composite ones (batch_norm, layer_norm, softmax...) decompose; as they have
    # a formula here they are not decomposed further, so nothing counts twice.
    # instance_norm runs as batch norm with batch statistics.
    **dict.fromkeys(
        [
            "_native_batch_norm_legit_no_training", "_native_batch_norm_legit", "native_batch_norm",
            "_batch_norm_no_update", "_batch_norm_with_update", "cudnn_batch_norm", "miopen_batch_norm",
        ],
        2,
    ),
    "native_layer_norm": 5,
    "native_group_norm": 5,
    # softmax
    "_softmax": 3,
    "_safe_softmax": 3,
    "_log_softmax": 3,
    # resizing
    "upsample_nearest1d": 1,
    "upsample_nearest2d": 1,
    "upsample_nearest3d": 1,
    "_upsample_nearest_exact2d": 1,
    "upsample_linear1d": 2,
    "upsample_bilinear2d": 4,
    "_upsample_bilinear2d_aa": 4,
    "upsample_bicubic2d": 16,
    "upsample_trilinear3d": 8,
    # pooling: per output element for windowed pools (window size multiplies), per
    # input element for global/adaptive averages and reductions.
    "max_pool2d_with_indices": 1,
    "max_pool2d": 1,
    "avg_pool2d": 1,
    "adaptive_avg_pool2d": 1,
    "_adaptive_avg_pool2d": 1,
    "adaptive_max_pool2d": 1,
    "mean": 1,
    "sum": 1,
}

# Ops whose cost is counted per input element (a reduction reads everything once).
_REDUCTIONS = frozenset({"adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_max_pool2d", "mean", "sum"})
# Windowed pools: cost per output element is the window area (args[1] = kernel size).
_WINDOWED = frozenset({"max_pool2d_with_indices", "max_pool2d", "avg_pool2d"})

# Ops that do real arithmetic but have no MAC formula in torch's registry.  They
# are watched so the report can say that their work is missing, instead of
# silently counting zero (the CPU multi-head-attention fast path is one).
_UNCOUNTED_WATCH: tuple[tuple[str, str], ...] = (
    ("aten", "_native_multi_head_attention"),
    ("aten", "_transformer_encoder_layer_fwd"),
    ("aten", "_scaled_dot_product_attention_math_for_mps"),
    ("torchvision", "roi_align"),
    ("torchvision", "roi_pool"),
    ("torchvision", "ps_roi_align"),
    ("torchvision", "ps_roi_pool"),
    ("torchvision", "deform_conv2d"),
)

# Fused attention kernels with query/key/value shaped [batch, heads, seq, dim]
# that torch's flop registry does not cover (the CPU flash kernel in particular).
_EXTRA_SDPA_OPS = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable")


def _op_packet(namespace: str, name: str) -> Any | None:
    """torch.ops.<namespace>.<name>, or None when this build of torch/torchvision lacks it."""
    try:
        return getattr(getattr(torch.ops, namespace), name)
    except (AttributeError, RuntimeError):
        return None


def _numel(value: Any) -> int:
    """Elements of the first tensor in an op output (ops like native_batch_norm return tuples)."""
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, (tuple, list)) and value:
        return _numel(value[0])
    return 0


def _window_area(args: tuple[Any, ...]) -> int:
    kernel = args[1] if len(args) > 1 else 1
    if isinstance(kernel, int):
        return kernel * kernel
    sizes = list(kernel)
    return math.prod(sizes) if len(sizes) > 1 else sizes[0] * sizes[0]


def _sdpa_flops(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> int:
    """FLOPs (2 x MACs) of softmax(Q K^T) V for [..., seq, dim] shaped q/k/v."""
    *batch, s_q, d_qk = query.shape
    s_k = key.shape[-2]
    d_v = value.shape[-1]
    return 2 * math.prod(batch) * s_q * s_k * (d_qk + d_v)


# --------------------------------------------------------------------------------------
# The trace: module attribution, shapes and activation sizes for one forward pass
# --------------------------------------------------------------------------------------


@dataclass
class _Trace:
    """Everything recorded while the model runs once."""

    self_flops: defaultdict[str, int] = dataclasses.field(default_factory=lambda: defaultdict(int))
    self_other: defaultdict[str, int] = dataclasses.field(default_factory=lambda: defaultdict(int))
    calls: defaultdict[str, int] = dataclasses.field(default_factory=lambda: defaultdict(int))
    output_shapes: dict[str, tuple[tuple[int, ...], ...]] = dataclasses.field(default_factory=dict)
    activation_elements: int = 0
    uncounted_ops: set[str] = dataclasses.field(default_factory=set)
    counter_total_flops: int = 0  # FlopCounterMode's own total, cross-checked


class _Tracer:
    """Module hooks that keep a stack of the running module paths, plus the op
    formulas handed to FlopCounterMode that attribute each op to the top of it.

    FlopCounterMode's own per-module breakdown keys modules by name strings and
    credits every module on the call stack; attributing each op once, to the
    innermost running module, and summing up the ownership tree afterwards keeps
    ``parent == self + children`` exact.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.trace = _Trace()
        self._stack: list[str] = []
        self._handles: list[Any] = []
        # First name wins for a module registered twice (named_modules de-duplicates).
        self._paths = {id(m): path for path, m in model.named_modules()}
        self._leaves = {id(m) for m in model.modules() if next(m.children(), None) is None}

    # -- module hooks --------------------------------------------------------------

    def __enter__(self) -> _Tracer:
        for module in self.model.modules():
            path = self._paths[id(module)]
            self._handles.append(module.register_forward_pre_hook(self._pre_hook_for(path)))
            self._handles.append(
                module.register_forward_hook(self._post_hook_for(path, id(module)), with_kwargs=True, always_call=True)
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _pre_hook_for(self, path: str) -> Callable[..., None]:
        def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            self._stack.append(path)
            self.trace.calls[path] += 1

        return pre_hook

    def _post_hook_for(self, path: str, module_id: int) -> Callable[..., None]:
        is_leaf = module_id in self._leaves

        def post_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            # Pop up to and including this module (robust if a child raised).
            while self._stack:
                if self._stack.pop() == path:
                    break
            outputs = list(_tensors_in(output))
            if path not in self.trace.output_shapes:
                self.trace.output_shapes[path] = tuple(tuple(t.shape) for t in outputs)
            if is_leaf:
                inputs = {id(t) for t in _tensors_in((args, kwargs))}
                self.trace.activation_elements += sum(t.numel() for t in outputs if id(t) not in inputs)

        return post_hook

    @property
    def current(self) -> str:
        return self._stack[-1] if self._stack else ""

    # -- op formulas for FlopCounterMode ---------------------------------------------

    def custom_mapping(self) -> dict[Any, Callable[..., int]]:
        mapping: dict[Any, Callable[..., int]] = {}
        for packet, formula in flop_registry.items():
            mapping[packet] = self._mac_formula(formula)
        for name in _EXTRA_SDPA_OPS:
            packet = _op_packet("aten", name)
            if packet is not None and packet not in mapping:
                mapping[packet] = self._mac_formula(_raw_sdpa_formula)
        for name, cost in OTHER_OP_COSTS.items():
            packet = _op_packet("aten", name)
            if packet is not None and packet not in mapping:
                mapping[packet] = self._other_formula(name, cost)
        for namespace, name in _UNCOUNTED_WATCH:
            packet = _op_packet(namespace, name)
            if packet is not None and packet not in mapping:
                mapping[packet] = self._uncounted_formula(f"{namespace}::{name}")
        return mapping

    def _mac_formula(self, formula: Callable[..., int]) -> Callable[..., int]:
        def counted(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
            flops = int(formula(*args, out_val=out_val, **kwargs))
            self.trace.self_flops[self.current] += flops
            return flops

        counted._get_raw = True  # type: ignore[attr-defined]  # receive tensors, not shapes
        return counted

    def _other_formula(self, name: str, cost: int) -> Callable[..., int]:
        def counted(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
            if name in _REDUCTIONS:
                ops = _numel(args[0]) * cost if args else 0
            elif name in _WINDOWED:
                ops = _numel(out_val) * cost * _window_area(args)
            else:
                ops = _numel(out_val) * cost
            self.trace.self_other[self.current] += ops
            return 0  # never part of FLOPs

        counted._get_raw = True  # type: ignore[attr-defined]
        return counted

    def _uncounted_formula(self, qualified_name: str) -> Callable[..., int]:
        def counted(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
            self.trace.uncounted_ops.add(qualified_name)
            return 0

        counted._get_raw = True  # type: ignore[attr-defined]
        return counted


def _raw_sdpa_formula(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any) -> int:
    return _sdpa_flops(query, key, value)


def _tensors_in(obj: Any, _depth: int = 0) -> Iterator[torch.Tensor]:
    """Tensors inside nested tuples/lists/dicts and simple containers such as
    torchvision's ImageList (tensors held as attributes), in order."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif _depth > 6 or isinstance(obj, (str, bytes, nn.Module)):
        return
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors_in(value, _depth + 1)
    elif isinstance(obj, (tuple, list)):
        for value in obj:
            yield from _tensors_in(value, _depth + 1)
    elif hasattr(obj, "__dict__") and not callable(obj):
        for value in vars(obj).values():
            yield from _tensors_in(value, _depth + 1)


# --------------------------------------------------------------------------------------
# Running the model
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _canonical_kernels() -> Iterator[None]:
    """Make the aten op stream independent of mode, device and kernel choice.

    * The multi-head-attention / TransformerEncoderLayer fast path runs one
      fused op (``_native_multi_head_attention``) in eval + no-grad on CPU/CUDA
      that no flop formula covers; turning it off runs the same maths as
      linear + attention ops.
    * Scaled-dot-product attention is pinned to the math kernel, which
      decomposes into matmuls, so meta, CPU and CUDA see the same ops.

    The fast-path switch is process-global (restored on exit): another thread
    running attention meanwhile takes the slower, equivalent path.
    """
    fastpath_was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with contextlib.ExitStack() as stack:
            try:
                from torch.nn.attention import SDPBackend, sdpa_kernel

                stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
            except (ImportError, RuntimeError):  # older torch: extra SDPA formulas still count it
                pass
            stack.enter_context(torch.no_grad())
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath_was)


def _run_traced(model: nn.Module, x: torch.Tensor) -> _Trace:
    with _Tracer(model) as tracer, _canonical_kernels():
        with FlopCounterMode(display=False, custom_mapping=tracer.custom_mapping()) as counter:
            model(x)
    trace = tracer.trace
    trace.counter_total_flops = counter.get_total_flops()
    if trace.counter_total_flops != sum(trace.self_flops.values()):  # attribution lost or doubled an op
        raise AssertionError(
            f"attributed FLOPs {sum(trace.self_flops.values())} != FlopCounterMode total {trace.counter_total_flops}"
        )
    return trace


def _meta_copy(model: nn.Module) -> nn.Module:
    """A structural copy of ``model`` whose parameters and buffers live on meta.

    deepcopy with a pre-filled memo never copies the data, so copying a
    multi-GB model is instant; the caller's model is untouched.
    """
    memo: dict[int, Any] = {}
    for tensor in _chain_tensors(model):
        if id(tensor) in memo:
            continue
        meta = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(meta, requires_grad=False) if isinstance(tensor, nn.Parameter) else meta
    return copy.deepcopy(model, memo)


def _count_on_meta(model: nn.Module, shape: tuple[int, ...]) -> _Trace:
    meta_model = _meta_copy(model).eval()
    return _run_traced(meta_model, torch.empty(shape, device="meta"))


def _count_real(model: nn.Module, shape: tuple[int, ...], device: torch.device) -> _Trace:
    """Run the caller's model itself (no copy: it may be large) in eval mode,
    restoring every module's training flag afterwards.  Eval + no_grad leaves
    weights and batch-norm statistics untouched."""
    modes = {module: module.training for module in model.modules()}
    generator = torch.Generator().manual_seed(_REAL_INPUT_SEED)
    x = torch.rand(shape, generator=generator).to(device)
    try:
        model.eval()
        return _run_traced(model, x)
    finally:
        for module, training in modes.items():
            module.training = training


# --------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------


def _build_rows(model: nn.Module, trace: _Trace, include_other_ops: bool) -> list[LayerStats]:
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


# --------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------


def _shape_str(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def _bytes_str(n: int) -> str:
    for div, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


def _one_line(exc: BaseException) -> str:
    """The exception's first sentence: enough to say why meta failed, short enough for a table."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if len(text) > 160 and ". " in text:
        text = text[: text.index(". ") + 1]
    return f"{type(exc).__name__}: {text}"[:300]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value
