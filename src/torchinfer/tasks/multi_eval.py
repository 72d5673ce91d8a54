"""Scoring a multi-head model: each head on its own data layout, by its own task's evaluator.

    torchinfer eval multi -m shapes_multitask --data shape=cls/ --data mask=voc/ --data objects=coco/

A ``HeadView`` shows the evaluators one head of the predictor as if it were that task's
single-task predictor (its labels, its options, its results), so a head is scored exactly as
a single-task model on the same data would be.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from ..errors import TorchinferError
from ..evaluation import EvalReport
from ..results import Result
from .heads import Head, head_options, with_options
from .multi import MultiHeadPredictor


class HeadView:
    """One head of a MultiHeadPredictor, seen as a single-task predictor by an evaluator: its
    labels, its results, and its options as the attributes the evaluators read and set
    (``top_k``; ``conf``, ``iou``, ``max_det``, ``decoder``)."""

    def __init__(self, predictor: MultiHeadPredictor, name: str, result: type[Result]):
        self.predictor = predictor
        self.name = name
        self.result = result  # the head task's result type (failures are given as one)
        head = self.head
        self.model = replace(predictor.model, labels=list(head.labels) if head.labels else None,
                             task=head.task)
        self.device = predictor.device
        self.batch_size = predictor.batch_size

    @property
    def head(self) -> Head:
        return next(h for h in self.predictor.heads if h.name == self.name)

    def option(self, key: str) -> Any:
        """The head's option, or None when its task has no such option (an attribute that a
        single-task predictor of another task would not have)."""
        return self.head.option(key) if key in head_options(self.head.task) else None

    def set_option(self, key: str, value: Any) -> None:
        self.predictor.heads = tuple(with_options(h, {key: value}) if h.name == self.name else h
                                     for h in self.predictor.heads)

    top_k = property(lambda self: self.option("top_k"),
                     lambda self, value: self.set_option("top_k", value))
    conf = property(lambda self: self.option("conf"))
    iou = property(lambda self: self.option("iou"))
    max_det = property(lambda self: self.option("max_det"))
    decoder = property(lambda self: self.option("decoder"))

    def stream(self, source: Any, *, batch_size: int | None = None) -> Iterator[Result]:
        for result in self.predictor.stream(source, batch_size=batch_size):
            yield result.heads[self.name] if result.ok else self.failed(result.source,
                                                                       result.error or "")

    def failed(self, source: str, reason: str) -> Result:
        return self.result(source=source, error=reason)


@dataclass(kw_only=True)
class MultiTaskReport(EvalReport):
    """One report per head, each its task's own (``ClassificationReport``...)."""

    task: ClassVar[str] = "multi"
    heads: dict[str, EvalReport] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self._common(), "heads": {name: r.to_dict() for name, r in self.heads.items()}}

    def summary(self) -> list[tuple[str, str]]:
        return [(f"{name}: {metric}", value) for name, r in self.heads.items()
                for metric, value in r.summary()]

    def per_class(self) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        return ("head", "score"), [(name, r.headline()[0]) for name, r in self.heads.items()]

    def headline(self) -> tuple[str, float | None]:
        words = "; ".join(f"{name}: {r.headline()[0]}" for name, r in self.heads.items())
        values = [v for r in self.heads.values() if (v := r.headline()[1]) is not None]
        return words, min(values) if values else None


def evaluate_heads(predictor: MultiHeadPredictor, data: Mapping[str, Any],
                   spec_of: Callable[[str], Any],
                   *, limit: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> MultiTaskReport:
    """Score each head named in ``data`` ({head: its data}) with its task's reader and
    evaluator, run with the options it is customarily run with (detect: conf 0.001...);
    ``spec_of``: task name -> its ``TaskSpec`` (the registry's)."""
    if not isinstance(predictor, MultiHeadPredictor):
        raise TorchinferError("eval multi scores a multi-head model's heads: several models "
                              "over one decode are scored one by one with their own task")
    names = [h.name for h in predictor.heads]
    unknown = sorted(set(data) - set(names))
    if unknown or not data:
        raise TorchinferError(f"give data for heads among {', '.join(names)} (--data "
                              f"HEAD=PATH){'; unknown: ' + ', '.join(unknown) if unknown else ''}")
    datasets = {name: spec_of(task).read_dataset(data[name])  # a wrong path fails before any image
                for name, task in ((h.name, h.task) for h in predictor.heads) if name in data}
    reports: dict[str, EvalReport] = {}
    given = predictor.heads
    try:
        for head in given:
            if head.name not in datasets:
                continue
            spec = spec_of(head.task)
            view = HeadView(predictor, head.name, spec.result)
            for key, value in spec.evaluation_options.items():  # as that task's own evaluation
                view.set_option(key, value)
            reports[head.name] = spec.evaluator(view, datasets[head.name], limit=limit,
                                                progress=progress)
    finally:
        predictor.heads = given  # the caller's predictor answers as before
    first = next(iter(reports.values()))
    return MultiTaskReport(data=", ".join(f"{n}={r.data}" for n, r in reports.items()),
                           model=first.model, weights=first.weights,
                           images=sum(r.images for r in reports.values()),
                           failures=[f for r in reports.values() for f in r.failures],
                           warnings=[f"{n}: {w}" for n, r in reports.items() for w in r.warnings],
                           seconds=sum(r.seconds for r in reports.values()),
                           options={n: r.options for n, r in reports.items()}, heads=reports)
