"""timm and transformers models from their hub folders: torchinfer against the libraries' own
loops on the same folder of JPEGs and the same model files, side by side in one run.

Models: tests/hub_fixtures.py builds them (random weights calibrated on photographs, nothing
is downloaded) and saves them as the hub holds them: timm's ``save_for_hf`` folders
(resnet10t, vit_tiny_patch16_224, convnext_atto) and transformers' ``save_pretrained`` folders
(ViT, ConvNeXt, DETR, RT-DETR, SegFormer, UperNet) with their image processors.
Pictures: ``--images`` JPEGs (quality 90) of 640x480 to 1280x960, landscape and portrait, cut
from scikit-image's photographs with mild sensor noise, so that decoding costs what it costs
on photographs.

Contenders, each reading the files itself (decoding is in the time):
  torchinfer     ``ti.load(task, folder).stream(image_folder, batch_size=B)``: by default the
                 fastest verified runtime (auto); ``--backend torch`` pins eager PyTorch. The
                 one-time measurement (``p.prepare()``) happens before timing: its duration is
                 printed, not counted (nothing is remembered for a folder between processes,
                 so every process pays it once per model)
  timm loop      (timm models) ``timm.create_model("local-dir:" + folder, pretrained=True)``,
                 ``create_transform(**resolve_data_config({}, model=model))``, a DataLoader over
                 the files (PIL open, convert RGB, transform), batch B, ``inference_mode``,
                 softmax, top-1; with 0 and with 2 workers (both rows printed, the better marked)
  transformers   ``transformers.pipeline(task, model=folder, batch_size=B)`` with its default
                 image processor, fed the list of paths. Where the pipeline fails at batch B (its
                 object-detection pipeline cannot batch DETR's padded inputs, nor a short last
                 batch of RT-DETR's), it runs at batch 1 and says so; where it cannot load the
                 folder at all (timm's), the error is printed

Answers are compared with torchinfer's: classification, top-1 class per image and the largest
difference of the top-1 probability; detection, per image the same number of boxes, each
matched to one of the same class with IoU >= 0.99 (transformers' pipeline rounds its boxes to
whole pixels toward zero; torchinfer's are rounded the same way before matching); segmentation,
the share of equal pixels of the class maps at the pictures' own size. Detection uses the same
score threshold on both sides (``--conf``, torchinfer's default unless given).

Each contender warms up first on B + 1 pictures, one of each size in the folder among them
(oneDNN builds its kernels per input shape), with a short last batch; torchinfer's warm-up
is 7 batches + 1, so that the split of the cores between decoding and the model, which a
predictor measures once on its first stream's first batches, is not timed either. Then
``--repeats`` rounds over the whole folder, the contenders interleaved (their order rotates
each round: this machine's speed drifts between minutes); the median is printed, with the
ratio to torchinfer measured in the same run. Under each table: torchinfer's runtime,
JPEG decoding (reduced or exact), its pipeline plan and where its time goes (ms per image from
each result's ``speed``). The CPU and its vector flags come first: the figures depend on them.

    python benchmarks/model_sources.py [--models timm/resnet10t,hf/detr | all] [--images 64]
                                       [--batch 8] [--repeats 3] [--backend auto|torch]
                                       [--conf 0.25]
"""

from __future__ import annotations

import argparse
import atexit
import inspect
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: every model is local
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import torchinfer as ti  # noqa: E402
from torchinfer.runner.plan import PROBE_FULL, PROBE_SPLIT  # noqa: E402
from torchinfer.runtime.cpu import describe_cpu, native_bf16  # noqa: E402
from torchinfer.tasks.detect import DetectionPredictor  # noqa: E402
from torchinfer.testing import load_photographs  # noqa: E402

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))
from hub_fixtures import save_hf_folder, save_timm_folder  # noqa: E402

# name -> (library, architecture or kind, torchinfer task)
MODELS = {
    "timm/resnet10t": ("timm", "resnet10t", "classify"),
    "timm/vit_tiny_patch16_224": ("timm", "vit_tiny_patch16_224", "classify"),
    "timm/convnext_atto": ("timm", "convnext_atto", "classify"),
    "hf/vit": ("hf", "vit", "classify"),
    "hf/convnext": ("hf", "convnext", "classify"),
    "hf/detr": ("hf", "detr", "detect"),
    "hf/rt_detr": ("hf", "rt_detr", "detect"),
    "hf/segformer": ("hf", "segformer", "segment"),
    "hf/upernet": ("hf", "upernet", "segment"),
}
# One of each source and task, within ~5 minutes on 2 cores with auto's one-time measurement
# (which alone takes 6-70 s per model there); ``--models all`` runs the nine (~10 minutes)
DEFAULT_MODELS = "timm/resnet10t,timm/convnext_atto,hf/vit,hf/detr,hf/segformer"
PIPELINE_TASKS = {"classify": "image-classification", "detect": "object-detection",
                  "segment": "image-segmentation"}
