"""``torchinfer demo``: the main jobs end to end on bundled inputs, with results to look at.

Until trained demo models are bundled, the models have RANDOM weights, calibrated on the
photographs so their answers differ between pictures: the pipeline, the outputs and the timings
are real; the labels are not meaningful, and every output says so.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from PIL import Image
from rich.console import Console
from rich.table import Table

from .api import load
from .draw import annotate_classification, contact_sheet, visualise
from .io.sinks import save_image_atomic
from .models import torchvision_task
from .run import RunSummary, run_to_dir
from .testing import calibrate, load_photographs

RANDOM_NOTE = "RANDOM WEIGHTS: labels are not meaningful"
DEMO_MODELS = {"classify": "mobilenet_v2", "segment": "lraspp_mobilenet_v3_large"}


def run_demo(out: str | Path = "runs/demo", *, console: Console | None = None) -> list[RunSummary]:
    console = console or Console()
    out = Path(out)
    photos = load_photographs()
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for name, img in photos.items():
        img.save(images_dir / (Path(name).stem + ".jpg"), quality=92)

    summaries = []
    for task, arch in DEMO_MODELS.items():
        weights = _random_weights(arch, list(photos.values()), out / "weights")
        console.print(f"[bold]{task}[/] {arch}, {RANDOM_NOTE.lower()}")
        predictor = load(task, arch, weights, device="auto")
        results = []
        summary = run_to_dir(predictor, [str(images_dir)], out / task, on_result=results.append,
                             save_masks=task == "segment",
                             run_info={"task": task, "model": arch, "weights": str(weights),
                                       "note": RANDOM_NOTE})
        # drawn here rather than by run_to_dir(save_vis=True): each picture is drawn once, for
        # both vis/ and the contact sheet, and classification pictures carry the warning
        pictures = []
        for r in results:
            if r.ok:
                img = predictor.loader.load(r.source)
                picture = (annotate_classification(img, r, note=RANDOM_NOTE)
                           if task == "classify" else visualise(r, img))
                save_image_atomic(picture, out / task / "vis" / f"{Path(r.source).stem}.jpg",
                                  quality=90)
                pictures.append(picture)
        contact_sheet(pictures, title=f"{task}: {arch}, {RANDOM_NOTE}").save(
            out / f"{task}.jpg", quality=90)
        _print_table(console, task, results)
        console.print(f"{summary.total} images in {summary.seconds:.2f} s on {predictor.device}; "
                      f"{out}/{task}.jpg, {out}/{task}/", highlight=False)
        summaries.append(summary)
    return summaries


def _random_weights(arch: str, photos: list[Image.Image], folder: Path) -> Path:
    """Seeded random weights calibrated on the photographs, saved as a plain state dict."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    # segmentation builders would otherwise download an ImageNet backbone
    extra = {"weights_backbone": None} if torchvision_task(arch) != "classify" else {}
    model = torchvision.models.get_model(arch, **extra)
    calibrate(model, photos, crops_per_image=4 if arch.startswith("mobilenet") else 2)
    path = folder / f"{arch}-random-calibrated.pth"
    torch.save(model.state_dict(), path)
    return path


def _print_table(console: Console, task: str, results: list) -> None:
    table = Table("image", "answer", "ms/img (pre / model / post)", title=f"{task} ({RANDOM_NOTE})")
    for r in results:
        speed = " / ".join(f"{r.speed.get(k, 0):.1f}" for k in ("preprocess", "inference", "postprocess"))
        if not r.ok:
            answer = f"failed: {r.error}"
        elif task == "classify":
            answer = f"{r.top1.label} {r.top1.score:.3f}"
        else:
            answer = ", ".join(f"{a.label} {a.fraction:.0%}" for a in r.areas[:3])
        table.add_row(Path(r.source).name, answer, speed)
    console.print(table)
