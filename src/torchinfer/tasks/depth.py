"""Depth estimation: a depth map per image at the image's own size.

The model gives (N, 1, h, w) or (N, h, w) at its input resolution; each map is resized to its
image with bicubic interpolation (align_corners False), as transformers'
``post_process_depth_estimation`` does. Images of different shapes in one batch run in
same-shape groups: no padding changes what a model with global context sees.

The task's torch side is here (its manifest and its result type, read without torch by the
command line and the server's process, are in ``manifests/depth.py``): the predictor, a
multi-head model's depth head, what ``predict`` writes (``maps/``), the drawing, and ``eval
depth`` on NYUv2's layout.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import OptionError, TorchinferError
from ..evaluation import (
    DatasetError,
    EvalReport,
    failure_record,
    limited,
    predict_paths,
    predictor_options,
)
from ..manifests.depth import KINDS, Depth
from ..models import LoadedModel, PreprocessConfig
from ..runner.sinks import save_image_atomic, write_bytes_atomic
from .base import Batch, Predictor
from .resizing import FittedToRecipe
from .spec import TaskImplementation

PNG_MAX = 65535
MILLIMETRE = 1e-3  # metres per PNG step of a metric map, as NYUv2's 16-bit depth files


class DepthPredictor(FittedToRecipe, Predictor[Depth]):
    """Runs a depth model with the preprocessing of its weights (a transformers folder's
    processor, a card's recipe), or, for a module that brings none, 384 x 384 fitted to the
    image's aspect ratio in multiples of 32, ImageNet mean and std."""

    task = "depth"
    shrinks_images = True

    def __init__(self, model: LoadedModel, *, depth_kind: str | None = None, **kwargs: Any):
        super().__init__(model, **kwargs)
        kind = depth_kind or model_depth_kind(model) or "relative"
        if kind not in KINDS:
            raise OptionError(f"depth_kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.depth_kind = kind
        if model.preprocess.crop_size is not None:
            raise TorchinferError(f"{model.name}: a depth model's recipe crops, so its map would "
                                  "not cover the image; give a recipe without a crop")
        self.fit_to_recipe(model.preprocess)

    def reads_every_pixel(self) -> bool:
        return not self.model.preprocess.resize_size  # GLPN's own size, floored

    def model_outputs(self, raw: Any) -> Any:
        """Per image, its map (h, w) at the model's output resolution."""
        return depth_maps(raw)

    def postprocess(self, raw: list[torch.Tensor], batch: Batch) -> list[Depth]:
        results = []
        for depth, source, g in zip(raw, batch.sources, batch.meta):
            full = F.interpolate(depth.float()[None, None], size=g.original, mode="bicubic",
                                 align_corners=False)[0, 0]
            results.append(Depth(source=source, depth=full.cpu().numpy().astype(np.float32),
                                 kind=self.depth_kind))
        return results

    def failed(self, source: str, reason: str) -> Depth:
        return Depth(source=source, error=reason)


def depth_maps(raw: Any) -> torch.Tensor:
    """The model's output as (N, h, w): (N, 1, h, w) and (N, h, w) are read, a dict's
    ``predicted_depth`` or a tuple's first element."""
    if isinstance(raw, Mapping):
        raw = raw.get("predicted_depth", next(iter(raw.values()), None))
    elif isinstance(raw, (tuple, list)):
        raw = raw[0]
    if not isinstance(raw, torch.Tensor):
        raise TorchinferError(f"the depth model returned {type(raw).__name__}; expected a tensor")
    if raw.ndim == 4 and raw.shape[1] == 1:
        return raw[:, 0]
    if raw.ndim == 3:
        return raw
    raise TorchinferError(f"the depth model's output has shape {tuple(raw.shape)}; expected "
                          "(N, 1, H, W) or (N, H, W)")


def read_depth_head(head: Any, output: torch.Tensor, sources: Sequence[str],
                    letterboxes: Sequence[Any], input_size: tuple[int, int]) -> list[Depth]:
    """A multi-head model's depth head: each image's map brought to the letterboxed input's
    size, its part of the input cut out and resized to the image (bicubic, as the
    single-task predictor resizes)."""
    kind = head.option("depth_kind") or "relative"
    results = []
    for source, depth, lb in zip(sources, depth_maps(output), letterboxes):
        (oh, ow), (left, top) = lb.original, lb.pad
        nh, nw = max(1, round(oh * lb.scale)), max(1, round(ow * lb.scale))  # as letterbox()
        full = F.interpolate(depth.float()[None, None], size=input_size, mode="bicubic",
                             align_corners=False)
        part = full[:, :, top:top + nh, left:left + nw]
        if (nh, nw) != (oh, ow):
            part = F.interpolate(part, size=(oh, ow), mode="bicubic", align_corners=False)
        results.append(Depth(source=source, depth=part[0, 0].cpu().numpy().astype(np.float32),
                             kind=kind))
    return results


def model_depth_kind(model: LoadedModel) -> str | None:
    """What the model says it predicts: its module's ``depth_kind`` attribute, or a
    transformers config's ``depth_estimation_type``; a config without one that bounds the
    output by ``max_depth`` (GLPN's sigmoid times it) is metric."""
    config = getattr(getattr(model.module, "model", None), "config", None)
    for kind in (getattr(model.module, "depth_kind", None),
                 getattr(config, "depth_estimation_type", None)):
        if kind in KINDS:
            return kind
    if getattr(config, "max_depth", None) is not None:
        return "metric"
    return None


# --- what predict writes ------------------------------------------------------------------------

def png_encoding(result: Depth) -> tuple[float, float]:
    """(scale, offset) of the 16-bit PNG: depth = value * scale + offset. A metric map is in
    millimetres where it fits (NYUv2's convention); otherwise the range spans the 16 bits."""
    s = result.stats()
    low, high = s["min"], s["max"]
    if not np.isfinite(low):
        return 1.0, 0.0
    if result.kind == "metric" and low >= 0 and high <= PNG_MAX * MILLIMETRE:
        return MILLIMETRE, 0.0
    return (high - low) / PNG_MAX if high > low else 1.0, low


def write_depth(result: Depth, out: Path, name: str, options: Mapping[str, Any]
                ) -> tuple[dict[str, str], dict[str, Any]]:
    """``maps/<name>.png`` (16-bit, with its scale and offset for the record) or ``.npy``."""
    form = options.get("depth_format") or "png"
    if form == "none" or result.depth is None:
        return {}, {}
    if form == "npy":
        buffer = io.BytesIO()
        np.save(buffer, result.depth)
        path = write_bytes_atomic(out / "maps" / f"{name}.npy", buffer.getvalue())
        return {"depth": str(path)}, {}
    scale, offset = png_encoding(result)
    values = np.nan_to_num((result.depth - offset) / scale, nan=0.0, posinf=PNG_MAX, neginf=0.0)
    image = Image.fromarray(np.clip(np.round(values), 0, PNG_MAX).astype(np.uint16))
    path = save_image_atomic(image, out / "maps" / f"{name}.png")
    return {"depth": str(path)}, {"depth_png": {"scale": scale, "offset": offset}}


# --- drawing --------------------------------------------------------------------------------

def turbo(values: np.ndarray) -> np.ndarray:
    """Google's Turbo colour map (its published polynomial fit) of values in [0, 1] -> uint8 RGB."""
    x = np.clip(values, 0.0, 1.0)[..., None] ** np.arange(6)
    r = x @ np.array([0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943])
    g = x @ np.array([0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604])
    b = x @ np.array([0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973])
    return (np.clip(np.stack([r, g, b], -1), 0, 1) * 255).astype(np.uint8)


def draw_depth(image: Image.Image, result: Depth) -> Image.Image:
    """The map in Turbo colours (blue lowest, red highest), at the image's size."""
    assert result.depth is not None
    s = result.stats()
    span = s["max"] - s["min"]
    normalised = (result.depth - s["min"]) / span if span > 0 else np.zeros_like(result.depth)
    return Image.fromarray(turbo(np.nan_to_num(normalised)))


def describe(result: Depth) -> tuple[str, ...]:
    s = result.stats()
    return (f"{s['min']:.3g}", f"{s['median']:.3g}", f"{s['max']:.3g}",
            f"{result.size[1]}x{result.size[0]}")


# --- evaluation -------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MIN_DEPTH = 1e-3  # metres: what NYUv2's evaluations count as no depth


@dataclass(frozen=True)
class DepthDataset:
    """Pairs of (image, ground-truth depth file) under ``root``: rgb/<name>.* and
    depth/<name>.png (16-bit millimetres) or depth/<name>.npy (metres)."""

    root: Path
    samples: tuple[tuple[Path, Path], ...]

    @property
    def paths(self) -> list[str]:
        return [str(image) for image, _ in self.samples]


def read_depth_data(data: Any, **_: Any) -> DepthDataset:
    """The NYUv2 layout at ``data``; a DatasetError names what is missing."""
    if isinstance(data, DepthDataset):
        return data
    if data is None:
        raise DatasetError("eval depth needs --data: a folder with rgb/ and depth/")
    root = Path(data)
    rgb, depth = root / "rgb", root / "depth"
    for folder in (rgb, depth):
        if not folder.is_dir():
            raise DatasetError(f"{folder} is not a folder: the depth layout is rgb/<name>.jpg "
                               "and depth/<name>.png (16-bit mm) or .npy (metres)")
    truths = {p.stem: p for p in sorted(depth.iterdir()) if p.suffix.lower() in (".png", ".npy")}
    samples = []
    for image in sorted(rgb.iterdir()):
        if image.suffix.lower() in IMAGE_SUFFIXES:
            if image.stem not in truths:
                raise DatasetError(f"{image} has no depth/{image.stem}.png or .npy")
            samples.append((image, truths[image.stem]))
    if not samples:
        raise DatasetError(f"{rgb} holds no .jpg or .png image")
    return DepthDataset(root, tuple(samples))


def read_depth_truth(path: Path) -> np.ndarray:
    """(H, W) float64 metres; 0 where there is no depth. PNGs must be 16-bit millimetres."""
    if path.suffix.lower() == ".npy":
        try:
            depth = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"not a NumPy array file ({exc})") from None
        if depth.ndim == 3 and depth.shape[-1] == 1:
            depth = depth[..., 0]
        if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.number):
            raise ValueError(f"expected an (H, W) array of metres, got {depth.dtype} {depth.shape}")
        return np.nan_to_num(depth.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    with Image.open(path) as img:
        if img.mode not in ("I;16", "I;16B", "I"):
            raise ValueError(f"expected a 16-bit PNG of millimetres, got mode {img.mode}")
        return np.asarray(img, dtype=np.float64) / 1000.0


def aligned(pred: np.ndarray, truth: np.ndarray, how: str) -> np.ndarray:
    """``pred`` with the scale and shift that fit it best to ``truth`` by least squares: on
    depth ("depth"), or on inverse depth ("disparity": the fit is done on 1/truth, and the
    result inverted back); "none" leaves it."""
    if how == "none":
        return pred
    target = truth if how == "depth" else 1.0 / truth
    a = np.stack([pred, np.ones_like(pred)], axis=1)
    (scale, shift), *_ = np.linalg.lstsq(a, target, rcond=None)
    fitted = scale * pred + shift
    return fitted if how == "depth" else 1.0 / np.maximum(fitted, 1e-8)


def depth_errors(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """The standard errors of one image's valid pixels (both arrays 1-D, metres)."""
    ratio = np.maximum(pred / truth, truth / pred)
    return {"abs_rel": float(np.mean(np.abs(pred - truth) / truth)),
            "rmse": float(np.sqrt(np.mean((pred - truth) ** 2))),
            "delta1": float(np.mean(ratio < 1.25)), "delta2": float(np.mean(ratio < 1.25 ** 2)),
            "delta3": float(np.mean(ratio < 1.25 ** 3))}


METRICS = ("abs_rel", "rmse", "delta1", "delta2", "delta3")


@dataclass(kw_only=True)
class DepthReport(EvalReport):
    """The mean over images of each image's errors on its pixels with depth in
    (``MIN_DEPTH``, max_depth], predictions clipped to that range, after ``alignment``."""

    task: ClassVar[str] = "depth"

    metrics: dict[str, float | None] = field(default_factory=dict)
    alignment: str = "none"
    max_depth: float = 10.0
    pixels: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**self._common(),
                "metrics": {**{k: None if v is None else round(v, 6)
                               for k, v in self.metrics.items()},
                            "averaged": "per image, then over images", "pixels": self.pixels,
                            "depth_range_m": [MIN_DEPTH, self.max_depth],
                            "alignment": self.alignment},
                **self._tail()}

    def summary(self) -> list[tuple[str, str]]:
        m = self.metrics

        def num(key: str, pct: bool = False) -> str:
            v = m.get(key)
            return "-" if v is None else f"{100 * v:.2f}" if pct else f"{v:.4f}"

        return [("AbsRel", num("abs_rel")), ("RMSE (m)", num("rmse")),
                ("δ<1.25 (%)", num("delta1", True)), ("δ<1.25² (%)", num("delta2", True)),
                ("δ<1.25³ (%)", num("delta3", True)), ("alignment", self.alignment),
                ("pixels scored", f"{self.pixels:,}")]

    def headline(self) -> tuple[str, float | None]:
        d1 = self.metrics.get("delta1")
        return (f"AbsRel {self.metrics.get('abs_rel') or float('nan'):.3f}, δ<1.25 "
                f"{'-' if d1 is None else f'{100 * d1:.1f}%'}"), d1

    def per_class(self) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        return (), []


ALIGNMENTS = {"depth": "scale and shift fitted to the ground truth by least squares, per image",
              "disparity": "scale and shift fitted to the inverse ground truth by least "
                           "squares, per image",
              "none": "none"}


def evaluate_depth(predictor: Any, data: Any, *, max_depth: float = 10.0, align: str = "auto",
                   limit: int | None = None, batch_size: int | None = None,
                   progress: Any = None) -> DepthReport:
    """AbsRel, RMSE and δ<1.25^k of ``predictor`` on NYUv2's layout (``read_depth_data``),
    per image then averaged over images. Relative models are aligned by least squares first
    (``align``: auto is depth for them, none for metric ones), as the literature scores them."""
    start = time.perf_counter()
    dataset = read_depth_data(data)
    samples = limited(dataset.samples, limit)
    how = align if align != "auto" else \
        ("depth" if getattr(predictor, "depth_kind", "relative") == "relative" else "none")
    if how not in ALIGNMENTS:
        raise OptionError(f"align must be auto, none, depth or disparity, got {align!r}")
    per_image: list[dict[str, float]] = []
    failures: list[dict[str, str]] = []
    pixels = 0
    for i, result in predict_paths(predictor, [str(s[0]) for s in samples],
                                   batch_size=batch_size, progress=progress):
        if not isinstance(result, Depth) or result.depth is None:
            failures.append(failure_record(result))
            continue
        truth_path = samples[i][1]
        try:
            truth = read_depth_truth(truth_path)
        except (OSError, ValueError) as exc:
            failures.append({"source": result.source, "error": f"{truth_path}: {exc}"})
            continue
        if truth.shape != result.depth.shape:
            failures.append({"source": result.source, "error": f"{truth_path} is "
                             f"{truth.shape[1]}x{truth.shape[0]} but the image is "
                             f"{result.depth.shape[1]}x{result.depth.shape[0]}"})
            continue
        valid = (truth > MIN_DEPTH) & (truth <= max_depth) & np.isfinite(result.depth)
        if not valid.any():
            failures.append({"source": result.source, "error": f"{truth_path}: no pixel "
                             f"with depth in ({MIN_DEPTH}, {max_depth}] m"})
            continue
        pred = aligned(result.depth[valid].astype(np.float64), truth[valid], how)
        per_image.append(depth_errors(np.clip(pred, MIN_DEPTH, max_depth), truth[valid]))
        pixels += int(valid.sum())
    metrics = {k: float(np.mean([e[k] for e in per_image])) if per_image else None
               for k in METRICS}
    return DepthReport(data=str(dataset.root), model=predictor.model.name,
                       weights=predictor.model.weights, images=len(samples), failures=failures,
                       seconds=time.perf_counter() - start,
                       options={**predictor_options(predictor), "max_depth": max_depth},
                       metrics=metrics, alignment=ALIGNMENTS[how], max_depth=max_depth,
                       pixels=pixels)


TASK = TaskImplementation(
    result=Depth, predictors=(DepthPredictor,),
    # a module that brings no recipe: DPT's 384, the aspect ratio kept, multiples of 32
    preprocess=PreprocessConfig(resize_size=(384, 384), crop_size=None,
                                mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                                interpolation="bicubic", multiple_of=32, keep_aspect_ratio=True),
    output_name="depth", read_dataset=read_depth_data, evaluator=evaluate_depth, describe=describe,
    draw=draw_depth, write=write_depth, head_ranks=(3, 4), read_head=read_depth_head)
