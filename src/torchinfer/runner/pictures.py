"""What a run writes for a result beyond its record: the picture (``vis/``), masks
(``masks/``), the task's own files (a depth map in ``maps/``), and annotated videos."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ..draw import instance_mask_image, mask_image, visualise
from ..results import Detections, MultiTask, Result, Segmentation
from .images import ImageLoader
from .inputs import Source
from .sinks import save_image_atomic
from .video import AnnotatedVideo

# (result, output folder, the input's file stem) -> (files written {kind: path}, what the record
# says of them beyond their paths)
Writer = Callable[[Result, Path, str], tuple[Mapping[str, str], Mapping[str, Any]]]
Drawing = Callable[[Image.Image, Result], Image.Image]
# (output folder) -> the files made {kind: path}, once every record is written
Finisher = Callable[[Path], Mapping[str, str]]


@dataclass(frozen=True)
class Outputs:
    """vis: the result drawn on its image (``draw``, default ``draw.visualise``); masks:
    segmentation class maps and instance masks as PNGs; write: the task's own files for a
    result; files: the names of the task's files in the output folder beyond every run's
    (``--exist-ok`` replaces them); finish: what the task makes of them once the run is
    complete (``Finisher``)."""

    vis: bool = False
    masks: bool = False
    draw: Drawing | None = None
    write: Writer | None = None
    files: tuple[str, ...] = ()
    finish: Finisher | None = None

    @property
    def wanted(self) -> bool:
        return self.vis or self.masks or self.write is not None

    def drawn(self, image: Image.Image, result: Result) -> Image.Image:
        return self.draw(image, result) if self.draw is not None else visualise(result, image)


def save_outputs(loader: ImageLoader, source: Source, result: Result, out: Path, name: str,
                 outputs: Outputs) -> tuple[dict[str, str], dict[str, Any]]:
    """The files of ``result`` (successful) and the record's fields about them."""
    files: dict[str, str] = {}
    fields: dict[str, Any] = {}
    masks = outputs.masks
    if isinstance(result, MultiTask):  # each head's mask beside the others: <name>.<head>.png
        for head_name, head in result.heads.items():
            if masks:
                own, _ = save_outputs(loader, source, head, out, f"{name}.{head_name}",
                                      Outputs(masks=True))
                files.update({f"{head_name}.{k}": v for k, v in own.items()})
        masks = False  # the picture, below, draws every head on one image
    if masks and isinstance(result, Segmentation):
        files["mask"] = str(save_image_atomic(mask_image(result), out / "masks" / f"{name}.png"))
    if masks and isinstance(result, Detections) and result.masks is not None:
        files["mask"] = str(save_image_atomic(instance_mask_image(result),
                                              out / "masks" / f"{name}.png"))
    if outputs.write is not None:
        written, said = outputs.write(result, out, name)
        files.update(written)
        fields.update(said)
    # in-memory inputs and video frames have no image file to redraw
    if outputs.vis and source.is_file:
        image = loader.load(source.item, source.name)
        files["vis"] = str(save_image_atomic(outputs.drawn(image, result),
                                             out / "vis" / f"{name}.jpg", quality=90))
    return files, fields


class VideoPictures:
    """With --save-vis, the annotated frames of each input video become ``vis/<name>.mp4``
    (one open writer at a time: results come in input order, video after video)."""

    def __init__(self, out: Path, stride: int, draw: Drawing | None = None):
        self.out, self.stride = out, stride
        self.visualise: Callable[[Result, Image.Image], Image.Image] = (
            visualise if draw is None else (lambda result, image: draw(image, result)))
        self.current: AnnotatedVideo | None = None

    def add(self, source: Source, result: Result, names: Callable[[str], str]) -> dict[str, str]:
        path, index = source.path, source.frame
        assert path is not None and index is not None  # a frame knows its video and place
        if self.current is None or self.current.source != path:
            self.close()
            self.current = AnnotatedVideo(path, self.out / "vis" / f"{names(path)}.mp4",
                                          self.stride)
        self.current.add(index, result, self.visualise)
        return {"vis": str(self.current.out)}

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None

    def abandon(self) -> None:
        if self.current is not None:
            self.current.abandon()
            self.current = None
