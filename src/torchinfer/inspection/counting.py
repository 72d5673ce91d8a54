"""Counting one forward pass: module attribution, the MAC and elementwise formulas handed to
:class:`torch.utils.flop_counter.FlopCounterMode`, shapes and activation sizes.

The model runs either as a structural copy on ``meta`` tensors (no data, no real compute) or,
when it has data-dependent control flow, for real on its own device with a seeded input; see
the package doc for the conventions.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry

__all__ = ["OTHER_OP_COSTS", "Trace", "count_on_meta", "count_real", "model_device"]

# Seed of the random input used when a model has to run on real tensors, so a
# data-dependent count (detections above threshold) is reproducible.
_REAL_INPUT_SEED = 0


def model_device(model: nn.Module) -> torch.device:
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
class Trace:
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
        self.trace = Trace()
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


def _run_traced(model: nn.Module, x: torch.Tensor) -> Trace:
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


def count_on_meta(model: nn.Module, shape: tuple[int, ...]) -> Trace:
    meta_model = _meta_copy(model).eval()
    return _run_traced(meta_model, torch.empty(shape, device="meta"))


def count_real(model: nn.Module, shape: tuple[int, ...], device: torch.device) -> Trace:
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
