"""``torchinfer demo``: the main job end to end on bundled inputs, with results to look at.

Until trained demo models are bundled, classification runs a mobilenet_v2 with RANDOM weights
(calibrated on the photographs so its answers differ between pictures): the pipeline, the
outputs and the timings are real; the labels it prints are not meaningful, and every output
says so.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from rich.console import Console
from rich.table import Table

from .api import load
from .draw import annotate_classification, contact_sheet
from .run import RunSummary, run_to_dir
from .testing import calibrate, load_photographs

RANDOM_NOTE = "RANDOM WEIGHTS: labels are not meaningful"


def run_demo(out: str | Path = "runs/demo", *, console: Console | None = None) -> RunSummary:
    console = console or Console()
    out = Path(out)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    photos = load_photographs()
    paths = []
    for name, img in photos.items():
        path = images_dir / (Path(name).stem + ".jpg")
        img.save(path, quality=92)
        paths.append(path)

    weights = out / "weights" / "mobilenet_v2-random-calibrated.pth"
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = calibrate(torchvision.models.mobilenet_v2(), list(photos.values()))
    torch.save(model.state_dict(), weights)

    console.print(f"[bold]classify[/] mobilenet_v2, {RANDOM_NOTE.lower()}")
    clf = load("classify", "mobilenet_v2", weights, device="auto", top_k=3)
    results = []
    summary = run_to_dir(clf, [str(images_dir)], out / "classify", on_result=results.append,
                         run_info={"task": "classify", "model": "mobilenet_v2",
                                   "weights": str(weights), "note": RANDOM_NOTE})
    vis_dir = out / "classify" / "vis"
    vis_dir.mkdir(parents=True, exist_ok=True)
    annotated = []
    for result in results:
        source = Path(result.source)
        img = annotate_classification(clf.loader.load(source), result, note=RANDOM_NOTE)
        img.save(vis_dir / source.name, quality=90)
        annotated.append(img)
    contact_sheet(annotated).save(out / "classify.jpg", quality=90)

    table = Table("image", "top-1", "score", "ms/img (pre / model / post)",
                  title=f"classify ({RANDOM_NOTE})")
    for r in results:
        speed = " / ".join(f"{r.speed.get(k, 0):.1f}" for k in ("preprocess", "inference", "postprocess"))
        table.add_row(Path(r.source).name, r.top1.label if r.ok else f"failed: {r.error}",
                      f"{r.top1.score:.3f}" if r.ok else "", speed)
    console.print(table)
    console.print(f"{summary.total} images in {summary.seconds:.2f} s on {clf.device}; "
                  f"results in {out}/ (classify.jpg, classify/predictions.jsonl, "
                  f"classify/vis/)", highlight=False)
    return summary
