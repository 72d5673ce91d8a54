"""A batch run: stream a predictor over sources, write one JSONL line per input, summarise.

This is what ``torchinfer predict`` does, as a library call, so scripts get the same outputs
(``predictions.jsonl`` and ``summary.json`` in the output folder) without the CLI.
"""

from __future__ import annotations

import itertools
import json
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import InputError, TorchinferError
from ..results import STAGES, Detections, MultiTask, Result, coco_entry
from ..storage.uris import is_uri, joined
from ..storage.uris import stamp as uri_stamp
from .images import ImageLoader
from .inputs import Source, iter_sources
from .pictures import Drawing, Finisher, Outputs, VideoPictures, Writer, save_outputs
from .sinks import (
    JsonlWriter,
    UniqueNames,
    check_writable,
    read_jsonl,
    remove_outputs,
    write_dota,
    write_json_atomic,
)
from .sources import check_sources, expand_sources, shown
from .video import count_frames, is_video


class Reported(Protocol):
    """A report ``summary.json`` keeps, as JSON."""

    def to_dict(self) -> dict[str, Any]: ...


class StreamingPredictor(Protocol):
    """What a run needs of a predictor: the task predictors of ``torchinfer.tasks`` and a Ray
    job's ``RayPredictor`` both stream sources into results (the runner sits below both and
    knows neither)."""

    task: str
    model: Any  # its name and weights go into the run's fingerprint
    loader: ImageLoader  # redraws a file for --save-vis
    backend_report: Any
    decode_report: Any  # how JPEGs are decoded (runtime.decoding.DecodeReport), or None

    @property
    def pipeline(self) -> Reported | None:
        """How the work was laid out, ``summary.json``'s "pipeline": how decoding and the model
        shared the cores (a local ``PipelinePlan``), or how a Ray job ran."""

    def stream_sources(self, sources: Iterable[Source], *, batch_size: int | None = None
                       ) -> Iterator[tuple[Source, Result]]: ...


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
    fingerprint: dict[str, Any] = field(default_factory=dict)  # what decided the answers

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
                "failures": self.failures, "outputs": self.outputs,
                "fingerprint": self.fingerprint}


def count_inputs(sources: Iterable[str], out_dir: str | Path | None = None,
                 video_stride: int = 1) -> int:
    """How many inputs the sources expand to, outside ``out_dir`` (walks folders; opens no
    image; reads a video's frame count from its header)."""
    return sum(count_frames(p, video_stride) if is_video(p) else 1
               for p in expand_sources(sources, exclude=out_dir))


# What a run writes in its output folder, and nothing else: --exist-ok deletes only these
# (in vis/, masks/ and maps/ only the files its records name).
RUN_FILES = ("run.json", "predictions.jsonl", "predictions.jsonl.partial", "summary.json",
             "coco_results.json")
RUN_FOLDERS = ("vis", "masks", "maps", "dota")


def is_run_output(name: str, files: tuple[str, ...] = ()) -> bool:
    """Whether ``name`` (relative to an output folder, with ``/``) is a run's own output: one
    of ``RUN_FILES``, a task's ``files``, or under ``RUN_FOLDERS``."""
    return name in RUN_FILES or name in files or name.split("/", 1)[0] in RUN_FOLDERS


