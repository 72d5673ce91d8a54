"""What an inspection found: :class:`LayerStats` (one module), :class:`ModelReport` (the model),
and how they are shown (rich table, summary lines, JSON)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich is imported lazily so that importing the report types stays light
    from rich.table import Table

__all__ = ["LayerStats", "ModelReport", "bytes_str", "format_count", "shape_str"]


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
    # a multi-head model's MACs: "trunk" (what feeds two heads or more) and each head's own
    head_macs: dict[str, int] = dataclasses.field(default_factory=dict)

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

        table = Table(title=title or f"{self.model_name} {shape_str(self.input_shape)}")
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
                ", ".join(shape_str(s) for s in row.output_shapes) if row.calls else "-",
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
            f"Buffers: {self.buffers_total:,} elements, {bytes_str(self.buffers_bytes)}",
            f"MACs: {self.macs:,} ({self.gmacs:.3f} G)   FLOPs = 2 x MACs: {self.flops:,} ({self.gflops:.3f} G)",
        ]
        if self.head_macs:
            lines.append("MACs by head: " + ", ".join(
                f"{name} {format_count(n)} ({100 * n / max(self.macs, 1):.1f}%)"
                for name, n in self.head_macs.items()))
        if self.other_ops is not None:
            lines.append(f"Other (elementwise) ops, not in MACs: {self.other_ops:,}")
        lines += [
            "Param memory: "
            f"fp32 {bytes_str(self.param_bytes_fp32)}, fp16 {bytes_str(self.param_bytes_fp16)}, "
            f"int8 {bytes_str(self.param_bytes_int8)}",
            f"Activations (fp32, sum of leaf outputs): {bytes_str(self.activation_bytes)}",
        ]
        if self.file_size_bytes is not None:
            lines.append(f"File size: {bytes_str(self.file_size_bytes)}")
        how = "meta tensors (no compute)" if self.counted_on == "meta" else f"real compute on {self.counted_on}"
        lines.append(f"Counted on {how}, input {shape_str(self.input_shape)}")
        if self.fallback_reason:
            lines.append(f"Meta run failed: {self.fallback_reason}")
        if self.uncounted_ops:
            lines.append(f"Not counted (no formula): {', '.join(self.uncounted_ops)}")
        return lines


def format_count(n: int | float) -> str:
    """1234567 -> '1.23M' (K, M, G, T; plain below 1000)."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}"
    return str(int(n)) if float(n).is_integer() else f"{n:.2f}"


def shape_str(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def bytes_str(n: int) -> str:
    for div, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value
