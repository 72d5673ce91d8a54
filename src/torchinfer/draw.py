"""Drawing results onto images. Separate from the result types: results are data, this is a view."""

from __future__ import annotations

from functools import cache, singledispatch

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .results import Classification, Detections, MultiTask, Segmentation


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


def instance_mask_image(dets: Detections) -> Image.Image:
    """Instances as a palette PNG: pixel value i + 1 for detection i (later, lower-scored
    instances do not overwrite earlier ones), 0 for none."""
    h, w = dets.image_size
    ids = np.zeros((h, w), dtype=np.uint8 if len(dets) < 256 else np.int32)
    for i in reversed(range(len(dets.masks or ()))):
        m = dets.masks[i]
        x0, y0, x1, y1 = m.box
        ids[y0:y1, x0:x1][m.mask] = i + 1
    if ids.dtype != np.uint8:
        return Image.fromarray(ids, mode="I")
    img = Image.fromarray(ids, mode="P")
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


# COCO's person skeleton, by keypoint name (torchvision's keypoint R-CNN meta lists the names).
COCO_SKELETON = (
    ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("right_ankle", "right_knee"),
    ("right_knee", "right_hip"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"),
    ("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"),
    ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"), ("left_eye", "right_eye"),
    ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"),
    ("right_eye", "right_ear"), ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
)


@cache
def coco_keypoint_names() -> tuple[str, ...]:
    from torchvision.models.detection import KeypointRCNN_ResNet50_FPN_Weights

    return tuple(KeypointRCNN_ResNet50_FPN_Weights.DEFAULT.meta["keypoint_names"])


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A fixed, saturated colour per class id (golden-ratio hue steps keep neighbours apart)."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((class_id * 0.618033988749895) % 1.0, 0.85, 0.95)
    return (int(r * 255), int(g * 255), int(b * 255))


def draw_detections(image: Image.Image, dets: Detections, *, mask_alpha: float = 0.45,
                    keypoint_threshold: float = 0.5) -> Image.Image:
    """Boxes with "label score" tags, translucent instance masks and COCO skeletons.

    Tags are white or black text on the class colour, whichever contrasts more, so they stay
    readable on any background.
    """
    img = image.convert("RGB")
    if dets.masks is not None and len(dets):
        arr = np.asarray(img, dtype=np.float32).copy()
        for m, cid in zip(dets.masks, dets.class_ids):
            x0, y0, x1, y1 = m.box
            region = arr[y0:y1, x0:x1]
            region[m.mask] = region[m.mask] * (1 - mask_alpha) + np.array(class_colour(int(cid))) * mask_alpha
        img = Image.fromarray(np.rint(arr).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    width = max(2, round(min(img.size) / 250))
    font = _font(max(11, min(img.size) // 40))
    rotated = dets.corners
    for i in range(len(dets)):
        colour = class_colour(int(dets.class_ids[i]))
        x0, y0, x1, y1 = (float(v) for v in dets.boxes[i])
        if rotated is not None:  # the rotated box; its tag at its top corner
            points = [(float(x), float(y)) for x, y in rotated[i]]
            draw.polygon(points, outline=colour, width=width)
            x0, y0 = min(points, key=lambda p: (p[1], p[0]))
            x0, y0 = min(max(x0, 0.0), img.width - 1.0), max(y0, 0.0)
        else:
            draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        tag = f"{dets.labels[i]} {dets.scores[i]:.2f}"
        tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), tag, font=font)
        th = ty1 - ty0 + 2 * width
        top = y0 - th if y0 - th >= 0 else y0  # above the box, or inside it at the image edge
        draw.rectangle((x0, top, x0 + tx1 - tx0 + 2 * width, top + th), fill=colour)
        luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        draw.text((x0 + width, top + width - ty0), tag, font=font,
                  fill=(0, 0, 0) if luminance > 140 else (255, 255, 255))
    if dets.keypoints is not None:
        _draw_keypoints(draw, dets.keypoints, keypoint_threshold, width, dets.skeleton)
    return img


def _draw_keypoints(draw: ImageDraw.ImageDraw, keypoints: np.ndarray, threshold: float,
                    width: int, skeleton: tuple[tuple[int, int], ...] | None = None) -> None:
    """Points, and the limbs between visible ones: the detections' own skeleton (index
    pairs) when they carry one, else COCO's person skeleton for 17 keypoints."""
    limbs: tuple[tuple[int, int], ...] = skeleton or ()
    if skeleton is None and keypoints.shape[1:2] == (17,):
        names = coco_keypoint_names()
        index = {name: i for i, name in enumerate(names)}
        limbs = tuple((index[a], index[b]) for a, b in COCO_SKELETON)
    for person in keypoints:
        visible = person[:, 2] >= threshold
        for i, j in limbs:
            if visible[i] and visible[j]:
                draw.line((*person[i, :2], *person[j, :2]), fill=(0, 255, 255), width=width)
        r = width + 1
        for x, y, _ in person[visible]:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 0, 255))


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


@visualise.register
def _(result: Detections, image: Image.Image) -> Image.Image:
    return draw_detections(image, result)


@visualise.register
def _(result: MultiTask, image: Image.Image) -> Image.Image:
    # all heads on one picture: masks under boxes, the classes' banner on top
    # (a head of a task this module does not draw, a depth map, is left out of the picture)
    order = {Segmentation: 0, Detections: 1, Classification: 2}
    for head in sorted(result.heads.values(), key=lambda r: order.get(type(r), 3)):
        if visualise.dispatch(type(head)) is not visualise.dispatch(object):
            image = visualise(head, image)
    return image
