"""Train the bundled shapes models on freshly generated data, and evaluate them.

Every image comes from ``torchinfer.datasets.shapes`` and a seed, so a run is reproducible
from this command alone: nothing is downloaded. Each model is saved as fp16 safetensors with
its labels, preprocessing, architecture and provenance in the header, which is all
``torchinfer.load`` needs.

    python scripts/train_shapes.py                         # all six, into src/torchinfer/assets
    python scripts/train_shapes.py --task detect --out weights/
    python scripts/train_shapes.py --evaluate-only         # the bundled files on unseen seeds

Evaluation writes 500 images per task with a seed no training run uses (the writers' own
files: PNG for classification and depth, JPEG for segmentation and detection), runs them
through torchinfer's predictors and prints top-1, mIoU (background included), COCO box mAP
(pycocotools, conf 0.001), for depth, ``torchinfer eval depth``'s AbsRel, RMSE and δ, and for
the embedding, how it separates planted copies from other scenes
(``datasets.shapes_duplicates``).

The embedding (``--task embed``, ``shapes_embed``) is the classifier's network with a 64-wide
output, trained with NT-Xent (SimCLR's loss): two random copies of each scene (cut by up to
10 %, lowered in resolution, re-encoded) must be each other's nearest in the batch.

The depth model (``--task depth``, ``shapes_depth``) is the segmenter's U-Net with one output,
exp of which is the depth in metres, trained with L1 on log depth on
``torchinfer.datasets.shapes_depth`` scenes (shapes at known distances before a slanted, tiled
background, in haze).

The multi-task model (``--task multi``, ``shapes_multitask``) learns all three from one scene:
the dominant shape class, the semantic mask and the boxes. Its scenes, for training and for
evaluation alike, are the ``generate_scene`` scenes whose largest visible class area (summed
over the shapes of that class) is at least ``DOMINANCE`` times the next class's, so that the
dominant class is well defined; the scene indices are tried in order and the rejected ones
skipped, so the same seed always gives the same scenes. It trains in two stages, both run by
``--task multi``. The first starts from the segmenter (the file in ``--out``, else the bundled
one): its encoder, kept frozen, and the first two stages of its decoder, which the mask and
the boxes share and which train with the heads (and the mask's narrower stride-4 stage) on
the sum of the three losses, on letterboxed scenes (the segmenter only saw square ones). Its
shape head (``ShapesMultitask.shape_logits``: the mask's areas, each pixel's split between the
classes corrected by a small learnt head on the deep maps) stays frozen at zero there, so the
shape loss reads the mask's areas alone. ``--joint`` trains the encoder too (it scored lower
in the recipe's three epochs). The second stage (``--head shape``, job ``multi:shape``, data
seed --seed + 6) trains the shape head alone, from scratch, on the multi-task file the first
saved (the file in ``--out``, else the bundled one), everything else frozen and saved as it
was: 4000 images, classification pictures as ``write_classification`` draws them (128 px,
resized as the multi-head predictor resizes them) and dominant-shape scenes in turn, so that
it names the shape of one large shape as well as the dominant class of a scene. The bundled
file is the first stage of an earlier run of ``--task multi`` (seed 0), then its second
stage, run on the CPU (two threads) by

    python scripts/train_shapes.py --task multi --head shape

Evaluation scores each head on 500 square JPEG scenes, saved as the writers save theirs,
through torchinfer's multi-head predictor, and the shape head also on 500 classification
pictures (``top1_pictures``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from torchvision.ops import box_iou, generalized_box_iou_loss

import torchinfer
from torchinfer.assets import assets_dir
from torchinfer.datasets import shapes as ds
from torchinfer.datasets.shapes_depth import generate_depth_scene, write_depth_scenes
from torchinfer.datasets.shapes_duplicates import view, write_duplicates
from torchinfer.models import ModelCard, PreprocessConfig, load_model
from torchinfer.models import shapes as arch
from torchinfer.tasks.yolo import letterbox

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("classify", "segment", "detect", "multi", "depth", "embed")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EVAL_SEED = 20_240_601  # never a training seed: training uses --seed + 0 to 6 (JOBS)
# multi-task scenes: the largest visible class area is at least this times the next one
DOMINANCE = 1.5
MULTI_HEADS = (
    {"name": "shape", "task": "classify", "output": "shape", "labels": list(ds.CLASSES)},
    {"name": "mask", "task": "segment", "output": "mask", "labels": ["background", *ds.CLASSES]},
    {"name": "objects", "task": "detect", "output": "objects", "labels": list(ds.CLASSES),
     "options": {"decoder": "yolov8"}},
)
IGNORE = 255  # segmentation label of the letterbox padding: no loss is computed there
EMBED_DIM = 64
EMBED_SCENE = 160  # the embedding's training scenes, cut and resized to 128 by each view
TEMPERATURE = 0.1  # of the contrastive loss (NT-Xent)


@dataclass(frozen=True)
class Recipe:
    factory: str  # name in torchinfer.models.shapes
    num_classes: int
    size: int  # training image side = model input side
    n: int  # training images, generated once
    epochs: int
    batch: int
    lr: float
    preprocess: PreprocessConfig
    init: str | None = None  # bundled model whose matching weights start the training
    frozen: tuple[str, ...] = ()  # submodules kept as they start (not trained)
    fresh: tuple[str, ...] = ()  # submodules that keep their own initialisation, not init's

    @property
    def file(self) -> str:
        return f"{self.factory}.safetensors"


RECIPES = {
    "classify": Recipe("shapes_classifier", len(ds.CLASSES), 128, 6000, 5, 64, 3e-3,
                       PreprocessConfig((128,), (128, 128), IMAGENET_MEAN, IMAGENET_STD)),
    "segment": Recipe("shapes_segmenter", len(ds.CLASSES) + 1, 256, 2400, 10, 16, 3e-3,
                      PreprocessConfig((256,), None, IMAGENET_MEAN, IMAGENET_STD)),
    "detect": Recipe("shapes_detector", len(ds.CLASSES), 256, 4000, 10, 32, 3e-3,
                     PreprocessConfig((256, 256), None, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))),
    "multi": Recipe("shapes_multitask", len(ds.CLASSES), 256, 2400, 3, 16, 3e-3,
                    PreprocessConfig((256, 256), None, IMAGENET_MEAN, IMAGENET_STD),
                    init="shapes_segmenter", frozen=("encoder", "shape_head")),
    "depth": Recipe("shapes_depth", 1, 256, 2400, 12, 16, 3e-3,
                    PreprocessConfig((256,), None, IMAGENET_MEAN, IMAGENET_STD)),
    # num_classes: the vector's size; n: distinct scenes, each seen as two random copies a step
    "embed": Recipe("shapes_embed", EMBED_DIM, 128, 6000, 16, 128, 3e-3,
                    PreprocessConfig((128,), (128, 128), IMAGENET_MEAN, IMAGENET_STD)),
}


# The multi-task model's second stage, one head trained alone on the file the first stage
# saved: n counts the classification pictures and the dominant-shape scenes together
HEAD_RECIPES = {
    "shape": replace(RECIPES["multi"], n=4000, epochs=4, batch=32, init="shapes_multitask",
                     frozen=("encoder", "decoder", "head", "tower", "cls", "box"),
                     fresh=("shape_head",)),
}
# what train() runs: a task, or "multi:<head>" (that head alone); each has its own data seed,
# --seed plus its index here
JOBS = (*TASKS, *(f"multi:{head}" for head in HEAD_RECIPES))


# --------------------------------------------------------------------------- data
# Module-level functions of (seed, index): they run in worker processes, and each training
# image depends only on its pair, whatever the number of workers.


def _classify_item(job: tuple[int, int, int]) -> tuple[np.ndarray, int]:
    seed, i, size = job
    class_id = i % len(ds.CLASSES)
    scene = ds.generate_single(ds.scene_rng(seed, i), size, class_id=class_id)
    return np.asarray(scene.image), class_id


def _jpeg(image: Image.Image, seed: int, i: int) -> Image.Image:
    """A JPEG round trip at a random quality, as the writers' files (quality 90) are read."""
    quality = int(np.random.default_rng([seed, i, 1]).integers(60, 96))
    return ds.jpeg_roundtrip(image, quality)


