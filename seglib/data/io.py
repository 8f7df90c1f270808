"""Reading images and label files, with errors that name the file and the fix.

Every image and label file is decoded by :func:`_open`, which refuses what would exhaust memory or
decode to garbage:

* more pixels than PIL's cap, ``PIL.Image.MAX_IMAGE_PIXELS`` (about 89 million by default; a
  decompression bomb is a small file that decodes to billions), counted from the header before any
  pixel is decoded. ``SEGLIB_MAX_IMAGE_PIXELS=N`` (or setting ``PIL.Image.MAX_IMAGE_PIXELS`` in
  Python) raises the cap for genuine large photos;
* truncated files (PIL raises) and JPEGs whose compressed data is damaged. PIL silences libjpeg's
  "Corrupt JPEG data" warnings and returns the garbage, so a JPEG's compressed data is decoded a
  second time by OpenCV's libjpeg (at 1/8 scale in gray: every byte is still read, but little is
  computed; about 3 ms per photo) with the C-level stderr caught, and any such complaint refuses the
  file. Where the C library's stderr cannot be caught (Windows) this check finds nothing.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from seglib.errors import ConfigError, DataError

_REDOWNLOAD = "re-download the dataset or replace this file with a good copy"
PIXEL_CAP_VARIABLE = "SEGLIB_MAX_IMAGE_PIXELS"
_LIBJPEG_DAMAGE = ("Corrupt JPEG data", "Premature end of JPEG file")
_STDERR_SWAP = threading.Lock()  # file descriptor 2 belongs to the whole process: one decode at a time may borrow it


def pixel_cap() -> int | None:
    """The most pixels an image may decode to: ``$SEGLIB_MAX_IMAGE_PIXELS`` when set (it then becomes
    PIL's cap, ``PIL.Image.MAX_IMAGE_PIXELS``, for this process), else PIL's cap (None: no cap)."""
    text = os.environ.get(PIXEL_CAP_VARIABLE, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ConfigError(f"{PIXEL_CAP_VARIABLE}={text!r}: must be a whole number of pixels, e.g. 200000000")
        Image.MAX_IMAGE_PIXELS = int(text)
    return Image.MAX_IMAGE_PIXELS


def _above_the_cap(path: Path, cap: int, exc: Exception) -> DataError:
    found = re.search(r"\((\d+) pixels\)", str(exc))  # PIL's message: "Image size (N pixels) exceeds ..."
    size = f"{int(found.group(1)):,} pixels" if found else "more pixels"
    return DataError(path, f"decodes to {size}, more than the cap of {cap:,} pixels (a decompression bomb, or a "
                     "very large photo)", f"if the image is genuine, raise the cap: {PIXEL_CAP_VARIABLE}={2 * cap} "
                     "(or PIL.Image.MAX_IMAGE_PIXELS in Python); otherwise replace or remove the file")


def _libjpeg_complaint(path: Path) -> str | None:
    """libjpeg's first complaint about the compressed data of a JPEG (``Corrupt JPEG data: ...``), or None.

    OpenCV's libjpeg prints its warnings on the C-level stderr (file descriptor 2), which is pointed at a
    temporary file for the decode, one thread at a time; other lines caught meanwhile are written back to
    stderr. Without OpenCV (it comes with albumentations) the check is skipped: PIL still refuses truncated
    files.
    """
    try:
        import cv2
    except ImportError:
        return None

    data = np.fromfile(path, np.uint8)
    sys.stderr.flush()
    with _STDERR_SWAP, tempfile.TemporaryFile() as log:
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_8 | cv2.IMREAD_IGNORE_ORIENTATION)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        lines = log.read().decode(errors="replace").splitlines()
    complaints = [line for line in lines if line.startswith(_LIBJPEG_DAMAGE)]
    others = [line for line in lines if line not in complaints]
    if others:
        os.write(2, ("\n".join(others) + "\n").encode())
    return complaints[0] if complaints else None


def _open_header(path: Path) -> Image.Image:
    """``Image.open(path)``: the header only, refused when it promises more pixels than :func:`pixel_cap`."""
    cap = pixel_cap()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL only warns below twice its cap
            return Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _above_the_cap(path, cap, exc) from exc


def _open(path: Path) -> Image.Image:
    """``path`` decoded now (a truncated file fails here, not later in a worker); see the module docstring."""
    if path.is_dir():
        raise DataError(path, "is a folder, not an image file", "move or rename the folder")
    if not path.is_file():
        raise DataError(path, "file not found", "check the dataset folder layout (python -m seglib prepare NAME)")
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty (0 bytes)", _REDOWNLOAD)
    try:
        img = _open_header(path)
        img.load()
    except DataError:  # above the pixel cap: its own fix, not a re-download
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"cannot be decoded as an image ({exc})", _REDOWNLOAD) from exc
    complaint = _libjpeg_complaint(path) if img.format == "JPEG" else None
    if complaint:
        raise DataError(path, f"cannot be decoded as an image ({complaint}: the compressed data is damaged)",
                        _REDOWNLOAD)
    return img


def read_image(path: str | Path, upright: bool = False) -> np.ndarray:
    """An RGB ``HxWx3`` uint8 array. Grayscale and RGBA files are converted to RGB, 16-bit ones
    scaled to 8 bits (PIL alone would clip them). ``upright`` turns the pixels as the file's EXIF
    orientation says (phone photos), as image viewers do; datasets keep the stored pixels, on which
    their masks were drawn."""
    img = _open(Path(path))
    if upright:
        img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I;16"):
        gray = (np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("I", "F"):
        raise DataError(path, f"is a 32-bit {'integer' if img.mode == 'I' else 'float'} image",
                        "save it as an 8-bit (or 16-bit) RGB or grayscale PNG/JPEG")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img)


def _refuse_shape_in_alpha(path: Path, values: np.ndarray) -> None:
    """A label image whose colours are one flat colour while its transparency varies holds its shape in the
    alpha channel, which label maps do not read: every pixel would become the one class of that colour."""
    colours, alpha = values[..., :-1], values[..., -1]
    if (colours == colours.reshape(-1, colours.shape[-1])[0]).all() and alpha.min() != alpha.max():
        raise DataError(path, "the mask's shape is in its alpha (transparency) channel, and its colours are one "
                        "flat colour", "save the shape as gray values, e.g. Image.open(p).getchannel('A').save(p)")


def read_label(path: str | Path, colour: bool = False) -> np.ndarray:
    """The stored values of a label image, undecoded: ``HxW`` for index/gray masks, ``HxWx3`` for
    colour-coded ones. 1-bit masks become 0/255 uint8, palette ("P") images keep their indices
    (their colours with ``colour=True``, for datasets whose masks are colour-coded: PNG optimizers
    store those as palette images) and 16-bit files are uint16 (older Pillow opens them as 32-bit
    "I": values that fit 16 bits become uint16 too), so that :func:`seglib.masks.binarize` knows
    their scale.
    """
    img = _open(Path(path))
    if colour and img.mode in ("P", "PA"):
        img = img.convert("RGB")
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode in ("RGBA", "LA"):
        _refuse_shape_in_alpha(Path(path), np.asarray(img))
        img = img.convert(img.mode[:-1])
    values = np.asarray(img)
    if img.mode.startswith("I;16") or (img.mode == "I" and values.size and 0 <= values.min()
                                         and values.max() <= 65535):
        return values.astype(np.uint16)
    return values


def image_format(path: str | Path) -> str:
    """The format the file holds ("JPEG", "PNG", "GIF", ...), read from its header whatever its name says."""
    with Image.open(path) as img:
        return img.format
