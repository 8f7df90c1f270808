"""Reading images and label files, with errors that name the file and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from seglib.errors import DataError

_REDOWNLOAD = "re-download the dataset or replace this file with a good copy"


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise DataError(path, "file not found", "check the dataset folder layout (python -m seglib prepare NAME)")
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty (0 bytes)", _REDOWNLOAD)
    try:
        img = Image.open(path)
        img.load()  # decode now: a truncated file fails here, not later in a worker
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"cannot be decoded as an image ({exc})", _REDOWNLOAD) from exc
    return img


def read_image(path: str | Path) -> np.ndarray:
    """An RGB ``HxWx3`` uint8 array. Grayscale and RGBA files are converted to RGB, 16-bit ones
    scaled to 8 bits (PIL alone would clip them)."""
    img = _open(Path(path))
    if img.mode.startswith("I;16"):
        gray = (np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("I", "F"):
        raise DataError(path, f"is a 32-bit {'integer' if img.mode == 'I' else 'float'} image",
                        "save it as an 8-bit (or 16-bit) RGB or grayscale PNG/JPEG")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img)


def read_label(path: str | Path) -> np.ndarray:
    """The stored values of a label image, undecoded: ``HxW`` for index/gray masks, ``HxWx3`` for
    colour-coded ones. 1-bit masks become 0/255 uint8 and palette ("P") images keep their indices.
    """
    img = _open(Path(path))
    if img.mode == "1":
        img = img.convert("L")
    elif img.mode in ("RGBA", "LA"):
        img = img.convert(img.mode[:-1])
    return np.asarray(img)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` read from the header only (cheap)."""
    with Image.open(path) as img:
        return img.height, img.width


def image_format(path: str | Path) -> str:
    """The format the file holds ("JPEG", "PNG", "GIF", ...), read from its header whatever its name says."""
    with Image.open(path) as img:
        return img.format
