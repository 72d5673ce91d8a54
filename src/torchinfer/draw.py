"""Drawing results onto images. Separate from the result types: results are data, this is a view."""

from __future__ import annotations

from functools import cache

from PIL import Image, ImageDraw, ImageFont

from .results import Classification


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


def contact_sheet(images: list[Image.Image], *, columns: int = 4, cell: int = 320) -> Image.Image:
    """Thumbnails side by side, for looking at a whole run in one picture."""
    rows = max(1, -(-len(images) // columns))
    sheet = Image.new("RGB", (columns * cell, rows * cell), (32, 32, 32))
    for i, img in enumerate(images):
        thumb = img.copy()
        thumb.thumbnail((cell - 8, cell - 8))
        x = (i % columns) * cell + (cell - thumb.width) // 2
        y = (i // columns) * cell + (cell - thumb.height) // 2
        sheet.paste(thumb, (x, y))
    return sheet