def run_to_dir(predictor: StreamingPredictor, sources: list[str], out_dir: str | Path, *,
               batch_size: int | None = None,
               on_result: Callable[[Result], None] | None = None,
               run_info: dict[str, Any] | None = None, save_vis: bool = False,
               save_masks: bool = False, resume: bool = False, video_stride: int = 1,
               exist_ok: bool = False, fingerprint: Mapping[str, Any] | None = None,
               draw: Drawing | None = None, write: Writer | None = None,
               files: tuple[str, ...] = (), finish: Finisher | None = None,
               named_as: str | None = None) -> RunSummary:
    """Run ``predictor`` over ``sources``; write ``predictions.jsonl`` and ``summary.json``.

    Bad inputs become lines with an ``error`` field saying why (a file that cannot be decoded,
    "file not found", "permission denied", "symlink loop", a folder that cannot be listed); the
    run goes on, and lines come in input order. ``on_result`` sees each result as it arrives
    (progress bars, tables). ``save_vis`` writes ``vis/<name>.jpg`` (the result drawn on its
    image, by ``draw(image, result)`` when given, else ``draw.visualise``); ``save_masks`` writes
    segmentation class maps as palette PNGs in ``masks/``; ``write(result, out, name)``, the
    task's own files (``runner.pictures.Writer``); ``files``, the names of the task's files
    in the output folder beyond ``RUN_FILES``; ``finish(out)``, what the task makes of them
    once every line is written. Each line of the JSONL names the files written for it. Names
    that are not UTF-8 are written as ``\\udcXX`` escapes that read back to the same str
    (``torchinfer.runner.sinks.dumps``).

    Before any work, TorchinferError (one line) when: the sources give no input at all ("no
    inputs: ..."; a missing plain path is an input, recorded as "file not found"), a list file
    is not UTF-8, ``out_dir`` is a file or cannot be written, or ``out_dir`` already holds a
    run's outputs (``RUN_FILES``, ``vis/``, ``masks/``) and neither ``exist_ok`` (delete those
    outputs, and only those, first: nothing stale stays beside the new results) nor ``resume``
    is set.

    ``fingerprint``: what else decides this run's answers, as JSON values (the predictor's
    settings: input size, mean, std, top_k, thresholds, backend, precision, labels...). The run
    adds the sources as named, its task, model, weights, ``video_stride`` and which pictures it
    saves; a value that
    names an existing file (weights, a model or labels file) is recorded as its path, size and
    modification time. It is written to ``run.json`` when the run starts and to
    ``summary.json``.

    ``resume``: keep the lines of an earlier run into the same folder (finished, or killed:
    ``predictions.jsonl.partial``) whose file is unchanged (path, size, mtime) and run only the
    other inputs; failed inputs are tried again, and so are videos (their frames are not files
    to compare). Every input ends up with exactly one line. Refused (TorchinferError naming
    what differs) when the earlier run's fingerprint is not this run's, or is missing, or a
    line before its last is not a JSON record (a torn last line is a killed run's, dropped).
    ``video_stride``: every Nth frame. An interrupted run (Ctrl-C, a kill) leaves the partial
    file with every completed line.

    ``named_as``: the output folder's name in ``summary.json``'s outputs, when ``out_dir``
    stands in for it (a local copy of an object-storage URI: ``storage.mirror.staged``).
    """
    out = Path(out_dir)
    sources = [os.fsdecode(s) for s in sources]
    inputs = _start(out, sources, resume=resume, exist_ok=exist_ok, video_stride=video_stride,
                    exclude=named_as)
    # the sources as named belong to the run too: resuming with other inputs would keep lines
    # for inputs this run was not asked for
    stamp = run_fingerprint(predictor, {"sources": sources, **(fingerprint or {})},
                            video_stride=video_stride, save_vis=save_vis, save_masks=save_masks)
    outputs = Outputs(vis=save_vis, masks=save_masks, draw=draw, write=write, files=files,
                      finish=finish)
    if resume:
        kept = _resumable(out, stamp, files)
    else:
        _clear_outputs(out, exist_ok, files)
        kept = []
    write_json_atomic(out / "run.json", {"fingerprint": stamp})
    run = _Run(predictor, out, kept, stamp, outputs, video_stride=video_stride,
               on_result=on_result, named_as=named_as)
    done = {r["source"] for r in kept}  # files only: a resumed run reads videos again
    todo = (s for s in inputs if not (s.is_file and s.name in done))
    with JsonlWriter(out / "predictions.jsonl", initial=kept) as writer:
        try:
            for source, result in predictor.stream_sources(todo, batch_size=batch_size):
                run.add(source, result, writer)
        except KeyboardInterrupt:
            run.stop(writer.partial, run_info)
            raise
    return run.finish(writer.path, run_info)


