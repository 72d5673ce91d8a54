"""A batch run: stream a predictor over sources, write one JSONL line per input, summarise.

This is what ``torchinfer predict`` does, as a library call, so scripts get the same outputs
(``predictions.jsonl`` and ``summary.json`` in the output folder) without the CLI.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .draw import instance_mask_image, mask_image, visualise
from .io.sinks import JsonlWriter, UniqueNames, save_image_atomic, write_json_atomic
from .io.sources import expand_sources
from .results import STAGES, Detections, Result, Segmentation
from .tasks import Predictor


@dataclass
class RunSummary:
    total: int = 0
    failed: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)  # mean ms per image, per stage
    outputs: dict[str, str] = field(default_factory=dict)
    draw_ms: float = 0.0  # mean ms per image spent drawing/saving pictures, when asked for

    @property
    def succeeded(self) -> int:
        return self.total - self.failed

    @property
    def images_per_second(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "succeeded": self.succeeded, "failed": self.failed,
                "seconds": round(self.seconds, 3),
                "images_per_second": round(self.images_per_second, 2),
                "stage_ms_per_image": {k: round(v, 3) for k, v in self.stage_ms.items()},
                "draw_ms_per_image": round(self.draw_ms, 3),
                "failures": self.failures, "outputs": self.outputs}


def count_inputs(sources: Iterable[str], out_dir: str | Path | None = None) -> int:
    """How many inputs the sources expand to, outside ``out_dir`` (walks folders; opens no
    image)."""
    return sum(1 for _ in expand_sources(sources, exclude=out_dir))


def run_to_dir(predictor: Predictor, sources: list[str], out_dir: str | Path, *,
               batch_size: int | None = None,
               on_result: Callable[[Result], None] | None = None,
               run_info: dict[str, Any] | None = None, save_vis: bool = False,
               save_masks: bool = False) -> RunSummary:
    """Run ``predictor`` over ``sources``; write ``predictions.jsonl`` and ``summary.json``.

    Bad inputs become lines with an ``error`` field; the run goes on. ``on_result`` sees each
    result as it arrives (progress bars, tables). ``save_vis`` writes ``vis/<name>.jpg`` (the
    result drawn on its image); ``save_masks`` writes segmentation class maps as palette PNGs
    in ``masks/``. Each line of the JSONL names the files written for it.
    """
    out = Path(out_dir)
    summary = RunSummary()
    names = UniqueNames()
    draw_s = 0.0
    coco: list[dict[str, Any]] | None = None  # COCO results, for detection runs
    totals = dict.fromkeys(STAGES, 0.0)
    timed = 0
    start = time.perf_counter()
    with JsonlWriter(out / "predictions.jsonl") as writer:
        inputs = expand_sources(sources, exclude=out)
        for result in predictor.stream(inputs, batch_size=batch_size):
            record = result.to_dict()
            if isinstance(result, Detections):
                # COCO results identify images by id: the input's position in this run
                record["image_id"] = summary.total
                coco = [] if coco is None else coco
                if result.ok:
                    coco.extend(result.to_coco(summary.total))
            if result.ok and (save_vis or save_masks):
                t0 = time.perf_counter()
                record["files"] = _save_pictures(predictor, result, out, names(result.source),
                                                 save_vis, save_masks)
                draw_s += time.perf_counter() - t0
            writer.write(record)
            summary.total += 1
            if result.ok:
                timed += 1
                for stage in STAGES:
                    totals[stage] += result.speed.get(stage, 0.0)
            else:
                summary.failed += 1
                summary.failures.append({"source": result.source, "error": result.error or ""})
            if on_result is not None:
                on_result(result)
    summary.seconds = time.perf_counter() - start
    summary.stage_ms = {k: v / timed for k, v in totals.items()} if timed else {}
    summary.draw_ms = draw_s * 1000 / timed if timed else 0.0
    summary.outputs = {"predictions": str(writer.path), "summary": str(out / "summary.json")}
    if coco is not None:
        summary.outputs["coco_results"] = str(write_json_atomic(out / "coco_results.json", coco))
    backend = ({"backend": predictor.backend_report.to_dict()}
               if predictor.backend_report is not None else {})
    write_json_atomic(out / "summary.json", {**(run_info or {}), **backend, **summary.to_dict()})
    return summary


def _save_pictures(predictor: Predictor, result: Result, out: Path, name: str, save_vis: bool,
                   save_masks: bool) -> dict[str, str]:
    files = {}
    if save_masks and isinstance(result, Segmentation):
        files["mask"] = str(save_image_atomic(mask_image(result), out / "masks" / f"{name}.png"))
    if save_masks and isinstance(result, Detections) and result.masks is not None:
        files["mask"] = str(save_image_atomic(instance_mask_image(result),
                                              out / "masks" / f"{name}.png"))
    if save_vis and not result.source.startswith("<"):  # in-memory inputs have no file to redraw
        image = predictor.loader.load(result.source)
        files["vis"] = str(save_image_atomic(visualise(result, image), out / "vis" / f"{name}.jpg",
                                             quality=90))
    return files
