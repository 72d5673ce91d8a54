"""One dataset reader per task, all called alike, so that a task's spec can hold its reader.

``read(data, split=..., annotations=..., images=...)`` takes what the command line gives (each
task reads the arguments of its layout) and returns the dataset its evaluator scores. Reading
comes before the model is built: a wrong path fails in a moment.
"""

from __future__ import annotations

from pathlib import Path

from .datasets import (
    CocoDataset,
    DatasetError,
    ImageFolder,
    VocSegmentation,
    read_coco,
    read_image_folder,
    read_voc_segmentation,
    resolve_coco_paths,
)

PathArg = str | Path | None


def _folder(data: PathArg, task: str) -> str | Path:
    if data is None:
        raise DatasetError(f"evaluate {task}: give the dataset folder (data=...)")
    return data


def read_classification_data(data: PathArg, *, split: str | None = None,
                             annotations: PathArg = None, images: PathArg = None) -> ImageFolder:
    """An ImageFolder, ``data/<class name>/<images>``."""
    return read_image_folder(_folder(data, "classify"))


def read_segmentation_data(data: PathArg, *, split: str | None = None,
                           annotations: PathArg = None,
                           images: PathArg = None) -> VocSegmentation:
    """A VOC-layout folder; ``split`` names a list in ``ImageSets/Segmentation``."""
    return read_voc_segmentation(_folder(data, "segment"), split)


def read_detection_data(data: PathArg, *, split: str | None = None, annotations: PathArg = None,
                        images: PathArg = None) -> CocoDataset:
    """COCO: ``data`` holding ``annotations.json`` and ``images/`` (or the annotations file),
    or ``annotations`` + ``images``."""
    return read_coco(*resolve_coco_paths(data, annotations, images))