def _start(out: Path, sources: list[str], *, resume: bool, exist_ok: bool,
           video_stride: int, exclude: str | None = None) -> Iterator[Source]:
    """The run's inputs, after the checks that refuse a run before it starts; folders are
    walked without entering the output folder (``exclude``: the URI it stands in for)."""
    if resume and exist_ok:
        raise TorchinferError("resume and exist_ok contradict each other: --resume keeps the "
                              "output folder's results, --exist-ok replaces them")
    if os.path.exists(out) and not os.path.isdir(out):  # Path's raise where a parent is shut
        raise TorchinferError(f"output folder {shown(str(out))} is a file")
    check_sources(sources)
    inputs = iter_sources(sources, video_stride=video_stride,  # expanded once
                          exclude=exclude or out)
    first = next(inputs, None)
    if first is None:
        named = ", ".join(shown(s) for s in sources) or "the sources (none given)"
        raise TorchinferError(f"no inputs: {named} matched no image or video files")
    check_writable(out)
    return itertools.chain([first], inputs)


def _earlier_outputs(out: Path, files: tuple[str, ...] = ()) -> list[str]:
    return [name for name in (*RUN_FILES, *files, *RUN_FOLDERS) if os.path.lexists(out / name)]


def _clear_outputs(out: Path, exist_ok: bool, files: tuple[str, ...]) -> None:
    """Refuse a folder holding an earlier run's outputs, or (``exist_ok``) delete them."""
    found = _earlier_outputs(out, files)
    if found and not exist_ok:
        raise TorchinferError(
            f"output folder {shown(str(out))} already holds a run's results ({', '.join(found)}): "
            "use --exist-ok to replace them, or --resume to continue that run")
    dota = sorted((out / "dota").glob("Task1_*.txt")) if (out / "dota").is_dir() else []
    remove_outputs(out, (*RUN_FILES, *files), RUN_FOLDERS, _recorded_pictures(out) + dota)


def _recorded_pictures(out: Path) -> list[Path]:
    """The pictures an earlier run into ``out`` wrote, as its lines record them: --exist-ok
    deletes those, never a picture of someone else's that happens to sit in vis/ or masks/."""
    pictures = []
    for name in ("predictions.jsonl", "predictions.jsonl.partial"):
        try:
            records = read_jsonl(out / name)
        except TorchinferError:  # a file that is not ours: nothing in it is trusted
            continue
        for record in records:
            files = record.get("files")
            if isinstance(files, dict):
                # by folder and name: the line holds the path as the earlier run spelled it
                pictures += [out / Path(str(f)).parent.name / Path(str(f)).name
                             for f in files.values()]
    return pictures


def run_fingerprint(predictor: StreamingPredictor, settings: Mapping[str, Any] | None = None, *,
                    video_stride: int = 1, save_vis: bool = False,
                    save_masks: bool = False) -> dict[str, Any]:
    """What decides a run's answers and outputs, as JSON values (see ``run_to_dir``)."""
    model = getattr(predictor, "model", None)
    found = {"task": predictor.task, "model": getattr(model, "name", None),
             "weights": getattr(model, "weights", None), "video_stride": video_stride,
             "save_vis": save_vis, "save_masks": save_masks, **(settings or {})}
    heads = getattr(predictor, "heads", None)  # a multi-head model's: outputs, labels, options
    if heads:
        found["heads"] = [head.to_dict() for head in heads]
    # through JSON, so that a fresh fingerprint compares equal to one read back from a file
    return json.loads(json.dumps({key: _stamp_file(value) for key, value in found.items()},
                                 default=str))


