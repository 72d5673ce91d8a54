"""Model inspection: parameters, MACs/FLOPs, output shapes and memory, per layer.

The counts are meant to be trusted against published numbers (torchvision's
``meta["num_params"]`` and ``meta["_ops"]``), so the conventions are explicit:

* **MACs** are multiply-accumulates of the matrix-like aten ops (convolution,
  mm/addmm/bmm/baddbmm, scaled-dot-product attention), counted by
  :class:`torch.utils.flop_counter.FlopCounterMode` at the aten level.  Biases,
  batch norm, activations, residual adds, pooling and resizing are *not* MACs
  (published MAC counts exclude them).  **FLOPs = 2 x MACs**, always.
* **other_ops** (opt-in) estimates that elementwise work separately, with the
  per-element costs listed in :data:`OTHER_OP_COSTS` (in :mod:`.counting`).
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

Modules: :mod:`.measure` (``inspect_model``), :mod:`.counting` (the traced forward pass and
its formulas), :mod:`.report` (the report types and how they are shown).
"""

from .counting import OTHER_OP_COSTS
from .heads import macs_by_head
from .measure import RunOn, inspect_model
from .report import LayerStats, ModelReport, format_count

__all__ = ["OTHER_OP_COSTS", "LayerStats", "ModelReport", "RunOn", "format_count", "inspect_model",
           "macs_by_head"]
