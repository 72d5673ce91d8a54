"""Reading the three evaluation layouts: nothing here runs a model.

- classification: an ImageFolder, ``root/<class name>/*.jpg`` (sub-folders of a class folder
  belong to that class); classes are the sorted folder names;
- segmentation: the Pascal VOC layout, ``root/JPEGImages/<id>.jpg`` and
  ``root/SegmentationClass/<id>.png`` (class indices as a palette or grayscale PNG, 255 =
  ignore), optionally ``root/ImageSets/Segmentation/<split>.txt`` and ``root/labels.txt``;
- detection: a COCO annotations file (``images``, ``annotations``, ``categories``) and the
  folder its ``file_name`` entries are relative to.

Problems with the layout itself (a missing folder, a listed file that is not there, invalid
JSON) raise ``DatasetError`` naming the file; problems with one image found while evaluating
(an undecodable picture, a mask of the wrong size) are recorded per image instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TorchinferError
from ..runner.sources import IMAGE_EXTENSIONS, expand_sources

IGNORE_INDEX = 255  # VOC's "void" label: boundaries and difficult regions, not scored
ANNOTATIONS_FILE = "annotations.json"
IMAGES_DIR = "images"


class DatasetError(TorchinferError):
    """The evaluation data cannot be read: the message names the file and what is wrong."""


def normalise_name(name: str) -> str:
    """How class names are compared when they do not match exactly: case, surrounding
    spaces, and ``_``/``-`` versus space do not matter (``traffic_light`` = ``Traffic light``)."""
    return " ".join(name.replace("_", " ").replace("-", " ").split()).casefold()


def _missing(path: Path, what: str) -> DatasetError:
    return DatasetError(f"{path}: {what} not found")


# --- classification ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFolder:
    """``samples``: (image path, class name) in sorted order (class folders, then files)."""

    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[str, str], ...]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def paths(self) -> list[str]:
        """The image files, in evaluation order."""
        return [path for path, _ in self.samples]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(self.classes, 0)
        for _, name in self.samples:
            out[name] += 1
        return out


def read_image_folder(root: str | Path) -> ImageFolder:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (expected one sub-folder of images per class)")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DatasetError(f"{root}: no class folders (expected {root}/<class name>/<image>)")
    samples = tuple((path, name) for name in classes for path in expand_sources([root / name]))
    if not samples:
        raise DatasetError(f"{root}: no images in its {len(classes)} class folders "
                           f"(extensions: {', '.join(sorted(IMAGE_EXTENSIONS)[:6])}, ...)")
    return ImageFolder(root, tuple(classes), samples)


# --- segmentation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class VocSegmentation:
    """``samples``: (id, image path, mask path); ``labels``: from ``labels.txt`` if present."""

    root: Path
    samples: tuple[tuple[str, str, str], ...]
    labels: tuple[str, ...] | None = None
    split: str | None = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def paths(self) -> list[str]:
        """The image files, in evaluation order."""
        return [image for _, image, _ in self.samples]


def read_voc_segmentation(root: str | Path, split: str | None = None) -> VocSegmentation:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (expected the VOC layout: JPEGImages/, "
                           "SegmentationClass/)")
    images, masks = root / "JPEGImages", root / "SegmentationClass"
    for folder in (images, masks):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: folder not found (expected the VOC layout: "
                               f"{root}/JPEGImages/<id>.jpg, {root}/SegmentationClass/<id>.png)")
    if split is not None:
        list_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not list_file.is_file():
            raise _missing(list_file, f"split list for --split {split}")
        ids = [line.split()[0] for line in list_file.read_text(encoding="utf-8").splitlines()
               if line.strip() and not line.lstrip().startswith("#")]
    else:
        list_file = masks
        ids = sorted(p.stem for p in masks.iterdir() if p.suffix.lower() == ".png")
    if not ids:
        raise DatasetError(f"{list_file}: no samples listed")
    samples, missing = [], []
    for sample_id in ids:
        image = _find_image(images, sample_id)
        mask = masks / f"{sample_id}.png"
        if image is None:
            missing.append(str(images / f"{sample_id}.jpg"))
        elif not mask.is_file():
            missing.append(str(mask))
        else:
            samples.append((sample_id, str(image), str(mask)))
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise DatasetError(f"{', '.join(missing[:3])}{more}: listed in {list_file} but not found")
    labels_file = root / "labels.txt"
    labels = None
    if labels_file.is_file():
        labels = tuple(line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines()
                       if line.strip())
    return VocSegmentation(root, tuple(samples), labels, split)


def _find_image(folder: Path, stem: str) -> Path | None:
    jpg = folder / f"{stem}.jpg"
    if jpg.is_file():
        return jpg
    for ext in sorted(IMAGE_EXTENSIONS):  # VOC uses .jpg; accept other formats by the same id
        candidate = folder / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


# --- detection --------------------------------------------------------------------------------


@dataclass
class CocoDataset:
    """A COCO annotations file, checked and completed: every annotation has a unique ``id``
    (renumbered from 1), ``iscrowd`` and ``area`` (what pycocotools needs). ``images``:
    (image id, path) in file order."""

    annotations_file: Path
    images_dir: Path
    dataset: dict[str, Any]
    images: list[tuple[Any, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def paths(self) -> list[str]:
        """The image files, in evaluation order."""
        return [path for _, path in self.images]

    @property
    def categories(self) -> list[dict[str, Any]]:
        return self.dataset["categories"]


def resolve_coco_paths(data: str | Path | None, annotations: str | Path | None = None,
                       images: str | Path | None = None) -> tuple[Path, Path]:
    """(annotations file, images folder) from ``data`` (a folder holding ``annotations.json``
    and ``images/``, or the annotations file itself) and/or explicit paths."""
    if data is not None:
        data = Path(data)
        if data.is_dir():
            annotations = annotations or data / ANNOTATIONS_FILE
            images = images or data / IMAGES_DIR
        elif data.is_file() or data.suffix.lower() == ".json":
            annotations = annotations or data
            images = images or data.parent / IMAGES_DIR
        else:
            raise DatasetError(f"{data}: not found (expected a folder holding {ANNOTATIONS_FILE} "
                               f"and {IMAGES_DIR}/, or a COCO annotations file)")
    if annotations is None or images is None:
        raise DatasetError("detection data: give --data (a folder with annotations.json and "
                           "images/) or both --annotations and --images")
    annotations, images = Path(annotations), Path(images)
    if not annotations.is_file():
        raise _missing(annotations, "COCO annotations file")
    if not images.is_dir():
        raise _missing(images, "images folder")
    return annotations, images



def _unique_ids(path: Path, entries: list[Any], key: str, what: str, field: str) -> set[Any]:
    """The ids of a COCO list (``images``, ``categories``), each entry checked for an ``id``
    and ``field``, no id twice."""
    ids: set[Any] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry or field not in entry:
            raise DatasetError(f"{path}: {key}[{i}] needs an 'id' and a {field!r}")
        if entry["id"] in ids:
            raise DatasetError(f"{path}: {what} id {entry['id']} appears twice")
        ids.add(entry["id"])
    return ids

def read_coco(annotations: str | Path, images: str | Path) -> CocoDataset:
    path, images_dir = Path(annotations), Path(images)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _missing(path, "COCO annotations file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a COCO object with images, annotations, categories")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{path}: no {key!r} list (not a COCO annotations file?)")
    anns = data.get("annotations") or []
    if not isinstance(anns, list):
        raise DatasetError(f"{path}: 'annotations' must be a list")

    image_ids = _unique_ids(path, data["images"], "images", "image", "file_name")
    listed = [(img["id"], str(images_dir / img["file_name"])) for img in data["images"]]
    category_ids = _unique_ids(path, data["categories"], "categories", "category", "name")
    if not category_ids:
        raise DatasetError(f"{path}: no categories")

    completed = []
    for i, ann in enumerate(anns):
        where = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict):
            raise DatasetError(f"{where} is not an object")
        if ann.get("image_id") not in image_ids:
            raise DatasetError(f"{where} refers to image id {ann.get('image_id')!r}, which is not "
                               "in 'images'")
        if ann.get("category_id") not in category_ids:
            raise DatasetError(f"{where} refers to category id {ann.get('category_id')!r}, which "
                               "is not in 'categories'")
        bbox = ann.get("bbox")
        if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) for v in bbox)
                or bbox[2] < 0 or bbox[3] < 0):
            raise DatasetError(f"{where}: bbox must be [x, y, width, height] with width, "
                               f"height >= 0, got {bbox!r}")
        # numbered 1..n: pycocotools keys annotations by id and reads a matched id of 0 as
        # "unmatched", so missing, repeated or zero ids would silently change the scores
        ann = {**ann, "id": i + 1}
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(bbox[2]) * float(bbox[3]))
        completed.append(ann)
    dataset = {**data, "annotations": completed}
    return CocoDataset(path, images_dir, dataset, listed)