def _stamp_file(value: Any) -> Any:
    """A value naming an existing file -> its path, size and mtime: a file changed in place
    (retrained weights under the same name) is a different run."""
    if not isinstance(value, (str, os.PathLike)):
        return value
    try:
        st = os.stat(value)
    except (OSError, ValueError):
        return value
    if not stat.S_ISREG(st.st_mode):
        return value
    return {"path": os.path.realpath(value), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _resumable(out: Path, fingerprint: dict[str, Any], files: tuple[str, ...]
               ) -> list[dict[str, Any]]:
    """The lines of the earlier run into ``out`` that a resumed run keeps."""
    if not _earlier_outputs(out, files):
        return []
    earlier = _earlier_fingerprint(out)
    where = shown(str(out))
    if earlier is None:
        raise TorchinferError(f"cannot resume in {where}: no record of the run that wrote it "
                              "(run.json); use --exist-ok to start again")
    differences = _differences(earlier, fingerprint)
    if differences:
        raise TorchinferError(f"cannot resume in {where}: this run differs from the one that "
                              f"wrote it in {'; '.join(differences)}; use the same options, "
                              "or --exist-ok to start again")
    try:
        records = _done_records(out)
    except TorchinferError as exc:
        raise TorchinferError(f"cannot resume: {exc}; use --exist-ok to start again") from None
    # an earlier run's lines whose file is unchanged; a changed file runs again
    return [r for r in records
            if isinstance(r.get("file"), dict) and _file_stamp(r["source"]) == r["file"]]


def _earlier_fingerprint(out: Path) -> dict[str, Any] | None:
    """run.json's (written when a run starts, so it is the latest run's even when that one was
    killed), else summary.json's."""
    for name in ("run.json", "summary.json"):
        path = out / name
        if not path.is_file():
            continue
        try:
            found = json.loads(path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TorchinferError(f"cannot resume: {shown(str(path))} is not JSON ({exc}); "
                                  "use --exist-ok to start again") from None
        if isinstance(found, dict) and isinstance(found.get("fingerprint"), dict):
            return found["fingerprint"]
    return None


def _differences(earlier: dict[str, Any], now: dict[str, Any]) -> list[str]:
    return [f"{key} ({_brief(earlier.get(key))} then, {_brief(now.get(key))} now)"
            for key in sorted(earlier.keys() | now.keys()) if earlier.get(key) != now.get(key)]


def _brief(value: Any) -> str:
    if isinstance(value, dict) and "path" in value and "mtime_ns" in value:
        value = f"{value['path']}, {value['size']} bytes, mtime {value['mtime_ns']}"
    text = value if isinstance(value, str) else json.dumps(value)
    return shown(text) if len(text) <= 80 else shown(text[:77]) + "..."


class _Run:
    """What a run gathers as its results arrive: counts, timings, picture names, COCO records."""

    def __init__(self, predictor: StreamingPredictor, out: Path, kept: list[dict[str, Any]],
                 fingerprint: dict[str, Any], outputs: Outputs, *, video_stride: int,
                 on_result: Callable[[Result], None] | None, named_as: str | None = None):
        self.predictor, self.out, self.on_result = predictor, out, on_result
        self.named_as = named_as
        self.outputs = outputs
        self.summary = RunSummary(total=len(kept), resumed=len(kept), fingerprint=fingerprint)
        self.names = UniqueNames()
        for record in kept:
            self.names(record["source"])  # picture names stay taken
        self.next_id = max((r["image_id"] for r in kept if isinstance(r.get("image_id"), int)),
                           default=-1) + 1
        self.records_for_coco = [r for r in kept if "detections" in r or any(
            "detections" in h for h in r.get("heads", {}).values())]
        self.is_detection = bool(self.records_for_coco)
        self.videos = VideoPictures(out, video_stride, outputs.draw) if outputs.vis else None
        self.totals = dict.fromkeys(STAGES, 0.0)
        self.timed = 0
        self.draw_s = 0.0
        self.start = time.perf_counter()

    def add(self, source: Source, result: Result, writer: JsonlWriter) -> None:
        record = result.to_dict()
        stamp = _file_stamp(source.path) if source.is_file and source.path else None
        if stamp is not None:
            record["file"] = stamp
        if isinstance(result, Detections) or (isinstance(result, MultiTask) and any(
                isinstance(head, Detections) for head in result.heads.values())):
            # COCO results identify images by id: unique in this output folder
            record["image_id"] = self.next_id
            self.next_id += 1
            self.is_detection = True
            if result.ok:
                self.records_for_coco.append(record)
        if result.ok and self.outputs.wanted:
            t0 = time.perf_counter()
            try:
                files, fields = self._pictures(source, result)
                if files:  # a task's own rows (embed's) may be all it wrote
                    record["files"] = files
                record.update(fields)
            except (InputError, OSError) as exc:  # the file changed since, a name too long...
                # the answer stands; only its pictures are missing, and the line says why
                reason = exc.reason if isinstance(exc, InputError) else exc.strerror or str(exc)
                record["files_error"] = f"pictures not written: {reason}"
            self.draw_s += time.perf_counter() - t0
        writer.write(record)
        self._count(result)
        if self.on_result is not None:
            self.on_result(result)

    def _pictures(self, source: Source, result: Result) -> tuple[dict[str, str], dict[str, Any]]:
        files, fields = save_outputs(self.predictor.loader, source, result, self.out,
                                     self.names(result.source), self.outputs)
        if self.videos is not None and source.kind == "frame":
            files.update(self.videos.add(source, result, self.names))
        return files, fields

    def _count(self, result: Result) -> None:
        self.summary.total += 1
        if result.ok:
            self.timed += 1
            for stage in STAGES:
                self.totals[stage] += result.speed.get(stage, 0.0)
        else:
            self.summary.failed += 1
            self.summary.failures.append({"source": result.source, "error": result.error or ""})

    def _named(self, path: str | Path) -> str:
        """An output's path as the user knows it: under ``named_as`` when the folder stands in
        for a URI."""
        if self.named_as is None:
            return str(path)
        return joined(self.named_as, Path(path).relative_to(self.out).as_posix())

    def stop(self, partial: Path, run_info: dict[str, Any] | None) -> None:
        """Ctrl-C: the summary of the lines written so far."""
        if self.videos is not None:
            self.videos.abandon()
        self.summary.interrupted = True
        self._write_summary(partial, run_info)

    def finish(self, predictions: Path, run_info: dict[str, Any] | None) -> RunSummary:
        if self.videos is not None:
            self.videos.close()
        if self.is_detection:
            coco = [c for r in self.records_for_coco for c in coco_records(r)]
            self.summary.outputs["coco_results"] = self._named(
                write_json_atomic(self.out / "coco_results.json", coco))
            if any("corners" in d for r in self.records_for_coco for d in r.get("detections", ())):
                # rotated boxes (Ultralytics OBB): DOTA's Task 1 files, one per class
                write_dota(self.records_for_coco, self.out / "dota")
                self.summary.outputs["dota"] = self._named(self.out / "dota")
        if self.outputs.finish is not None:
            self.summary.outputs.update({k: self._named(v) for k, v in
                                         self.outputs.finish(self.out).items()})
        self._write_summary(predictions, run_info)
        return self.summary

    def _write_summary(self, predictions: Path, run_info: dict[str, Any] | None) -> None:
        summary, predictor, timed = self.summary, self.predictor, self.timed
        summary.seconds = time.perf_counter() - self.start
        summary.stage_ms = {k: v / timed for k, v in self.totals.items()} if timed else {}
        summary.draw_ms = self.draw_s * 1000 / timed if timed else 0.0
        summary.outputs.update(predictions=self._named(predictions),
                               summary=self._named(self.out / "summary.json"))
        info = dict(run_info or {})
        model = getattr(predictor, "model", None)  # which source built it, at which commit
        if model is not None and getattr(model, "source", None) is not None:
            info["model_source"] = {"source": model.source, "name": model.name,
                                    "revision": model.revision}
        for key, report in (("backend", predictor.backend_report),
                            ("decode", predictor.decode_report), ("pipeline", predictor.pipeline)):
            if report is not None:
                info[key] = report.to_dict()
        write_json_atomic(self.out / "summary.json", {**info, **summary.to_dict()})


def _file_stamp(source: str) -> dict[str, int] | None:
    """Size and modification time of a file input (None for in-memory inputs): what --resume
    compares to decide an input is unchanged."""
    if is_uri(source):
        return uri_stamp(source)
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
        if "error" not in record and isinstance(record.get("source"), str):
            latest[record["source"]] = record
    return list(latest.values())


def coco_records(record: dict[str, Any]) -> list[dict[str, Any]]:
    """COCO results-format entries from one detection line of predictions.jsonl (bbox as
    x, y, w, h), so a resumed run's COCO file covers the lines it kept too. A multi-head
    line gives its detection heads' entries, each with a "head" key saying whose."""
    if "heads" in record:
        return [{**entry, "head": name} for name, head in record["heads"].items()
                for entry in coco_records({**head, "image_id": record["image_id"]})]
    return [coco_entry(record["image_id"], det["class_id"], det["box"], det["score"],
                       segmentation=det.get("mask"),
                       keypoints=[v for kp in det["keypoints"] for v in kp]
                       if "keypoints" in det else None)
            for det in record.get("detections", ())]
