"""``torchinfer demo``: the main jobs end to end on bundled models and generated images.

Runs offline in about a minute on two CPU cores and writes what a newcomer should look at in
``runs/demo/``: the bundled models (trained on procedural shapes, see
``scripts/train_shapes.py``) classify, segment, detect and estimate the depth of freshly
generated shapes pictures (a seed the models were not trained on); each task's answers are
scored against the truth the generator drew; the models are inspected (parameters, MACs);
and the classifier is exported to ONNX, verified against PyTorch on scikit-image's
photographs, and scored again from the file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ..api import export, inspect, load, load_group
from ..datasets.shapes import WRITERS, write_dominant
from ..datasets.shapes_depth import write_depth_scenes
from ..datasets.shapes_duplicates import write_copies_folder
from ..draw import contact_sheet
from ..models.bundled import BUNDLED, bundled_path
from ..runner.run import RunSummary, run_to_dir
from ..runner.sinks import save_image_atomic, write_json_atomic
from ..tasks.registry import task_spec

# Not a training seed (scripts/train_shapes.py trains on seeds 0..), so these are new pictures.
DEMO_SEED = 20_261_126
DEMO_IMAGES = {"classify": 24, "segment": 8, "detect": 8, "depth": 8, "embed": 8}
# each bundled model's data, in the layout its task's eval reads
# (embed: scenes with their planted copies, a class each: recall@1 is "the nearest other
# picture is a copy of the same scene")
LAYOUT_WRITERS = {**WRITERS, "depth": write_depth_scenes, "embed": write_copies_folder}
MODELS = {task: name for name, task in BUNDLED.items() if task != "multi"}
MULTITASK = "shapes_multitask"  # one encoder, the three tasks' heads (scripts/train_shapes.py)
MULTITASK_IMAGES = 24  # scenes run each way to compare speeds


@dataclass
class DemoRow:
    task: str
    model: str
    images: int
    metric: str  # what the score is, in words
    score: float  # top-1, mIoU or mAP@.5, as a fraction
    images_per_second: float
    failed: int
    report: Any = None  # the evaluation report behind the score

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "report"}


def run_demo(out: str | Path = "runs/demo", *, console: Console | None = None,
             device: str = "auto") -> list[RunSummary]:
    console = console or Console()
    out = Path(out)
    start = time.perf_counter()
    data = _write_data(out / "data")
    rows, summaries = [], []
    for task, model in MODELS.items():
        summary, row = _run_task(task, model, data[task], out, device, console)
        summaries.append(summary)
        rows.append(row)
    _inspect_table(console)
    rows.append(_export_and_rescore(out, data["classify"], console))
    rows += _multitask(out, data, device, console, {r.task: r for r in rows})
    _summary_table(console, rows, time.perf_counter() - start, out)
    write_json_atomic(out / "demo.json", [row.to_dict() for row in rows])
    return summaries


def _write_data(root: Path) -> dict[str, Path]:
    """Freshly generated pictures with their truth, in the layouts `torchinfer eval` reads."""
    return {task: LAYOUT_WRITERS[task](root / task, DEMO_IMAGES[task], DEMO_SEED)
            for task in MODELS}


def _run_task(task: str, model: str, data: Path, out: Path, device: str,
              console: Console) -> tuple[RunSummary, DemoRow]:
    spec = task_spec(task)
    dataset = spec.read_dataset(data)
    predictor = load(task, model, device=device)
    results: list[Any] = []
    # the images the evaluation scores, in its order, wherever the task's layout keeps them
    summary = run_to_dir(predictor, dataset.paths, out / task,
                         on_result=results.append, save_masks=True, exist_ok=True,
                         run_info={"task": task, "model": model})
    # drawn here rather than with save_vis: each picture is drawn once, for vis/ and the sheet
    pictures = []
    for r in results:
        if r.ok:
            picture = spec.draw(predictor.loader.load(r.source), r)
            save_image_atomic(picture, out / task / "vis" / f"{Path(r.source).stem}.jpg",
                              quality=90)
            pictures.append(picture)
    contact_sheet(pictures, title=f"{task}: {model} on new shapes pictures").save(
        out / f"{task}.jpg", quality=90)
    # scored the way `torchinfer eval` scores (detection: every box down to a low score)
    report = spec.evaluator(load(task, model, device=device, **spec.evaluation_options), dataset)
    metric, score = report.headline()
    console.print(f"[bold]{task}[/] {model}: {summary.total} images, {metric} "
                  f"-> {out / f'{task}.jpg'}, {out / task}/", highlight=False)
    return summary, DemoRow(task, model, summary.total, metric, score,
                            summary.images_per_second, summary.failed, report)


def _inspect_table(console: Console) -> None:
    table = Table("model", "parameters", "MMACs", "input", "file", title="inspect")
    for model in MODELS.values():
        report = inspect(model)
        path = bundled_path(model)
        table.add_row(model, f"{report.params_total:,}", f"{report.macs / 1e6:.1f}",
                      "x".join(str(d) for d in report.input_shape),
                      f"{path.stat().st_size / 1e6:.2f} MB" if path else "-")
    console.print(table)


def _export_and_rescore(out: Path, data: Path, console: Console) -> DemoRow:
    """Export the classifier, verified against PyTorch on photographs, then score the file."""
    path = out / "export" / "shapes_classifier.onnx"
    report = export("shapes_classifier", path)
    console.print(report.summary(), highlight=False)
    spec = task_spec("classify")
    scored = spec.evaluator(load(spec.name, str(path), **spec.evaluation_options),
                            spec.read_dataset(data))
    metric, score = scored.headline()
    return DemoRow("classify (ONNX file)", path.name, scored.images, metric, score, 0.0,
                   scored.failed)


def _multitask(out: Path, data: dict[str, Path], device: str, console: Console,
               single: dict[str, DemoRow]) -> list[DemoRow]:
    """shapes_multitask beside the three single-task models: each head scored on its task's
    data, their answers on the same scenes side by side, and the speed of one pass against
    three models one after another and three models over one decode."""
    multi = load("multi", MULTITASK, device=device)
    heads = {h.task: h.name for h in multi.heads}
    shared = {task: model for task, model in MODELS.items() if task in heads}
    # the "shape" head names a whole scene's dominant shape: scored on scenes, not on the
    # classifier's single-shape pictures
    scenes_by_class = write_dominant(out / "data" / "multi-classify", DEMO_IMAGES["classify"],
                                     DEMO_SEED)
    layouts = {"classify": scenes_by_class, "segment": data["segment"], "detect": data["detect"]}
    report = task_spec("multi").evaluator(multi, {heads[t]: path for t, path in layouts.items()})
    scores = Table("task", "single-task model", "score", "multitask head", "score",
                   title=f"{MULTITASK}: one network with three heads, beside three networks")
    for task, model in shared.items():
        scores.add_row(task, model, single[task].metric, heads[task],
                       report.heads[heads[task]].headline()[0])
    console.print(scores)

    scenes = task_spec("detect").read_dataset(data["detect"]).paths
    alone = {task: load(task, model, device=device) for task, model in shared.items()}
    answers = Table("scene", "objects (detector)", "objects (multitask)",
                    "largest (segmenter)", "largest (multitask)", "dominant (multitask)",
                    title=f"the same scenes: the single-task models and {MULTITASK}")
    for path, mine in zip(scenes[:6], multi(scenes[:6])):
        det, seg = alone["detect"](path), alone["segment"](path)
        answers.add_row(Path(path).name, _count(det), _count(mine[heads["detect"]]),
                        _largest(seg), _largest(mine[heads["segment"]]),
                        mine[heads["classify"]].top1.label)
    console.print(answers)

    work = (scenes * (MULTITASK_IMAGES // len(scenes) + 1))[:MULTITASK_IMAGES]
    speeds: dict[str, float] = {}
    t0 = time.perf_counter()
    for predictor in alone.values():
        list(predictor.stream(work))
    speeds["three models, one after another"] = len(work) / (time.perf_counter() - t0)
    group = load_group(list(shared.values()), device=device)
    t0 = time.perf_counter()
    list(group.stream(work))
    speeds["three models over one decode"] = len(work) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    list(multi.stream(work))
    speeds[f"{MULTITASK}, one pass"] = len(work) / (time.perf_counter() - t0)
    speed = Table("way", "img/s", title=f"{len(work)} scenes, all three tasks answered each way")
    for way, rate in speeds.items():
        speed.add_row(way, f"{rate:.1f}")
    console.print(speed)
    summary = run_to_dir(multi, scenes, out / "multi", save_vis=True, save_masks=True,
                         exist_ok=True, run_info={"task": "multi", "model": MULTITASK})
    console.print(f"[bold]multi[/] {MULTITASK}: every head drawn on one picture -> "
                  f"{out / 'multi'}/vis/", highlight=False)
    return [DemoRow(f"{task} (multitask head)", MULTITASK, r.images, *r.headline(),
                    summary.images_per_second, r.failed)
            for task in shared for r in [report.heads[heads[task]]]]


def _count(result: Any) -> str:
    return str(len(result)) if result.ok else "failed"


def _largest(result: Any) -> str:
    shapes = [a for a in result.areas if a.index != 0] if result.ok else []
    return shapes[0].label if shapes else "-"


def _summary_table(console: Console, rows: list[DemoRow], seconds: float, out: Path) -> None:
    table = Table("task", "model", "images", "score vs the drawn truth", "img/s",
                  title=f"demo: {seconds:.0f} s, results in {out}/")
    for row in rows:
        table.add_row(row.task, row.model, str(row.images), row.metric,
                      f"{row.images_per_second:.1f}" if row.images_per_second else "-")
    console.print(table)
