"""Drawing results onto images. Separate from the result types: results are data, this is a view."""

from __future__ import annotations

from functools import cache, singledispatch

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .results import Classification, Segmentation


@cache
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def annotate_classification(image: Image.Image, result: Classification, *, note: str | None = None,
                            max_rows: int = 3) -> Image.Image:
    """A copy of ``image`` with a banner listing the top classes and their scores.

    White text on a dark translucent band stays readable on any photograph.
    """
    img = image.convert("RGB")
    size = max(12, img.height // 28)
    font = _font(size)
    lines = ([f"{c.label}  {c.score:.1%}" for c in result.topk[:max_rows]] if result.ok
             else [f"failed: {result.error}"])
    if note:
        lines.append(note)
    pad = size // 3
    band_h = len(lines) * (size + pad) + pad
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.rectangle((0, 0, img.width, band_h), fill=(0, 0, 0, 150))
    for i, line in enumerate(lines):
        colour = (255, 210, 80, 255) if (note and i == len(lines) - 1) else (255, 255, 255, 255)
        draw.text((pad, pad + i * (size + pad)), line, font=font, fill=colour)
    return Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB")


def contact_sheet(images: list[Image.Image], *, columns: int = 4, cell: int = 320,
                  title: str | None = None) -> Image.Image:
    """Thumbnails side by side, for looking at a whole run in one picture, under a title."""
    rows = max(1, -(-len(images) // columns))
    top = 36 if title else 0
    sheet = Image.new("RGB", (columns * cell, rows * cell + top), (32, 32, 32))
    if title:
        ImageDraw.Draw(sheet).text((10, 8), title, font=_font(20), fill=(255, 210, 80))
    for i, img in enumerate(images):
        thumb = img.copy()
        thumb.thumbnail((cell - 8, cell - 8))
        x = (i % columns) * cell + (cell - thumb.width) // 2
        y = top + (i // columns) * cell + (cell - thumb.height) // 2
        sheet.paste(thumb, (x, y))
    return sheet


@cache
def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (n x 3 uint8): class i's colour spreads the bits of i over
    R, G and B, so neighbouring classes get very different colours. 0 (background) is black."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def mask_image(result: Segmentation) -> Image.Image:
    """The class map as a palette PNG: pixel values are class indices, shown in VOC colours."""
    if result.mask is None:
        raise ValueError(f"{result.source}: no mask ({result.error})")
    if result.mask.max(initial=0) > 255:
        return Image.fromarray(result.mask.astype(np.int32), mode="I")  # >256 classes: no palette
    img = Image.fromarray(result.mask.astype(np.uint8), mode="P")
    img.putpalette(voc_palette().ravel().tolist())
    return img


def overlay_segmentation(image: Image.Image, result: Segmentation, *, alpha: float = 0.5,
                         legend: bool = True) -> Image.Image:
    """``image`` with every non-background pixel tinted its class colour, and a legend of the
    classes present (largest first) with their share of the image."""
    if result.mask is None:
        raise ValueError(f"{result.source}: no mask ({result.error})")
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    colours = voc_palette(max(256, len(result.labels)))[result.mask].astype(np.float32)
    tint = (result.mask > 0)[..., None] * alpha  # class 0 is background: left untinted
    blended = np.rint(base * (1 - tint) + colours * tint).astype(np.uint8)
    out = Image.fromarray(blended)
    if legend:
        _draw_legend(out, [(a.label, f"{a.fraction:.1%}", tuple(int(v) for v in voc_palette()[a.index % 256]))
                           for a in result.areas[:12]])
    return out


def _draw_legend(img: Image.Image, rows: list[tuple[str, str, tuple[int, int, int]]]) -> None:
    size = max(11, min(img.height, img.width) // 32)
    font = _font(size)
    pad = size // 3
    width = max((int(font.getlength(f"{label}  {share}")) for label, share, _ in rows), default=0)
    box_w, box_h = width + size + 3 * pad, len(rows) * (size + pad) + pad
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.rectangle((0, 0, box_w, box_h), fill=(0, 0, 0, 160))
    for i, (label, share, colour) in enumerate(rows):
        y = pad + i * (size + pad)
        draw.rectangle((pad, y, pad + size, y + size), fill=(*colour, 255), outline=(255, 255, 255, 255))
        draw.text((2 * pad + size, y), f"{label}  {share}", font=font, fill=(255, 255, 255, 255))
    img.paste(Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB"))


@singledispatch
def visualise(result: object, image: Image.Image) -> Image.Image:
    """The picture of a result drawn on its image, whatever the task."""
    raise TypeError(f"no drawing for {type(result).__name__}")


@visualise.register
def _(result: Classification, image: Image.Image) -> Image.Image:
    return annotate_classification(image, result)


@visualise.register
def _(result: Segmentation, image: Image.Image) -> Image.Image:
    return overlay_segmentation(image, result)
