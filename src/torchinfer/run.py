"""A batch run: stream a predictor over sources, write one JSONL line per input, summarise.

This is what ``torchinfer predict`` does, as a library call, so scripts get the same outputs
(``predictions.jsonl`` and ``summary.json`` in the output folder) without the CLI.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .draw import instance_mask_image, mask_image, visualise
from .io.sinks import JsonlWriter, UniqueNames, read_jsonl, save_image_atomic, \
    write_json_atomic
from .io.sources import expand_sources
from .io.video import AnnotatedVideo, count_frames, is_video, parse_frame_name
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
    resumed: int = 0  # inputs already done by an earlier run (--resume), not run again
    interrupted: bool = False

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
                "draw_ms_per_image": round(self.draw_ms, 3), "resumed": self.resumed,
                "interrupted": self.interrupted,
                "failures": self.failures, "outputs": self.outputs}


def count_inputs(sources: Iterable[str], out_dir: str | Path | None = None,
                 video_stride: int = 1) -> int:
    """How many inputs the sources expand to, outside ``out_dir`` (walks folders; opens no
    image; reads a video's frame count from its header)."""
    return sum(count_frames(p, video_stride) if is_video(p) else 1
               for p in expand_sources(sources, exclude=out_dir))


def run_to_dir(predictor: Predictor, sources: list[str], out_dir: str | Path, *,
               batch_size: int | None = None,
               on_result: Callable[[Result], None] | None = None,
               run_info: dict[str, Any] | None = None, save_vis: bool = False,
               save_masks: bool = False, resume: bool = False,
               video_stride: int = 1) -> RunSummary:
    """Run ``predictor`` over ``sources``; write ``predictions.jsonl`` and ``summary.json``.

    Bad inputs become lines with an ``error`` field; the run goes on. ``on_result`` sees each
    result as it arrives (progress bars, tables). ``save_vis`` writes ``vis/<name>.jpg`` (the
    result drawn on its image); ``save_masks`` writes segmentation class maps as palette PNGs
    in ``masks/``. Each line of the JSONL names the files written for it.

    ``resume``: keep the lines of an earlier run into the same folder (finished, or killed:
    ``predictions.jsonl.partial``) whose file is unchanged (path, size, mtime) and run only the
    other inputs; failed inputs are tried again, and so are videos (their frames are not files
    to compare). Every input ends up with exactly one line. ``video_stride``: every Nth frame.
    An interrupted run (Ctrl-C, a kill) leaves the partial file with every completed line.
    """
    out = Path(out_dir)
    summary = RunSummary()
    names = UniqueNames()
    draw_s = 0.0
    totals = dict.fromkeys(STAGES, 0.0)
    timed = 0
    # an earlier run's lines whose file is unchanged; a changed file runs again
    kept = [r for r in _done_records(out)
            if r.get("file") is not None and _file_stamp(r["source"]) == r["file"]] \
        if resume else []
    done = {r["source"] for r in kept}
    for record in kept:
        names(record["source"])  # picture names stay taken
    next_id = max((r.get("image_id", -1) for r in kept), default=-1) + 1
    summary.total = summary.resumed = len(kept)
    records_for_coco = [r for r in kept if "detections" in r]
    is_detection = bool(records_for_coco)
    videos = _VideoVis(out, video_stride) if save_vis else None
    start = time.perf_counter()
    with JsonlWriter(out / "predictions.jsonl", initial=kept) as writer:
        inputs = (p for p in expand_sources(sources, exclude=out) if p not in done)
        try:
            for result in predictor.stream(inputs, batch_size=batch_size,
                                           video_stride=video_stride):
                record = result.to_dict()
                stamp = _file_stamp(result.source)
                if stamp is not None:
                    record["file"] = stamp
                if isinstance(result, Detections):
                    # COCO results identify images by id: unique in this output folder
                    record["image_id"] = next_id
                    next_id += 1
                    is_detection = True
                    if result.ok:
                        records_for_coco.append(record)
                if result.ok and (save_vis or save_masks):
                    t0 = time.perf_counter()
                    record["files"] = _save_pictures(predictor, result, out,
                                                     names(result.source), save_vis, save_masks)
                    if videos is not None:
                        record["files"].update(videos.add(result, names))
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
        except KeyboardInterrupt:
            if videos is not None:
                videos.abandon()
            summary.interrupted = True
            _finish_summary(summary, predictor, out, writer.partial, run_info, start, totals,
                            timed, draw_s)
            raise
    if videos is not None:
        videos.close()
    if is_detection:
        coco = [c for r in records_for_coco for c in coco_records(r)]
        summary.outputs["coco_results"] = str(write_json_atomic(out / "coco_results.json", coco))
    _finish_summary(summary, predictor, out, writer.path, run_info, start, totals, timed, draw_s)
    return summary


def _finish_summary(summary: RunSummary, predictor: Predictor, out: Path, predictions: Path,
                    run_info: dict[str, Any] | None, start: float, totals: dict[str, float],
                    timed: int, draw_s: float) -> None:
    summary.seconds = time.perf_counter() - start
    summary.stage_ms = {k: v / timed for k, v in totals.items()} if timed else {}
    summary.draw_ms = draw_s * 1000 / timed if timed else 0.0
    summary.outputs.update(predictions=str(predictions), summary=str(out / "summary.json"))
    if predictor.backend_report is not None:
        run_info = {**(run_info or {}), "backend": predictor.backend_report.to_dict()}
    if getattr(predictor, "jpeg_draft", False):
        check = predictor.draft_check
        run_info = {**(run_info or {}), "jpeg_draft": {
            "verified": check is not None and check.passed,
            "check": check.describe() if check is not None else None}}
    if predictor.pipeline is not None:
        run_info = {**(run_info or {}), "pipeline": predictor.pipeline.to_dict()}
    write_json_atomic(out / "summary.json", {**(run_info or {}), **summary.to_dict()})


class _VideoVis:
    """With --save-vis, the annotated frames of each input video become ``vis/<name>.mp4``
    (one open writer at a time: results come in input order, video after video)."""

    def __init__(self, out: Path, stride: int):
        self.out, self.stride = out, stride
        self.current: AnnotatedVideo | None = None

    def add(self, result: Result, names: UniqueNames) -> dict[str, str]:
        parsed = parse_frame_name(result.source)
        if parsed is None:
            return {}
        path, index = parsed
        if self.current is None or self.current.source != path:
            self.close()
            self.current = AnnotatedVideo(path, self.out / "vis" / f"{names(path)}.mp4",
                                          self.stride)
        self.current.add(index, result, visualise)
        return {"vis": str(self.current.out)}

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None

    def abandon(self) -> None:
        if self.current is not None:
            self.current.abandon()
            self.current = None


def _file_stamp(source: str) -> dict[str, int] | None:
    """Size and modification time of a file input (None for in-memory inputs): what --resume
    compares to decide an input is unchanged."""
    try:
        st = os.stat(source)
    except (OSError, ValueError):
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _done_records(out: Path) -> list[dict[str, Any]]:
    """The successful lines of an earlier run into ``out`` (its partial file when it was
    interrupted, else its finished file), one per source."""
    partial = out / "predictions.jsonl.partial"
    records = read_jsonl(partial if partial.is_file() else out / "predictions.jsonl")
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        if "error" not in record and "source" in record:
            latest[record["source"]] = record
    return list(latest.values())


def coco_records(record: dict[str, Any]) -> list[dict[str, Any]]:
    """COCO results-format entries from one detection line of predictions.jsonl (bbox as
    x, y, w, h), so a resumed run's COCO file covers the lines it kept too."""
    entries = []
    for det in record.get("detections", ()):
        x0, y0, x1, y1 = det["box"]
        entry: dict[str, Any] = {"image_id": record["image_id"], "category_id": det["class_id"],
                                 "bbox": [x0, y0, x1 - x0, y1 - y0], "score": det["score"]}
        if "mask" in det:
            entry["segmentation"] = det["mask"]
        if "keypoints" in det:
            entry["keypoints"] = [v for kp in det["keypoints"] for v in kp]
        entries.append(entry)
    return entries


def _save_pictures(predictor: Predictor, result: Result, out: Path, name: str, save_vis: bool,
                   save_masks: bool) -> dict[str, str]:
    files = {}
    if save_masks and isinstance(result, Segmentation):
        files["mask"] = str(save_image_atomic(mask_image(result), out / "masks" / f"{name}.png"))
    if save_masks and isinstance(result, Detections) and result.masks is not None:
        files["mask"] = str(save_image_atomic(instance_mask_image(result),
                                              out / "masks" / f"{name}.png"))
    # in-memory inputs and video frames have no image file to redraw
    if save_vis and not result.source.startswith("<") and "#frame=" not in result.source:
        image = predictor.loader.load(result.source)
        files["vis"] = str(save_image_atomic(visualise(result, image), out / "vis" / f"{name}.jpg",
                                             quality=90))
    return files
