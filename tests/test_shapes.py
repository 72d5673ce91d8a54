"""The procedural shapes dataset and the models trained on it that ship with torchinfer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import torchinfer
from torchinfer.datasets import shapes as ds
from torchinfer.models.config import PreprocessConfig

ASSETS = Path(torchinfer.__file__).parent / "assets"
BUNDLED = {"classify": "shapes_classifier", "segment": "shapes_segmenter",
           "detect": "shapes_detector"}
SEED = 4242  # no training run uses it (scripts/train_shapes.py trains on seeds 0, 1, 2)


def _erode(mask: np.ndarray) -> np.ndarray:
    """Pixels whose four neighbours are in the mask too."""
    m = np.pad(mask, 1)
    return mask & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]


def _dilate(mask: np.ndarray) -> np.ndarray:
    m = np.pad(mask, 1)
    return mask | m[:-2, 1:-1] | m[2:, 1:-1] | m[1:-1, :-2] | m[1:-1, 2:]


# --------------------------------------------------------------------------- generator


def test_same_seed_same_scene_and_each_picture_its_own():
    a = ds.generate_scene(ds.scene_rng(7, 3), 128)
    b = ds.generate_scene(ds.scene_rng(7, 3), 128)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert [i.class_id for i in a.instances] == [i.class_id for i in b.instances]
    assert all(np.array_equal(i.mask, j.mask) for i, j in zip(a.instances, b.instances))
    c = ds.generate_scene(ds.scene_rng(7, 4), 128)
    d = ds.generate_scene(ds.scene_rng(8, 3), 128)
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))
    assert not np.array_equal(np.asarray(a.image), np.asarray(d.image))


def test_coverage_is_the_area_of_each_pixel_inside():
    square = np.array([[2, 3], [6, 3], [6, 8], [2, 8]], dtype=float)  # x 2..6, y 3..8
    cov = ds.coverage(square, 10, 10)
    expected = np.zeros((10, 10), np.float32)
    expected[3:8, 2:6] = 1
    assert np.array_equal(cov, expected)
    half = ds.coverage(square + [0.5, 0], 10, 10)  # x 2.5..6.5: half of columns 2 and 6
    # PIL also fills the sub-pixels an edge passes through: at most one more sub-pixel (1/4)
    for col in (2, 6):
        assert np.all((half[3:8, col] >= 0.5) & (half[3:8, col] <= 0.75))
    assert np.allclose(half[3:8, 3:6], 1) and half[:3].sum() == 0 and half[8:].sum() == 0


def test_masks_agree_with_the_drawn_pixels():
    for index in range(6):
        scene = ds.generate_scene(ds.scene_rng(11, index), 160, max_shapes=6)
        pixels = np.asarray(scene.image).astype(np.int16)
        labels = scene.label_map()
        claimed = np.zeros(labels.shape, dtype=np.int32)
        for inst in scene.instances:
            claimed += inst.mask
            assert np.all(labels[inst.mask] == inst.class_id + 1)
            inner = _erode(_erode(inst.mask))
            # the fill is the colour plus a shading of at most +-21 and noise of sigma <= 10
            diff = np.abs(pixels[inner] - np.array(inst.colour)).max(axis=1)
            assert np.mean(diff <= 55) > 0.99, (index, inst.label)
            ring = _dilate(_dilate(_dilate(inst.mask))) & ~_dilate(inst.mask)  # just outside
            outside = np.abs(pixels[ring] - np.array(inst.colour)).max(axis=1)
            assert np.median(outside) > np.median(diff) + 20, (index, inst.label)
            assert inst.visible_fraction >= ds.MIN_VISIBLE
        assert claimed.max() <= 1  # one shape per pixel
        assert np.array_equal(claimed > 0, labels > 0)


def test_single_shape_scenes_are_centred_and_whole():
    for class_id in range(len(ds.CLASSES)):
        scene = ds.generate_single(ds.scene_rng(3, class_id), 96, class_id=class_id)
        (inst,) = scene.instances
        x0, y0, x1, y1 = inst.bbox
        assert inst.class_id == class_id and x0 > 0 and y0 > 0 and x1 < 96 and y1 < 96
        assert inst.area > 0.04 * 96 * 96


# --------------------------------------------------------------------------- writers


def test_detection_writer_coco_layout_and_boxes_of_visible_masks(tmp_path):
    pytest.importorskip("pycocotools")
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    root = ds.write_detection(tmp_path / "det", 6, seed=5, size=160)
    coco = COCO(str(root / "annotations.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(ds.CLASSES)
    assert coco.getCatIds() == [1, 2, 3, 4]
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        with Image.open(root / "images" / info["file_name"]) as img:
            assert img.format == "JPEG" and img.size == (info["width"], info["height"])
        scene = ds.generate_scene(ds.scene_rng(5, image_id - 1), 160)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert len(anns) == len(scene.instances)  # none is mostly hidden (MIN_VISIBLE)
        for ann, inst in zip(anns, scene.instances):
            mask = mask_utils.decode(ann["segmentation"]).astype(bool)
            assert np.array_equal(mask, inst.mask)
            rows, cols = np.nonzero(mask)
            x, y = cols.min(), rows.min()
            assert ann["bbox"] == [x, y, cols.max() + 1 - x, rows.max() + 1 - y]
            assert ann["area"] == mask.sum() and ann["iscrowd"] == 0
            assert ann["category_id"] == inst.class_id + 1


def test_mostly_hidden_shapes_are_left_out_of_coco():
    scene = ds.generate_scene(ds.scene_rng(5, 0), 128)
    inst = scene.instances[0]
    hidden = ds.Instance(inst.class_id, inst.polygon, inst.colour, inst.mask.copy(),
                         drawn_area=inst.area * 3)  # a third visible
    records = ds.coco_annotations(ds.Scene(scene.image, [hidden, *scene.instances[1:]]), 1, 1)
    assert len(records) == len(scene.instances) - 1
    assert [r["id"] for r in records] == list(range(1, len(records) + 1))


def test_segmentation_writer_voc_layout(tmp_path):
    root = ds.write_segmentation(tmp_path / "seg", 4, seed=9, size=128)
    assert (root / "labels.txt").read_text().split() == ["background", *ds.CLASSES]
    ids = (root / "ImageSets" / "Segmentation" / "all.txt").read_text().split()
    assert ids == ["00000", "00001", "00002", "00003"]
    for i, image_id in enumerate(ids):
        with Image.open(root / "SegmentationClass" / f"{image_id}.png") as label:
            assert label.mode == "P"
            values = np.asarray(label)
        scene = ds.generate_scene(ds.scene_rng(9, i), 128)
        assert np.array_equal(values, scene.label_map())
        with Image.open(root / "JPEGImages" / f"{image_id}.jpg") as img:
            assert img.format == "JPEG" and img.size == (128, 128)


def test_classification_writer_imagefolder_layout_via_cli(tmp_path):
    ds.main(["--task", "classify", "--n", "8", "--seed", "1", "--out", str(tmp_path / "clf"),
             "--size", "64"])
    root = tmp_path / "clf"
    for k, name in enumerate(ds.CLASSES):  # classes in turn: 2 images each
        files = sorted(p.name for p in (root / name).glob("*.png"))
        assert files == [f"{k:05d}.png", f"{k + 4:05d}.png"]
    from torchvision.datasets import ImageFolder

    assert ImageFolder(str(root)).class_to_idx == {n: k for k, n in enumerate(ds.CLASSES)}


# --------------------------------------------------------------------------- bundled models


def test_bundled_weights_exist_small_and_describe_themselves():
    paths = {task: ASSETS / f"{name}.safetensors" for task, name in BUNDLED.items()}
    assert all(p.is_file() for p in paths.values()), sorted(ASSETS.glob("*"))
    assert sum(p.stat().st_size for p in paths.values()) <= 6_000_000
    for task, path in paths.items():
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            dtypes = {f.get_tensor(k).dtype for k in f.keys()}
        assert meta["task"] == task
        assert meta["architecture"] == f"torchinfer.models.shapes:{BUNDLED[task]}"
        labels = json.loads(meta["labels"])
        assert labels == (["background", *ds.CLASSES] if task == "segment" else list(ds.CLASSES))
        assert json.loads(meta["model_kwargs"]) == {"num_classes": len(labels)}
        cfg = PreprocessConfig(**{k: tuple(v) if isinstance(v, list) else v
                                  for k, v in json.loads(meta["preprocess"]).items()})
        assert (cfg.crop_size is None) == (task != "classify")
        assert meta["trained_by"] == "scripts/train_shapes.py"
        assert {"seed", "epochs", "dataset_size"} <= meta.keys()
        assert torch.float16 in dtypes and torch.float32 not in dtypes


def _load(task: str, **options):
    return torchinfer.load(task, f"torchinfer.models.shapes:{BUNDLED[task]}",
                           ASSETS / f"{BUNDLED[task]}.safetensors", device="cpu", **options)


def test_bundled_classifier_names_fresh_shapes(tmp_path):
    root = ds.write_classification(tmp_path / "clf", 12, seed=SEED)
    clf = _load("classify")
    assert clf.model.labels == list(ds.CLASSES)
    results = clf(sorted(root.glob("*/*.png")))
    correct = sum(r.top1.label == Path(r.source).parent.name for r in results)
    assert correct >= 11, [(Path(r.source).parent.name, r.top1.label) for r in results]


def test_bundled_segmenter_outlines_fresh_shapes(tmp_path):
    root = ds.write_segmentation(tmp_path / "seg", 4, seed=SEED)
    seg = _load("segment")
    for r in seg(sorted((root / "JPEGImages").glob("*.jpg"))):
        truth = np.asarray(Image.open(root / "SegmentationClass" / (Path(r.source).stem + ".png")))
        assert r.mask.shape == truth.shape
        for c in np.unique(truth):  # every class present, background included
            inter = np.sum((truth == c) & (r.mask == c))
            union = np.sum((truth == c) | (r.mask == c))
            assert inter / union > 0.8, (r.source, seg.model.labels[c], inter / union)


def test_bundled_detector_finds_fresh_shapes(tmp_path):
    from torchvision.ops import box_iou

    det = _load("detect")
    assert det.input_size == (256, 256)
    for index in range(4):
        scene = ds.generate_scene(ds.scene_rng(SEED, index), 256)
        path = tmp_path / f"{index}.jpg"
        scene.image.save(path, quality=ds.JPEG_QUALITY)
        found = det(path)
        truth = torch.tensor([inst.bbox for inst in scene.instances], dtype=torch.float32)
        iou = box_iou(truth, torch.from_numpy(found.boxes))
        for k, inst in enumerate(scene.instances):
            j = int(iou[k].argmax())
            assert iou[k, j] > 0.7 and found.labels[j] == inst.label, (index, inst.label)
        assert len(found) == len(scene.instances)  # nothing else above the default conf 0.25