SIZES = ((640, 480), (800, 600), (1024, 768), (1280, 960))
DEFAULT_CONF = inspect.signature(DetectionPredictor.__init__).parameters["conf"].default


# --------------------------------------------------------------------------------------------
# the pictures
# --------------------------------------------------------------------------------------------

def write_jpegs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` JPEGs (quality 90) of 640x480 .. 1280x960, every third one portrait: crops of
    the photographs with the picture's aspect ratio, resized, with sensor noise (an enlarged
    photograph alone is smoother, so cheaper to decode, than a photograph taken at that size)."""
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    photos = list(load_photographs().values())
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        img = photos[i % len(photos)].convert("RGB")
        w, h = SIZES[(i // len(photos)) % len(SIZES)]
        if i % 3 == 2:
            w, h = h, w
        pw, ph = img.size
        scale = rng.uniform(0.6, 1.0) * min(pw / w, ph / h)  # the largest crop of that shape
        cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
        x, y = rng.randint(0, pw - cw), rng.randint(0, ph - ch)
        crop = img.crop((x, y, x + cw, y + ch)).resize((w, h), Image.Resampling.BICUBIC)
        pixels = np.asarray(crop, dtype=np.float32) + noise.normal(0, 5.0, (h, w, 3))
        path = folder / f"photo_{i:04d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def warm_set(paths: list[Path], count: int) -> list[Path]:
    """``count`` pictures for a warm-up, one of each size in the folder first: oneDNN builds its
    kernels per input shape (the first picture of a new shape can cost a DETR 20x its forward),
    and detectors and segmenters see the pictures' own aspect ratios."""
    seen: dict[tuple[int, int], Path] = {}
    for p in paths:
        with Image.open(p) as img:
            seen.setdefault(img.size, p)
    first = list(seen.values())
    rest = [p for p in paths if p not in first]
    return [*(first + rest)[:count], *[first[i % len(first)] for i in range(count - len(paths))]]


# --------------------------------------------------------------------------------------------
# the contenders: each returns {file name: answer}
# --------------------------------------------------------------------------------------------

@dataclass
class Contender:
    name: str
    run: Callable[[], dict[str, Any]]  # the timed call, over the whole folder
    warm: Callable[[], Any]  # the same on B + 1 pictures
    setup_s: float = 0.0
    note: str = ""
    times: list[float] = field(default_factory=list)
    answers: dict[str, Any] | None = None
    error: str | None = None
    warmed: bool = False


def _short(exc: BaseException, n: int = 150) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= n else text[:n - 3] + "..."


def torchinfer_contender(task: str, folder: Path, images: Path, paths: list[Path], bs: int,
                         backend: str, precision: str, conf: float) -> tuple[Contender, Any]:
    options: dict[str, Any] = {"batch_size": bs, "device": "cpu", "backend": backend,
                               "precision": precision}
    if task == "detect":
        options["conf"] = conf
    t0 = time.perf_counter()
    p = ti.load(task, str(folder), **options)
    p.prepare()  # auto measures and verifies the runtimes here, once: not in the timed part
    setup = time.perf_counter() - t0
    last: dict[str, Any] = {}

    def run() -> dict[str, Any]:
        results = list(p.stream(str(images), batch_size=bs))
        last["results"] = results
        return {Path(r.source).name: torchinfer_answer(task, r) for r in results}

    # warm-up: enough batches for the stream to measure its one-time split of the cores
    # between decoding and the model (kept by the predictor), then a short last batch
    warm = [str(x) for x in warm_set(paths, (PROBE_FULL + PROBE_SPLIT) * bs + 1)]
    label = f"torchinfer ({backend}: {chosen(p, f'{backend}/{precision}')})"
    return Contender(label, run, lambda: list(p.stream(warm, batch_size=bs)), setup), (p, last)


def torchinfer_answer(task: str, r) -> Any:
    if not r.ok:
        return Failed(r.error)
    if task == "classify":
        return (r.top1.index, r.top1.score)
    if task == "detect":
        return (r.boxes.astype(np.float64), r.scores.astype(np.float64), r.class_ids.astype(int))
    return r.mask.astype(np.int64)


class Failed(str):
    """torchinfer's error for a picture, in place of its answer."""


def chosen(p, asked: str = "") -> str:
    report = getattr(p, "backend_report", None)
    if report is not None and report.chosen is not None:
        return report.chosen.label
    return asked or "torch/fp32"


def timm_contenders(folder: Path, paths: list[Path], bs: int) -> list[Contender]:
    import timm
    from timm.data import create_transform, resolve_data_config

    t0 = time.perf_counter()
    model = timm.create_model("local-dir:" + str(folder), pretrained=True).eval()
    cfg = resolve_data_config({}, model=model)
    transform = create_transform(**cfg)
    setup = time.perf_counter() - t0
    note = (f"{cfg['input_size'][1]}x{cfg['input_size'][2]}, crop_pct {cfg['crop_pct']}, "
            f"{cfg['interpolation']}")

    def loop(files: list[Path], workers: int) -> dict[str, Any]:
        loader = torch.utils.data.DataLoader(Files(files, transform), batch_size=bs,
                                             num_workers=workers)
        answers: dict[str, Any] = {}
        names = iter(p.name for p in files)
        with torch.inference_mode():
            for batch in loader:
                top = model(batch).softmax(-1).max(-1)
                for score, index in zip(top.values.tolist(), top.indices.tolist()):
                    answers[next(names)] = (index, score)
        return answers

    warm = warm_set(paths, bs + 1)
    return [Contender(f"timm loop, DataLoader {w} workers", lambda w=w: loop(paths, w),
                      lambda w=w: loop(warm, w), setup, note) for w in (0, 2)]


class Files(torch.utils.data.Dataset):
    """The usual ImageFolder-like dataset over a list of files: PIL, RGB, the transform."""

    def __init__(self, paths: list[Path], transform):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB"))


def transformers_contender(task: str, folder: Path, paths: list[Path], bs: int,
                           conf: float) -> Contender:
    import transformers

    name = "transformers pipeline"
    t0 = time.perf_counter()
    try:
        pipe = transformers.pipeline(PIPELINE_TASKS[task], model=str(folder), batch_size=bs,
                                     device="cpu")
    except Exception as exc:  # noqa: BLE001 (reported in the table)
        c = Contender(name, lambda: {}, lambda: None)
        c.error = "cannot load the folder: " + _loading_error(exc)
        return c
    setup = time.perf_counter() - t0
    label2id = {v: int(k) for k, v in pipe.model.config.id2label.items()}
    kwargs = {"threshold": conf} if task == "detect" else {}
    files = [str(p) for p in paths]
    warm = [str(p) for p in warm_set(paths, bs + 1)]

    def call(some: list[str], batch_size: int) -> dict[str, Any]:
        out = pipe(some, batch_size=batch_size, **kwargs)
        return {Path(f).name: pipeline_answer(task, o, label2id) for f, o in zip(some, out)}

    c = Contender(name, lambda: call(files, state["bs"]), lambda: call(warm, state["bs"]),
                  setup, type(pipe.image_processor).__name__)
    state = {"bs": bs}
    try:
        c.warm()
        c.warmed = True
    except Exception as exc:  # noqa: BLE001 (the pipeline's own failure at batch bs)
        state["bs"] = 1
        c.name += ", batch 1"
        c.note += f"; at batch {bs} it fails: {_short(exc, 110)}"
    return c


def _loading_error(exc: BaseException) -> str:
    """transformers' loading error names each class's failure at length: its last line."""
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    last = lines[-1] if lines else ""
    return _short(exc, 90) if not last else " ".join(last.split())[:150]


def pipeline_answer(task: str, out: Any, label2id: dict[str, int]) -> Any:
    if task == "classify":
        best = max(out, key=lambda d: d["score"])
        return (label2id[best["label"]], float(best["score"]))
    if task == "detect":
        boxes = np.array([[d["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")] for d in out],
                         dtype=np.float64).reshape(-1, 4)
        return (boxes, np.array([d["score"] for d in out], dtype=np.float64),
                np.array([label2id[d["label"]] for d in out], dtype=int))
    mask = None
    for d in out:
        m = np.asarray(d["mask"]) > 0
        if mask is None:
            mask = np.full(m.shape, -1, dtype=np.int64)
        mask[m] = label2id[d["label"]]
    return mask


# --------------------------------------------------------------------------------------------
# agreement with torchinfer
# --------------------------------------------------------------------------------------------

def agreement(task: str, ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    names = sorted(ours)
    missing = [n for n in names if n not in theirs]
    if missing:
        return f"{len(missing)} pictures missing from its answers"
    failed = [n for n in names if isinstance(ours[n], Failed)]
    if failed:
        return f"torchinfer failed on {len(failed)} pictures: {ours[failed[0]][:60]}"
    if task == "classify":
        same = sum(ours[n][0] == theirs[n][0] for n in names)
        dp = max(abs(ours[n][1] - theirs[n][1]) for n in names)
        return f"top-1 {same}/{len(names)} equal, max |top-1 prob diff| {dp:.2g}"
    if task == "detect":
        return detection_agreement(names, ours, theirs)
    equal = total = 0
    worst, worst_name = 1.0, ""
    for n in names:
        a, b = ours[n], theirs[n]
        if a.shape != b.shape:
            return f"{n}: mask {a.shape} vs {b.shape}"
        e = int((a == b).sum())
        equal, total = equal + e, total + a.size
        if e / a.size < worst:
            worst, worst_name = e / a.size, n
    return f"pixels {equal / total:.4%} equal; worst picture {worst:.2%} ({worst_name})"


def detection_agreement(names: list[str], ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    same_count = matched = boxes = 0
    ds, dpx = 0.0, 0.0
    for n in names:
        (ab, as_, ac), (bb, bs_, bc) = ours[n], theirs[n]
        boxes += len(ab)
        same_count += len(ab) == len(bb)
        integral = np.allclose(bb, np.round(bb))  # the pipeline's are whole pixels
        a = np.trunc(ab) if integral else ab
        used: set[int] = set()
        for i in np.argsort(-as_, kind="stable"):
            best, best_j = 0.0, -1
            for j in range(len(bb)):
                if j in used or bc[j] != ac[i]:
                    continue
                v = iou(a[i], bb[j])
                if v > best:
                    best, best_j = v, j
            if best >= 0.99:
                used.add(best_j)
                matched += 1
                ds = max(ds, abs(as_[i] - bs_[best_j]))
                dpx = max(dpx, float(np.abs(ab[i] - bb[best_j]).max()))
    return (f"box count equal {same_count}/{len(names)} pictures, {matched}/{boxes} boxes "
            f"matched (IoU>=0.99, same class), max |score diff| {ds:.2g}, max coord diff "
            f"{dpx:.2f} px")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else float(np.allclose(a, b))


# --------------------------------------------------------------------------------------------
# one model
# --------------------------------------------------------------------------------------------

def bench_model(key: str, tmp: Path, images: Path, paths: list[Path], args) -> tuple | None:
    library, arch, task = MODELS[key]
    folder = tmp / "models" / key.replace("/", "_")
    t0 = time.perf_counter()
    if library == "timm":
        save_timm_folder(folder, arch)
    else:
        save_hf_folder(folder, arch)
    build_s = time.perf_counter() - t0
    bs = args.batch
    contenders: list[Contender] = []
    print(f"== {key} ({task}; folder written by hub_fixtures in {build_s:.1f} s)", flush=True)
    try:
        ours, (predictor, last) = torchinfer_contender(task, folder, images, paths, bs,
                                                       args.backend, args.precision, args.conf)
    except Exception as exc:  # noqa: BLE001 (reported; the other models go on)
        print(f"  torchinfer cannot load it: {_short(exc, 400)}")
        if args.traceback:
            traceback.print_exc()
        print()
        return None
    contenders.append(ours)
    if library == "timm":
        contenders += timm_contenders(folder, paths, bs)
    contenders.append(transformers_contender(task, folder, paths, bs, args.conf))
    running = [c for c in contenders if c.error is None]
    threads = torch.get_num_threads()
    for c in (c for c in running if not c.warmed):  # kernels, allocations, a short batch
        try:
            c.warm()
        except Exception as exc:  # noqa: BLE001
            c.error = "failed: " + _short(exc)
        torch.set_num_threads(threads)
    running = [c for c in running if c.error is None]
    for r in range(args.repeats):  # interleaved, the order rotating
        k = r % len(running)
        for c in running[k:] + running[:k]:
            t = time.perf_counter()
            answers = c.run()
            c.times.append(time.perf_counter() - t)
            torch.set_num_threads(threads)  # whatever a contender changed
            if c.answers is None:
                c.answers = answers
    n = len(paths)
    rate = {c.name: n / statistics.median(c.times) for c in running}
    base = rate[ours.name]
    print(f"  torchinfer's one-time prepare() (load + measuring and verifying the runtimes, "
          f"not timed): {ours.setup_s:.1f} s")
    print(f"  {'contender':<48} {'img/s':>7} {'vs ti':>6}  agreement with torchinfer")
    timm_rows = [c for c in running if c.name.startswith("timm loop")]
    best_timm = max(timm_rows, key=lambda c: rate[c.name]).name if timm_rows else None
    for c in contenders:
        if c.error is not None:
            print(f"  {c.name:<48} {'-':>7} {'-':>6}  {c.error}")
            continue
        agree = "-" if c is ours else agreement(task, ours.answers, c.answers)
        mark = " (better timm loop)" if c.name == best_timm and len(timm_rows) > 1 else ""
        print(f"  {c.name + mark:<48} {rate[c.name]:7.1f} {rate[c.name] / base:5.2f}x  {agree}")
        if c.note:
            print(f"  {'':<48} {'':>7} {'':>6}  ({c.note})")
    results = [x for x in last.get("results", []) if x.ok]
    stages = ({k: sum(x.speed.get(k, 0.0) for x in results) / len(results)
               for k in results[0].speed} if results else {})
    plan = predictor.pipeline.reason if predictor.pipeline is not None else "no plan"
    decode = predictor.decode_report.reason if predictor.decode_report is not None else "?"
    print(f"  torchinfer: {chosen(predictor, f'{args.backend}/{args.precision}')}, JPEGs decoded "
          f"{'reduced' if predictor.reduced_decode else 'in full'} ({decode[:110]})")
    print(f"  torchinfer's plan: {plan}")
    print("  torchinfer's time, ms per image (mean of the results' speed): " +
          ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    spread = ", ".join(f"{c.name.split(' (')[0].split(',')[0]} "
                       f"{min(c.times):.2f}-{max(c.times):.2f} s" for c in running)
    print(f"  per-round seconds (min-max of {args.repeats}): {spread}\n", flush=True)
    libraries = [c for c in running if c is not ours]
    best_lib = max(libraries, key=lambda c: rate[c.name]) if libraries else None
    return (key, base, best_lib.name if best_lib else "-",
            rate[best_lib.name] if best_lib else float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS,
                        help=f"comma list, or 'all'; of: {', '.join(MODELS)}")
    parser.add_argument("--images", type=int, default=64, help="JPEGs in the folder")
    parser.add_argument("--batch", type=int, default=8, help="batch size of every contender")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; median kept")
    parser.add_argument("--backend", default="auto",
                        help="torchinfer's backend: auto (default: measured) or one by name")
    parser.add_argument("--precision", default="auto", help="torchinfer's precision")
    parser.add_argument("--conf", type=float, default=DEFAULT_CONF,
                        help="detection score threshold, given to both sides "
                             f"(default: torchinfer's, {DEFAULT_CONF})")
    parser.add_argument("--traceback", action="store_true", help="print load errors in full")
    args = parser.parse_args()
    keys = list(MODELS) if args.models == "all" else [m.strip() for m in args.models.split(",")]
    unknown = [k for k in keys if k not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose among {', '.join(MODELS)}")
    start = time.perf_counter()
    import timm
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=UserWarning)
    tmp = Path(tempfile.mkdtemp(prefix="torchinfer-bench-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    os.environ["TORCHINFER_CACHE"] = str(tmp / "cache")  # this run measures afresh
    images = tmp / "images"
    paths = write_jpegs(images, args.images)
    mb = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
    print(f"CPU: {describe_cpu()}; {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} CPUs; native bf16: {native_bf16()}")
    print(f"torch {torch.__version__}, timm {timm.__version__}, transformers "
          f"{transformers.__version__}, torchinfer {getattr(ti, '__version__', '?')}")
    print(f"folder: {len(paths)} JPEGs of 640x480-1280x960 (quality 90, {mb:.2f} MB each on "
          f"average); batch {args.batch} everywhere; median of {args.repeats} interleaved "
          f"rounds; img/s end to end (file decoding included); 'vs ti' = img/s / torchinfer's")
    print(f"detection threshold {args.conf} on both sides (torchinfer's default conf is "
          f"{DEFAULT_CONF}; transformers' pipeline default threshold is 0.5)\n", flush=True)
    summary = []
    for key in keys:
        row = bench_model(key, tmp, images, paths, args)
        if row is not None:
            summary.append(row)
    if summary:
        print(f"{'model':<28} {'torchinfer':>10} {'best library loop':>40} {'img/s':>7} "
              f"{'ti / it':>8}")
        for key, ti_rate, lib, lib_rate in summary:
            print(f"{key:<28} {ti_rate:10.1f} {lib[:40]:>40} {lib_rate:7.1f} "
                  f"{ti_rate / lib_rate:7.2f}x")
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