def _segment_item(job: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    seed, i, size = job
    scene = ds.generate_scene(ds.scene_rng(seed, i), size)
    return np.asarray(_jpeg(scene.image, seed, i)), scene.label_map()


def _scene_shape(seed: int, i: int, size: int) -> tuple[int, int]:
    """(h, w) of training scene ``i``: a third are not square, so the padding torchinfer's
    letterbox adds to real photographs is seen in training."""
    extra = np.random.default_rng([seed, i, 2])
    hw = [size, size]
    if extra.random() < 1 / 3:
        hw[int(extra.integers(2))] = int(extra.integers(size * 5 // 8, size))
    return hw[0], hw[1]


def _detect_item(job: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image letterboxed to ``size`` and its per-cell targets."""
    seed, i, size = job
    scene = ds.generate_scene(ds.scene_rng(seed, i), _scene_shape(seed, i, size))
    return _letterboxed_targets(scene, seed, i, size)[:3]


def _letterboxed_targets(scene: ds.Scene, seed: int, i: int, size: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """The scene letterboxed to ``size``, its detection targets, and the (left, top) pad."""
    hw = scene.image.height, scene.image.width
    canvas, lb = letterbox(_jpeg(scene.image, seed, i), (size, size))
    left, top = lb.pad
    owner = np.full((size, size), -1, dtype=np.int16)
    boxes, classes = [], []
    for k, inst in enumerate(scene.instances):
        owner[top:top + hw[0], left:left + hw[1]][inst.mask] = k
        x0, y0, x1, y1 = inst.bbox
        boxes.append((x0 + left, y0 + top, x1 + left, y1 + top))
        classes.append(inst.class_id)
    cls_t, box_t = detection_targets(owner, np.array(boxes, dtype=np.float32).reshape(-1, 4),
                                     classes, size)
    return canvas, cls_t, box_t, (left, top)


def dominant_class(scene: ds.Scene, ratio: float = DOMINANCE) -> int | None:
    """The class with the largest visible area (summed over its shapes), or None when the
    next class covers more than 1/``ratio`` of it (or there is no shape)."""
    areas = np.zeros(len(ds.CLASSES), dtype=np.int64)
    for inst in scene.instances:
        areas[inst.class_id] += inst.area
    first, second = np.sort(areas)[::-1][:2]
    return int(areas.argmax()) if first > 0 and first >= ratio * second else None


def _multi_item(job: tuple[int, int, int]) -> tuple[np.ndarray, ...] | None:
    """One scene's image letterboxed to ``size`` and all three labels: the dominant class,
    the label map (the padding marked IGNORE), the detection targets; None when the scene
    has no dominant class (the index is skipped)."""
    seed, i, size = job
    scene = ds.generate_scene(ds.scene_rng(seed, i), _scene_shape(seed, i, size))
    dominant = dominant_class(scene)
    if dominant is None:
        return None
    canvas, cls_t, box_t, (left, top) = _letterboxed_targets(scene, seed, i, size)
    h, w = scene.image.height, scene.image.width
    labels = np.full((size, size), IGNORE, dtype=np.uint8)
    labels[top:top + h, left:left + w] = scene.label_map()
    return canvas, np.int64(dominant), labels, cls_t, box_t


def _shape_item(job: tuple[int, int, int]) -> tuple[np.ndarray, np.int64] | None:
    """For the multi-task model's shape head, its input letterboxed to ``size`` and the class
    it must name. Even indices: a classification picture as ``write_classification`` draws it
    (128 px, classes in turn), resized as torchinfer's multi-head predictor resizes it;
    odd ones: a scene as ``_multi_item`` makes it, and its dominant class (None without one:
    the index is skipped)."""
    seed, i, size = job
    if i % 2 == 0:
        class_id = (i // 2) % len(ds.CLASSES)
        single = ds.generate_single(ds.scene_rng(seed, i), RECIPES["classify"].size,
                                    class_id=class_id)
        return letterbox(single.image, (size, size))[0], np.int64(class_id)
    scene = ds.generate_scene(ds.scene_rng(seed, i), _scene_shape(seed, i, size))
    dominant = dominant_class(scene)
    if dominant is None:
        return None
    return letterbox(_jpeg(scene.image, seed, i), (size, size))[0], np.int64(dominant)


def detection_targets(owner: np.ndarray, boxes: np.ndarray, classes: list[int], size: int,
                      stride: int = arch.ShapesDetector.stride,
                      radius: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """Per cell of the stride grid: the class it must find (-1 none) and that shape's box.

    A cell is positive for a shape when its centre lies on the shape's visible pixels and
    within ``radius`` cells of its box centre (FCOS centre sampling, with the mask deciding
    between overlapping shapes); a shape too small to hold a cell centre gets the cell of its
    visible pixel nearest the box centre.
    """
    g = size // stride
    centres = (np.arange(g) + 0.5) * stride
    cell_owner = owner[stride // 2::stride, stride // 2::stride]
    cls_t = np.full((g, g), -1, dtype=np.int64)
    box_t = np.zeros((g, g, 4), dtype=np.float32)
    for k, (box, c) in enumerate(zip(boxes, classes)):
        bcx, bcy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        near_x = np.abs(centres - bcx) <= radius * stride
        near_y = np.abs(centres - bcy) <= radius * stride
        pos = (cell_owner == k) & near_y[:, None] & near_x[None, :]
        if not pos.any():
            ys, xs = np.nonzero(owner == k)
            if len(ys) == 0:
                continue
            j = int(np.argmin((xs + 0.5 - bcx) ** 2 + (ys + 0.5 - bcy) ** 2))
            r, q = ys[j] // stride, xs[j] // stride
            if cls_t[r, q] >= 0:
                continue
            pos[r, q] = True
        cls_t[pos] = c
        box_t[pos] = box
    return cls_t, box_t


def _depth_item(job: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    seed, i, size = job
    scene = generate_depth_scene(ds.scene_rng(seed, i), size)
    return np.asarray(_jpeg(scene.image, seed, i)), scene.depth


def _embed_item(job: tuple[int, int, int]) -> tuple[np.ndarray]:
    seed, i, _ = job
    return (np.asarray(ds.generate_scene(ds.scene_rng(seed, i), EMBED_SCENE).image),)


ITEMS: dict[str, Callable] = {"classify": _classify_item, "segment": _segment_item,
                              "detect": _detect_item, "multi": _multi_item,
                              "depth": _depth_item, "embed": _embed_item,
                              "multi:shape": _shape_item}


def generate(job: str, seed: int, n: int, size: int, workers: int) -> list[torch.Tensor]:
    """The first ``n`` items of ``job``'s dataset ``seed``: indices 0, 1, 2... in order,
    skipping those whose item is None (a scene the job rejects)."""
    item, items, start = ITEMS[job], [], 0
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(get_context("fork").Pool(workers)) if workers > 1 else None
        while len(items) < n:
            jobs = [(seed, i, size) for i in range(start, start + n - len(items))]
            made = pool.map(item, jobs, chunksize=32) if pool else list(map(item, jobs))
            items += [x for x in made if x is not None]
            start += len(jobs)
    return [torch.from_numpy(np.stack(column)) for column in zip(*items)]


# --------------------------------------------------------------------------- training


def dihedral(x: torch.Tensor, flips: tuple[bool, bool, bool]) -> torch.Tensor:
    """Flip (..., H, W) vertically, horizontally, then transpose: the 8 symmetries of a square,
    none of which changes what a shape is."""
    fy, fx, tr = flips
    if fy:
        x = x.flip(-2)
    if fx:
        x = x.flip(-1)
    return x.transpose(-1, -2) if tr else x


def dihedral_boxes(boxes: torch.Tensor, flips: tuple[bool, bool, bool], size: int) -> torch.Tensor:
    """The same symmetry applied to (..., 4) xyxy boxes in a ``size`` square."""
    fy, fx, tr = flips
    x0, y0, x1, y1 = boxes.unbind(-1)
    if fy:
        y0, y1 = size - y1, size - y0
    if fx:
        x0, x1 = size - x1, size - x0
    if tr:
        x0, y0, x1, y1 = y0, x0, y1, x1
    return torch.stack([x0, y0, x1, y1], dim=-1)


class EMA:
    """Exponential moving average of the weights (and a copy of the BatchNorm statistics)."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.998):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.model.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(d).add_(p.detach(), alpha=1 - d)
            else:
                e.copy_(p)


def inputs(images: torch.Tensor, flips: tuple[bool, bool, bool],
           cfg: PreprocessConfig) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> the symmetry -> normalised float (B, 3, H, W) as torchinfer feeds
    it. Made channels_last afterwards: a transposed batch would otherwise reach the
    convolutions with strides that send them down a path many times slower on the CPU."""
    x = dihedral(images.permute(0, 3, 1, 2), flips).float().div_(255.0)
    mean = torch.tensor(cfg.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def classify_loss(model, batch, flips, cfg):
    images, labels = batch
    x = inputs(images, flips, cfg)
    return F.cross_entropy(model(x), labels, label_smoothing=0.05)


DICE_WEIGHT = 0.5  # segmentation: cross-entropy + this x (1 - mean soft Dice over classes)


def segment_loss(model, batch, flips, cfg):
    """Per-pixel cross-entropy at the label resolution (the logits upsampled as torchinfer does
    before its argmax), plus soft Dice, which weighs every class alike whatever its area: the
    background covers most pixels, but mIoU counts it once."""
    images, labels = batch
    x = inputs(images, flips, cfg)
    return segment_terms(model(x), dihedral(labels.long(), flips))


def segment_terms(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """segment_loss on the model's logits and (B, H, W) labels; pixels labelled IGNORE (the
    letterbox padding) count in neither term."""
    logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
    loss = F.cross_entropy(logits, y, ignore_index=IGNORE)
    if DICE_WEIGHT:
        valid = (y != IGNORE).unsqueeze(1)
        p = logits.softmax(1) * valid
        onehot = F.one_hot(y.masked_fill(~valid[:, 0], 0), p.shape[1]).permute(0, 3, 1, 2)
        onehot = onehot.to(p.dtype) * valid
        inter = (p * onehot).sum((0, 2, 3))
        dice = (2 * inter + 1) / (p.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1)
        loss = loss + DICE_WEIGHT * (1 - dice.mean())
    return loss


def detect_loss(model, batch, flips, cfg):
    """Quality focal loss on the class scores (a positive's target is the IoU of its predicted
    box, so the score ranks boxes by how well they fit), GIoU + L1 on the positives' boxes."""
    images, cls_t, box_t = batch
    x = inputs(images, flips, cfg)
    logits, dist = model.raw(x)
    return detect_terms(model, logits, dist, cls_t, box_t, flips, images.shape[1])


def detect_terms(model, logits: torch.Tensor, dist: torch.Tensor, cls_t: torch.Tensor,
                 box_t: torch.Tensor, flips: tuple[bool, bool, bool], size: int) -> torch.Tensor:
    """detect_loss on the model's raw class logits and side distances; the targets are
    the untransformed ones, given the symmetry here."""
    cls_t = dihedral(cls_t, flips).flatten(1)  # (B, N)
    box_t = dihedral_boxes(dihedral(box_t.permute(0, 3, 1, 2), flips).permute(0, 2, 3, 1),
                           flips, size).flatten(1, 2)  # (B, N, 4)
    b, c, h, w = logits.shape
    logits = logits.flatten(2).transpose(1, 2)  # (B, N, C)
    dist = dist.flatten(2).transpose(1, 2)  # (B, N, 4)
    centres = model.centres(h, w, logits.device).T  # (N, 2)
    pos = cls_t >= 0
    n_pos = max(int(pos.sum()), 1)
    ctr = centres.expand(b, -1, -1)[pos]
    d = dist[pos]
    pred = torch.cat([ctr - d[:, :2], ctr + d[:, 2:]], dim=1)
    target = box_t[pos]
    iou = box_iou(pred.detach(), target).diagonal().clamp(min=0.0)
    score_t = torch.zeros_like(logits)
    score_t[pos, cls_t[pos]] = iou
    p = logits.sigmoid()
    qfl = F.binary_cross_entropy_with_logits(logits, score_t, reduction="none")
    loss_cls = (qfl * (p - score_t).abs().pow(2)).sum() / n_pos
    loss_giou = generalized_box_iou_loss(pred, target, reduction="sum") / n_pos
    target_d = torch.cat([ctr - target[:, :2], target[:, 2:] - ctr], dim=1)
    loss_l1 = F.smooth_l1_loss(d / model.stride, target_d / model.stride, reduction="sum") / n_pos
    return loss_cls + 2.0 * loss_giou + 0.25 * loss_l1


# multi-task: each head's single-task loss, weighted. The mask counts twice: the detection
# loss sums three terms of its own and draws the decoder they share its way. In trials of
# the previous network (its mask corrected at stride 2), equal weights for 5 epochs reached
# mIoU 0.885 (mAP@.5 0.949), the mask at 2 for 3 epochs 0.899 (mAP@.5 0.943); this one, the
# mask at 2 for 3 epochs, 0.892 (mAP@.5 0.944)
MULTI_WEIGHTS = {"shape": 1.0, "mask": 2.0, "objects": 1.0}


def multi_loss(model, batch, flips, cfg):
    """One pass of the encoder and decoder, the three single-task losses on its heads."""
    images, dominant, labels, cls_t, box_t = batch
    feats = model.encoder(inputs(images, flips, cfg))
    maps = model.decoder_maps(feats)
    logits, distances = model.object_maps(maps)
    loss = MULTI_WEIGHTS["objects"] * detect_terms(model, logits, distances, cls_t, box_t,
                                                   flips, images.shape[1])
    mask = model.mask_logits(maps)
    loss = loss + MULTI_WEIGHTS["mask"] * segment_terms(mask, dihedral(labels.long(), flips))
    shape = model.shape_logits(feats, maps, mask)
    return loss + MULTI_WEIGHTS["shape"] * F.cross_entropy(shape, dominant, label_smoothing=0.05)


def shape_head_loss(model, batch, flips, cfg):
    """The shape head alone: its cross-entropy, through the frozen encoder, decoder and mask
    (the boxes' tower is not run)."""
    images, classes = batch
    feats = model.encoder(inputs(images, flips, cfg))
    maps = model.decoder_maps(feats)
    shape = model.shape_logits(feats, maps, model.mask_logits(maps))
    return F.cross_entropy(shape, classes, label_smoothing=0.05)


def depth_loss(model, batch, flips, cfg):
    """L1 on log depth at the label resolution (the map upsampled as torchinfer does): the
    relative error, alike near and far."""
    images, depth = batch
    x = inputs(images, flips, cfg)
    pred = F.interpolate(model(x), size=depth.shape[-2:], mode="bicubic", align_corners=False)
    truth = dihedral(depth[:, None], flips)
    return (pred.clamp_min(1e-3).log() - truth.log()).abs().mean()


_VIEWS = np.random.default_rng(0)  # the random copies' draws, one stream per training run


def embed_loss(model, batch, flips, cfg):
    """NT-Xent (SimCLR's loss): two random copies of each scene (``shapes_duplicates.view``:
    cut, lowered in resolution, re-encoded) must be each other's nearest among the batch's
    2B vectors, by cosine similarity over ``TEMPERATURE``."""
    (images,) = batch
    scenes = [Image.fromarray(a) for a in images.cpu().numpy()]
    views = [torch.from_numpy(np.stack([np.asarray(view(s, _VIEWS, 128)) for s in scenes]))
             for _ in range(2)]
    z = F.normalize(model(inputs(torch.cat(views).to(images.device), flips, cfg)), dim=1)
    n = len(scenes)
    sims = z @ z.T / TEMPERATURE
    sims.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sims, targets)


LOSSES: dict[str, Callable] = {"classify": classify_loss, "segment": segment_loss,
                               "detect": detect_loss, "multi": multi_loss, "depth": depth_loss,
                               "embed": embed_loss, "multi:shape": shape_head_loss}


def start_file(name: str, out: Path) -> Path:
    """The file of the model ``name`` a run starts from: its file in ``out`` if there is one
    (as when this run just trained it), else the bundled one."""
    path = out / f"{name}.safetensors"
    return path if path.is_file() else assets_dir() / path.name


def initial_weights(model: torch.nn.Module, path: Path, log: Callable[[str], None],
                    fresh: tuple[str, ...] = ()) -> None:
    """Copy the weights in ``path`` into ``model`` wherever name and shape match, except in
    the submodules ``fresh`` (the multi-task model starts from the segmenter's encoder and
    decoder; its shape head from the multi-task file, all but the head itself). Read without
    strict keys: a file saved before a submodule existed leaves it as it was built."""
    loaded = load_model(path, strict=False).module
    own = model.state_dict()
    same = {k: v.float() for k, v in loaded.state_dict().items()
            if k in own and own[k].shape == v.shape
            and not any(k.startswith(f"{name}.") for name in fresh)}
    model.load_state_dict(same, strict=False)
    log(f"started {len(same)} of {len(own)} tensors from {path}")


def card_extra(path: Path) -> dict[str, str]:
    """The provenance entries (``extra``) of the card in the safetensors file ``path``."""
    with safe_open(str(path), "pt") as f:
        return dict(ModelCard.from_safetensors_metadata(f.metadata(), str(path)).extra)


def train(job: str, recipe: Recipe, seed: int, device: torch.device, workers: int,
          epochs: int, n: int, log: Callable[[str], None],
          out: Path = ROOT / "src" / "torchinfer" / "assets") -> tuple[torch.nn.Module, dict]:
    """Train ``job`` (a task, or ``multi:<head>``) by ``recipe``; the model (its EMA) and
    ``info``: seconds, and the card of the file it started from (``start_card``), if any."""
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    data = generate(job, seed + JOBS.index(job), n, recipe.size, workers)
    t_data = time.perf_counter() - t0
    log(f"[{job}] generated {n} images in {t_data:.0f} s")
    data = [t.to(device) for t in data]
    model = getattr(arch, recipe.factory)(num_classes=recipe.num_classes).to(device)
    info: dict = {"start_card": {}}
    if recipe.init:
        path = start_file(recipe.init, out)
        initial_weights(model, path, log, recipe.fresh)
        info["start_card"] = card_extra(path)
    model = fit(job, recipe, model, data, seed, epochs, log, t0)
    info.update(seconds=time.perf_counter() - t0, data_seconds=t_data)
    return model.cpu().to(memory_format=torch.contiguous_format), info


def fit(job: str, recipe: Recipe, model: torch.nn.Module, data: list[torch.Tensor], seed: int,
        epochs: int, log: Callable[[str], None], t0: float) -> torch.nn.Module:
    """Train ``model`` (all but the recipe's frozen parts) on ``data``; its EMA."""
    n = len(data[0])
    model.requires_grad_(True)
    frozen = [getattr(model, name).requires_grad_(False) for name in recipe.frozen]
    if frozen:
        log(f"[{job}] {', '.join(recipe.frozen)} frozen")
    model = model.to(memory_format=torch.channels_last)
    steps_per_epoch = n // recipe.batch
    total = steps_per_epoch * epochs
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=recipe.lr,
                            weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=total,
                                                pct_start=0.15)
    ema = EMA(model)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = LOSSES[job]
    step, running = 0, 0.0
    for epoch in range(epochs):
        model.train()
        for module in frozen:  # BatchNorm keeps the statistics it came with
            module.eval()
        order = torch.randperm(n, generator=gen)
        for s in range(steps_per_epoch):
            idx = order[s * recipe.batch:(s + 1) * recipe.batch].to(data[0].device)
            flips = tuple(bool(v) for v in torch.randint(0, 2, (3,), generator=gen))
            loss = loss_fn(model, [t[idx] for t in data], flips, recipe.preprocess)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            ema.update(model)
            running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
            step += 1
            if step % 50 == 0:
                log(f"[{job}] step {step}/{total} loss {running:.4f} "
                    f"({time.perf_counter() - t0:.0f} s)")
        log(f"[{job}] epoch {epoch + 1}/{epochs} loss {running:.4f} "
            f"({time.perf_counter() - t0:.0f} s)")
    for name in recipe.frozen:  # as they started, to the bit (not averaged with themselves)
        getattr(ema.model, name).load_state_dict(getattr(model, name).state_dict())
    return ema.model


def save(model: torch.nn.Module, job: str, recipe: Recipe, path: Path, *, seed: int,
         epochs: int, n: int, start_card: dict[str, str] | None = None) -> None:
    """``model`` as fp16 safetensors with its card. For a head trained alone (``multi:<head>``)
    the card's provenance is that run's, and the first stage's is kept from ``start_card``
    (the file it started from) as ``trunk_*`` entries."""
    task = job.split(":")[0]
    labels = list(ds.CLASSES) if task != "segment" else ["background", *ds.CLASSES]
    if task == "depth":
        labels = ["depth"]  # one output: metres
    if task == "embed":
        labels = [f"d{i}" for i in range(recipe.num_classes)]  # the vector's components
    extra = {"initialised_from": recipe.init} if recipe.init else {}
    if recipe.frozen:
        extra["frozen"] = ", ".join(recipe.frozen)
    if ":" in job:
        extra["trained_alone"] = job.split(":")[1]
        start = start_card or {}
        # the start file's own trunk entries when it came from a head's run too
        trunk = {k: v for k, v in start.items() if k.startswith("trunk_")}
        extra.update(trunk or {f"trunk_{k}": v for k, v in start.items() if k != "trained_by"})
    what = " (classification pictures and dominant-shape scenes)" if job == "multi:shape" else ""
    card = ModelCard(
        architecture=f"torchinfer.models.shapes:{recipe.factory}",
        model_kwargs={"num_classes": recipe.num_classes}, task=task,
        labels=tuple(labels) if task != "multi" else None,
        heads=MULTI_HEADS if task == "multi" else None,
        preprocess=recipe.preprocess,
        versions={"torch": torch.__version__, "torchinfer": torchinfer.__version__},
        extra={"trained_by": "scripts/train_shapes.py",
               "dataset": f"torchinfer.datasets.shapes, seed {seed + JOBS.index(job)}, "
                          f"{n} images of {recipe.size} px{what}",
               "seed": str(seed), "epochs": str(epochs), "dataset_size": str(n), **extra})
    tensors = {k: (v.half() if v.dtype.is_floating_point else v).contiguous()
               for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=card.to_safetensors_metadata())
    path.chmod(0o644)  # safetensors writes 0600; package data must be readable by all


# --------------------------------------------------------------------------- evaluation


def _load(task: str, weights: Path, **options):
    recipe = RECIPES[task]
    return torchinfer.load(task, f"torchinfer.models.shapes:{recipe.factory}", weights,
                           **options)


def evaluate_classify(weights: Path, root: Path, n: int, seed: int) -> dict[str, float]:
    ds.write_classification(root, n, seed)
    paths = sorted(root.glob("*/*.png"))
    clf = _load("classify", weights, batch_size=50)
    correct = sum(r.top1.label == Path(r.source).parent.name for r in clf(paths))
    return {"top1": correct / len(paths)}


def evaluate_segment(weights: Path, root: Path, n: int, seed: int) -> dict[str, float]:
    ds.write_segmentation(root, n, seed)
    seg = _load("segment", weights, batch_size=25)
    k = RECIPES["segment"].num_classes
    confusion = np.zeros((k, k), dtype=np.int64)
    paths = sorted((root / "JPEGImages").glob("*.jpg"))
    for r in seg(paths):
        truth = np.asarray(Image.open(root / "SegmentationClass" / (Path(r.source).stem + ".png")))
        confusion += np.bincount(truth.ravel().astype(np.int64) * k + r.mask.ravel(),
                                 minlength=k * k).reshape(k, k)
    iou = np.diag(confusion) / (confusion.sum(0) + confusion.sum(1) - np.diag(confusion))
    out = {"mIoU": float(iou.mean()), "pixel_acc": float(np.diag(confusion).sum() / confusion.sum())}
    out.update({f"IoU_{name}": float(v) for name, v in zip(["background", *ds.CLASSES], iou)})
    return out


def evaluate_detect(weights: Path, root: Path, n: int, seed: int, *, conf: float = 0.001,
                    iou: float = 0.6) -> dict[str, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ds.write_detection(root, n, seed)
    det = _load("detect", weights, conf=conf, iou=iou, max_det=100, batch_size=25)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(root / "annotations.json"))
    ids = {img["file_name"]: img["id"] for img in gt.dataset["images"]}
    paths = [root / "images" / name for name in sorted(ids)]
    categories = {k: k + 1 for k in range(len(ds.CLASSES))}
    records = []
    for r in det(paths):
        records += r.to_coco(ids[Path(r.source).name], categories)
    with contextlib.redirect_stdout(io.StringIO()):
        result = gt.loadRes(records)
        ev = COCOeval(gt, result, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"mAP50": float(ev.stats[1]), "mAP50_95": float(ev.stats[0]),
            "AR100": float(ev.stats[8])}


def write_multitask(root: Path, n: int, seed: int, *, size: int = 256) -> dict:
    """The first ``n`` scenes of dataset ``seed`` that have a dominant class (DOMINANCE),
    as the writers save them (``images/<index>.jpg``, quality JPEG_QUALITY), with their three
    truths: ``dominant`` class ids, ``labels`` (label maps) and ``coco`` (a COCO dataset)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations, dominant, labels = [], [], [], []
    i = 0
    while len(images) < n:
        scene = ds.generate_scene(ds.scene_rng(seed, i), size)
        cls = dominant_class(scene)
        if cls is not None:
            name = f"{i:05d}.jpg"
            scene.image.save(root / "images" / name, quality=ds.JPEG_QUALITY)
            images.append({"id": len(images) + 1, "file_name": name, "width": size,
                           "height": size})
            annotations += ds.coco_annotations(scene, len(images), len(annotations) + 1)
            dominant.append(cls)
            labels.append(scene.label_map())
        i += 1
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": name} for k, name in enumerate(ds.CLASSES)]}
    return {"dominant": dominant, "labels": labels, "coco": coco}


def evaluate_multi(weights: Path, root: Path, n: int, seed: int, *, conf: float = 0.001,
                   iou: float = 0.6) -> dict[str, float]:
    """Each head of torchinfer's multi-head predictor scored as its single-task model is:
    top-1 of the dominant class, mIoU (background included), COCO box mAP (conf 0.001); and
    the shape head's top-1 on ``n`` classification pictures too (``top1_pictures``: PNG files
    of ``write_classification``, the classifier's evaluation data)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth = write_multitask(root, n, seed)
    coco = truth["coco"]
    paths = [root / "images" / img["file_name"] for img in coco["images"]]
    multi = torchinfer.load("multi", weights, batch_size=25,
                            head_options={"objects": {"conf": conf, "iou": iou, "max_det": 100}})
    results = list(multi(paths))
    heads = {h["name"]: [r.heads[h["name"]] for r in results] for h in MULTI_HEADS}
    top1 = np.mean([r.top1.label == ds.CLASSES[c]
                    for r, c in zip(heads["shape"], truth["dominant"])])
    k = len(ds.CLASSES) + 1
    confusion = np.zeros((k, k), dtype=np.int64)
    for r, labels in zip(heads["mask"], truth["labels"]):
        confusion += np.bincount(labels.ravel().astype(np.int64) * k + r.mask.ravel(),
                                 minlength=k * k).reshape(k, k)
    ious = np.diag(confusion) / (confusion.sum(0) + confusion.sum(1) - np.diag(confusion))
    categories = {c: c + 1 for c in range(len(ds.CLASSES))}
    records = []
    for img, r in zip(coco["images"], heads["objects"]):
        records += r.to_coco(img["id"], categories)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = coco
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(records), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    pictures = sorted(ds.write_classification(root / "pictures", n, seed).glob("*/*.png"))
    top1_pictures = np.mean([r.heads["shape"].top1.label == Path(r.source).parent.name
                             for r in multi(pictures)])
    return {"top1": float(top1), "top1_pictures": float(top1_pictures),
            "mIoU": float(ious.mean()), "mAP50": float(ev.stats[1]),
            "mAP50_95": float(ev.stats[0]), "file_MB": weights.stat().st_size / 1e6}


def evaluate_depth(weights: Path, root: Path, n: int, seed: int) -> dict[str, float]:
    """torchinfer's own ``eval depth`` on unseen depth scenes (metric: no alignment)."""
    write_depth_scenes(root, n, seed)
    recipe = RECIPES["depth"]
    report = torchinfer.evaluate("depth", f"torchinfer.models.shapes:{recipe.factory}", root,
                                 weights, batch_size=25)
    return {k: float(v) for k, v in report.metrics.items() if v is not None}


def evaluate_embed(weights: Path, root: Path, n: int, seed: int) -> dict[str, float]:
    """Unseen scenes with 50 planted three times over (``shapes_duplicates``): how similar
    the least similar planted pair is, how similar the most similar pair of different scenes
    is, and at the default threshold of ``torchinfer duplicates`` the planted pairs found and
    the other pairs reported."""
    from torchinfer.retrieval import DEFAULT_THRESHOLD

    write_duplicates(root, n, seed, planted=50)
    planted = {tuple(sorted(p)) for p in json.loads((root / "planted.json").read_text())["pairs"]}
    paths = sorted(p for p in root.iterdir() if p.suffix in (".png", ".jpg"))
    vectors = np.stack([r.vector for r in _load("embed", weights, batch_size=50)(paths)])
    sims = vectors @ vectors.T
    names = [p.name for p in paths]
    same, other = [], []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            (same if (names[a], names[b]) in planted else other).append(sims[a, b])
    same_a, other_a = np.array(same), np.array(other)
    return {"planted_min": float(same_a.min()), "distinct_max": float(other_a.max()),
            "planted_found": float((same_a >= DEFAULT_THRESHOLD).mean()),
            "false_pairs": float((other_a >= DEFAULT_THRESHOLD).sum())}


EVALUATORS = {"classify": evaluate_classify, "segment": evaluate_segment,
              "detect": evaluate_detect, "multi": evaluate_multi, "depth": evaluate_depth,
              "embed": evaluate_embed}


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=("all", *TASKS), default="all")
    parser.add_argument("--out", type=Path, default=ROOT / "src" / "torchinfer" / "assets",
                        help="folder for the .safetensors files")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed (data seeds: seed + 0..5 per task, + 6 for the "
                             "multi-task model's shape head)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 8),
                        help="processes generating the training images")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override the recipe's (each stage's, for multi)")
    parser.add_argument("--n", type=int, default=None, help="training images (override)")
    parser.add_argument("--joint", action="store_true",
                        help="multi: train the segmenter's encoder too (the recipe keeps it "
                             "frozen: 1.5x cheaper a step, and in three epochs the mask "
                             "scored lower with it trained)")
    parser.add_argument("--head", choices=tuple(HEAD_RECIPES),
                        help="multi: only the second stage, this head trained alone on the "
                             "multi-task file in --out (else the bundled one), all else in "
                             "it kept as it is")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="evaluate the files in --out, train nothing")
    parser.add_argument("--no-evaluate", action="store_true", help="train only")
    parser.add_argument("--eval-n", type=int, default=500)
    parser.add_argument("--eval-seed", type=int, default=EVAL_SEED)
    args = parser.parse_args(argv)
    if args.eval_seed in range(args.seed, args.seed + len(JOBS)):
        parser.error(f"--eval-seed {args.eval_seed} is one of the training data seeds")
    if args.head and (args.task != "multi" or args.joint):
        parser.error("--head: with --task multi, without --joint (the rest stays frozen)")
    tasks = TASKS if args.task == "all" else (args.task,)
    # the multi-task model in two stages: all but the shape head, then the shape head alone
    jobs = ((f"multi:{args.head}",) if args.head else
            tuple(j for t in tasks for j in (t, *(f"multi:{h}" for h in HEAD_RECIPES
                                                 if t == "multi"))))
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)

    def log(msg: str) -> None:
        print(msg, flush=True)

    if not args.evaluate_only:
        log(f"training {', '.join(jobs)} on {device} ({torch.get_num_threads()} threads)")
        for job in jobs:
            recipe = RECIPES[job] if job in RECIPES else HEAD_RECIPES[job.split(":")[1]]
            if args.joint and job == "multi":
                recipe = replace(recipe, frozen=tuple(f for f in recipe.frozen if f != "encoder"))
            epochs, n = args.epochs or recipe.epochs, args.n or recipe.n
            model, info = train(job, recipe, args.seed, device, args.workers, epochs, n, log,
                                args.out)
            path = args.out / recipe.file
            save(model, job, recipe, path, seed=args.seed, epochs=epochs, n=n,
                 start_card=info["start_card"])
            params = sum(p.numel() for p in model.parameters())
            log(f"[{job}] {params:,} parameters, {info['seconds']:.0f} s; saved {path} "
                f"({path.stat().st_size / 1e6:.2f} MB)")
    if args.no_evaluate:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for task in tasks:
            t0 = time.perf_counter()
            metrics = EVALUATORS[task](args.out / RECIPES[task].file, Path(tmp) / task,
                                       args.eval_n, args.eval_seed)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            log(f"[{task}] eval on {args.eval_n} images, seed {args.eval_seed}: {shown} "
                f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
