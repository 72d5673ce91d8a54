"""Files that ship inside the package: the bundled models (``*.safetensors``) and the
photographs that verify exports and backends (``photos/``).

Verification prefers scikit-image's photographs (more of them, when the dev extra is
installed) and falls back to the four that ship here, so that verifying an export or a backend
never needs a test dependency.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from PIL import Image

from ..errors import MissingExtraError

# Photographs shipped inside scikit-image's wheel (no download). camera.png is grayscale.
PHOTOGRAPHS = ("chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg", "camera.png",
               "motorcycle_left.png", "hubble_deep_field.jpg", "retina.jpg")


def assets_dir() -> Path:
    return Path(str(resources.files(__name__)))


def photograph_dir() -> Path:
    try:
        import skimage.data
    except ImportError as exc:
        raise MissingExtraError("scikit-image", "dev") from exc
    return Path(skimage.data.__file__).parent


def photograph_paths(names: tuple[str, ...] = PHOTOGRAPHS) -> list[Path]:
    base = photograph_dir()
    return [base / n for n in names]


def load_photographs(names: tuple[str, ...] = PHOTOGRAPHS) -> dict[str, Image.Image]:
    """The photographs by name, as RGB images: scikit-image's, else the four bundled ones."""
    try:
        paths = photograph_paths(names)
    except MissingExtraError:
        paths = sorted((assets_dir() / "photos").glob("*.jpg"))
    return {p.name: Image.open(p).convert("RGB") for p in paths}
