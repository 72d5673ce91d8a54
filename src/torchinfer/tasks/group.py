"""Several models over one decode: each image is read once, then every model preprocesses,
runs and postprocesses it its own way; the answer is one ``MultiTask`` record per input with
a head per model, the same record a multi-head model gives.

    group = PredictorGroup({"shape": ti.load("classify", "shapes_classifier"),
                            "objects": ti.load("detect", "shapes_detector")})
    group("scene.jpg")["objects"]                    # the detector's Detections

Decoding a photograph costs as much as running a small model (BENCHMARKS.md), so three
models over one decode save two decodes per image; the models still run one after another.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch import nn

from ..errors import TorchinferError
from ..models import LoadedModel
from ..results import STAGES, MultiTask
from ..runner.batches import Batch, Decoded, Timing
from ..runner.inputs import Source
from .base import Predictor


@dataclass
class GroupBatch(Batch):
    """The batch of every model of a group, by head name (``tensor`` is empty)."""

    members: dict[str, Decoded] = field(default_factory=dict)
    load_s: float = 0.0  # reading and decoding the images, once for every model


class PredictorGroup(Predictor[MultiTask]):
    """``members``: head name -> a loaded single-task predictor (``ti.load``), all on one
    device. An input that one model cannot take (its decoder or its preprocessing refuses
    it) fails for the group, with that model's reason."""

    task = "multi"
    supports_backends = False
    supports_backends_reason = "each model of a group chose its own backend when it was loaded"

    def __init__(self, members: Mapping[str, Predictor], *, batch_size: int | None = None,
                 max_pixels: int | None = None, decode_workers: int | None = None):
        if len(members) < 2:
            raise TorchinferError("a group runs several models over one decode: give two or more")
        devices = {str(p.device) for p in members.values()}
        if len(devices) != 1:
            raise TorchinferError(f"the models of a group run on one device, got {sorted(devices)}")
        if any(isinstance(p, PredictorGroup) for p in members.values()):
            raise TorchinferError("a group's members are single models")
        self.members = dict(members)
        for member in self.members.values():  # their modules and decoding, as chosen
            member.prepare()
        first = next(iter(members.values()))
        model = LoadedModel(module=nn.ModuleDict({n: p.module for n, p in members.items()}),
                            name=" + ".join(p.model.name for p in members.values()),
                            task="multi", preprocess=first.model.preprocess, labels=None,
                            weights=", ".join(str(p.model.weights) for p in members.values()))
        super().__init__(model, device=first.device,
                         batch_size=batch_size or min(p.batch_size for p in members.values()),
                         max_pixels=max_pixels, channels_last=False,
                         decode_workers=decode_workers)
        # one decode serves every model: reduced only as far as each of them allows
        self.reduced_decode = all(p.reduced_decode for p in members.values())

    def decode_request(self, size: tuple[int, int]) -> tuple[int, int]:
        requests = [p.decode_request(size) for p in self.members.values()]
        return max(r[0] for r in requests), max(r[1] for r in requests)

    def decode(self, sources: list[Source]) -> Decoded:
        t0 = time.perf_counter()
        images, errors = self.load_images(sources)
        members = {name: member.preprocess_images(sources, images, errors)
                   for name, member in self.members.items()}
        load_s = time.perf_counter() - t0
        for name, decoded in members.items():  # what one model refused fails for the group
            for i, reason in decoded.errors.items():
                errors.setdefault(i, f"{name}: {reason}")
        names = [s.name for i, s in enumerate(sources) if i not in errors]
        batch = GroupBatch(torch.empty(0), names, [None] * len(names), members,
                           load_s) if names else None
        return Decoded(list(sources), batch, errors, time.perf_counter() - t0)

    def preprocess(self, images: Sequence[Image.Image], sources: Sequence[str]) -> Batch:
        raise TorchinferError("a group preprocesses per model: use decode() and run()")

    def postprocess(self, raw: Any, batch: Batch) -> list[MultiTask]:
        raise TorchinferError("a group postprocesses per model: use run()")

    def run(self, decoded: Decoded, *, wait_s: float = 0.0,
            timings: list[Timing] | None = None,
            options: Mapping[str, Any] | None = None) -> list[MultiTask]:
        """Each model runs its own batch; one MultiTask per source, failures included (a
        group takes no per-request options)."""
        if options:
            raise TorchinferError("a group of models takes no per-request options")
        if not isinstance(decoded.batch, GroupBatch):
            return [self.failed(s.name, decoded.errors[i]) for i, s in enumerate(decoded.sources)]
        t0 = time.perf_counter()
        answers = {name: member.run(decoded.batch.members[name])
                   for name, member in self.members.items()}
        main_s = time.perf_counter() - t0
        results = []
        for i, source in enumerate(decoded.sources):
            if i in decoded.errors:
                results.append(self.failed(source.name, decoded.errors[i]))
                continue
            heads = {name: answer[i] for name, answer in answers.items()}
            speed = {stage: sum(h.speed.get(stage, 0.0) for h in heads.values()) for stage in STAGES}
            n = len(decoded.batch.sources)
            speed["preprocess"] += decoded.batch.load_s * 1000 / n
            speed["wait"] = wait_s * 1000 / n
            results.append(MultiTask(source=source.name, heads=heads, speed=speed))
        if timings is not None:
            timings.append(Timing(decoded.preprocess_s, main_s, wait_s,
                                  len(decoded.batch.sources)))
        return results

    def failed(self, source: str, reason: str) -> MultiTask:
        return MultiTask(source=source, error=reason)
