"""MACs of a multi-head model by head: the shared trunk, and what each head costs.

Which module serves which head is read off the autograd graph of one real forward: a module
call serves a head when its output is among the ancestors of that head's output. A module
whose output feeds every head belongs to the trunk; one that feeds a single head, to that
head; one that feeds some of them, to those together ("shape+mask": a decoder that two heads
read). Work a module does outside its children (``self_macs``) goes where its output goes, so
a functional op in the model's own forward counts in the trunk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..tasks.heads import named_outputs
from .report import LayerStats

TRUNK = "trunk"


def macs_by_head(model: nn.Module, input_shape: Sequence[int], heads: Mapping[str, str],
                 layers: Iterable[LayerStats]) -> dict[str, int]:
    """{"trunk": MACs, head name: MACs, "a+b": MACs of what heads a and b alone share...} for
    ``heads`` ({head name: the model output it reads}, as ``tasks.heads.named_outputs`` names
    them), from the unfolded per-layer rows; the values add up to the model's MACs."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    outputs_of: dict[str, set[int]] = {}  # module path -> ids of its outputs' autograd nodes
    names = {id(m): path for path, m in model.named_modules()}

    def hook(module: nn.Module, _: Any, output: Any) -> None:
        nodes = {id(t.grad_fn) for t in _tensors(output) if t.grad_fn is not None}
        outputs_of.setdefault(names.get(id(module), ""), set()).update(nodes)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    was_training = model.training
    try:
        model.eval()
        with torch.enable_grad():
            x = torch.zeros(tuple(input_shape), device=device, requires_grad=True)
            raw = model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    found = named_outputs(raw)
    ancestors = {head: _ancestors(found[output]) for head, output in heads.items()}
    split = dict.fromkeys([TRUNK, *heads], 0)
    for row in layers:
        nodes = outputs_of.get(row.path, set())
        served = [head for head, seen in ancestors.items() if nodes & seen]
        # every head (or none: the model's own glue) is the trunk; some of them, those heads
        key = "+".join(served) if 0 < len(served) < len(heads) else TRUNK
        split[key] = split.get(key, 0) + row.self_macs
    return split


def _ancestors(tensor: torch.Tensor) -> set[int]:
    seen: set[int] = set()
    stack = [tensor.grad_fn] if tensor.grad_fn is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(n for n, _ in node.next_functions if n is not None)
    return seen


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []
