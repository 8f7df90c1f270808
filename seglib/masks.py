"""Every mask encoding turned into a clean label map, and the classic mask mistakes caught early.

A *label map* is an ``HxW`` ``np.uint8`` array whose values are class indices ``0..C-1`` plus an
ignore index (255 unless told otherwise). This module decodes the encodings datasets ship:

* 0/255 or soft 0..255 binary masks and 1-bit images (:func:`binarize`), instance masks
  (:func:`instances_to_binary`);
* colour-coded masks, exactly or with a tolerance for JPEG noise (:func:`rgb_to_index`,
  :class:`Palette`), and K-means colour clustering done right (:func:`kmeans_colors`);
* Cityscapes ``labelIds`` (:func:`labelids_to_trainids`) and colour masks
  (:func:`cityscapes_colors_to_trainids`);

and checks them (:func:`validate_mask`), resizes them without inventing labels
(:func:`resize_mask`) and counts classes (:func:`class_histogram`). Problems raise
:class:`seglib.errors.DataError` naming the file and the fix.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from seglib.errors import ConfigError, DataError

IGNORE_INDEX = 255
PathLike = str | Path | None

_INTEGER_HINT = ("keep masks integer end to end: read them with seglib.data.io.read_label, resize "
                 "with resize_mask (nearest neighbour) and convert with "
                 "torch.as_tensor(mask, dtype=torch.long) instead of ToTensor()")


# --------------------------------------------------------------------------- validation


def _value_counts(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(values, counts)`` of an integer array; a bincount for uint8 (fast), unique otherwise."""
    if mask.dtype == np.uint8:
        counts = np.bincount(mask.ravel(), minlength=256)
        values = np.flatnonzero(counts)
        return values, counts[values]
    return np.unique(mask, return_counts=True)


def _describe_values(values: np.ndarray, counts: np.ndarray, limit: int = 8) -> str:
    """``"7 (120 px), 12 (3 px)"``, most frequent first, with ``"and N more"`` past ``limit``."""
    order = np.argsort(-counts, kind="stable")
    shown = ", ".join(f"{int(values[i])} ({int(counts[i])} px)" for i in order[:limit])
    more = len(values) - limit
    return shown + (f" and {more} more values" if more > 0 else "")


def _integer(mask: np.ndarray, path: PathLike, what: str = "mask") -> np.ndarray:
    """``mask`` as an integer array (bool → uint8); floats raise a DataError that says why."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask.astype(np.uint8)
    if np.issubdtype(mask.dtype, np.integer):
        return mask
    detail = ""
    if np.issubdtype(mask.dtype, np.floating) and mask.size:
        frac = int((mask != np.round(mask)).sum())
        detail = (f" (values {float(np.nanmin(mask)):g}..{float(np.nanmax(mask)):g}, "
                  f"{frac} pixels fractional)")
    raise DataError(path, f"{what} has dtype {mask.dtype}{detail}, expected integer class "
                    "indices. Float masks come from ToTensor() (which divides by 255) or from "
                    "bilinear/bicubic resizing (which blends neighbouring labels)", _INTEGER_HINT)


def _check_uint8_ignore(ignore_index: int) -> None:
    """An ignore index stored in a uint8 map must fit it: -100 (PyTorch's default) would wrap around to 156."""
    if not 0 <= ignore_index <= 255:
        raise ConfigError(f"ignore_index {ignore_index} does not fit a uint8 label map (0..255): use 255 and map "
                          "your void value to it")


def _check_ignore(num_classes: int, ignore_index: int) -> None:
    if num_classes < 1:
        raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
    if 0 <= ignore_index < num_classes:
        raise ConfigError(f"ignore_index {ignore_index} is a class index (num_classes="
                          f"{num_classes}); use a value outside 0..C-1 such as 255")


def is_zero_255(mask: np.ndarray) -> bool:
    """True when the mask holds only 0 and 255 (with at least one 255): an 8-bit binary image."""
    mask = np.asarray(mask)
    if mask.dtype == bool or mask.size == 0:
        return False
    is255 = mask == 255
    return bool(is255.any() and (is255 | (mask == 0)).all())


def validate_mask(mask: np.ndarray, *, num_classes: int, image_size: Sequence[int] | None = None,
                  ignore_index: int = IGNORE_INDEX, path: PathLike = None, decoded: bool = False) -> np.ndarray:
    """Check a label map (2-D, integer, image-sized, values in {0..C-1, ignore}); return uint8.

    ``image_size`` is the image's ``(H, W)`` (an ``image.shape`` works too). A 0/255 mask is
    rejected for a binary task (``num_classes == 2``) even though 255 is the ignore index, since
    it would silently ignore every foreground pixel, unless ``decoded``: labels from a dataset's
    decoder, which maps void itself (a pet trimap with no pet in it is background and void).
    Bool (1-bit) masks are accepted as {0, 1}.
    """
    _check_ignore(num_classes, ignore_index)
    _check_uint8_ignore(ignore_index)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        if mask.ndim == 3 and mask.shape[-1] in (3, 4):
            problem, fix = (f"mask has shape {mask.shape}: a colour-coded mask, not a label map",
                            "decode it with rgb_to_index(mask, palette) (or the dataset's decoder)")
        elif mask.ndim == 3 and 1 in (mask.shape[0], mask.shape[-1]):
            problem, fix = (f"mask has shape {mask.shape}: a channel axis of size 1",
                            "squeeze it to HxW (mask[..., 0] or mask[0])")
        else:
            problem, fix = (f"mask has {mask.ndim} dimensions {mask.shape}, expected HxW",
                            "pass one HxW label map at a time")
        raise DataError(path, problem, fix)
    mask = _integer(mask, path)
    if image_size is not None:
        hw = tuple(int(s) for s in tuple(image_size)[:2])
        if mask.shape != hw:
            raise DataError(path, f"mask is {mask.shape[0]}x{mask.shape[1]} but the image is "
                            f"{hw[0]}x{hw[1]} (HxW)",
                            "check that the mask belongs to this image; resize it with resize_mask "
                            "(nearest neighbour), or use fit_mask_to_image for 1-px offsets")
    values, counts = _value_counts(mask)
    zero_255 = 255 in values and np.isin(values, (0, 255)).all()  # is_zero_255, from the counts
    if zero_255 and (ignore_index != 255 or num_classes == 2) and not decoded:
        raise DataError(path, "this looks like a 0/255 mask; divide by 255 or use binarize "
                        f"(it holds only 0 and 255, {int(counts[values == 255][0])} px of 255)",
                        "binarize(mask) maps it to {0, 1}; soft 0..255 masks need a threshold")
    bad = (values < 0) | (values >= num_classes)
    bad &= values != ignore_index
    if bad.any():
        raise DataError(path, f"{int(counts[bad].sum())} pixels have labels outside "
                        f"0..{num_classes - 1} and the ignore index {ignore_index}: "
                        f"{_describe_values(values[bad], counts[bad])}",
                        "map raw values to class indices first (labelids_to_trainids for "
                        "Cityscapes labelIds, a 256-entry lookup table otherwise) or to the ignore "
                        "index, and check num_classes")
    return mask if mask.dtype == np.uint8 else mask.astype(np.uint8)


def class_histogram(mask: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX,
                    path: PathLike = None) -> np.ndarray:
    """Pixels per class (``num_classes`` int64), ignore excluded; any shape (a batch too)."""
    _check_ignore(num_classes, ignore_index)
    values, counts = _value_counts(_integer(mask, path))
    inside = (values >= 0) & (values < num_classes)
    bad = ~inside & (values != ignore_index)
    if bad.any():
        raise DataError(path, f"labels outside 0..{num_classes - 1} and the ignore index "
                        f"{ignore_index}: {_describe_values(values[bad], counts[bad])}",
                        "map raw values to class indices first, and check num_classes")
    hist = np.zeros(num_classes, np.int64)
    hist[values[inside]] = counts[inside]
    return hist


# --------------------------------------------------------------------------- binary masks


def _gray(mask: np.ndarray, path: PathLike) -> np.ndarray:
    """A 2-D view of a mask; an RGB(A) mask whose channels are all equal is reduced to one."""
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] in (3, 4):
        rgb = mask[..., :3]
        if (rgb == rgb[..., :1]).all():
            return rgb[..., 0]
        raise DataError(path, f"binary mask has shape {mask.shape} with differing colour channels",
                        "decode colour masks with rgb_to_index, or convert the file to grayscale")
    if mask.ndim != 2:
        raise DataError(path, f"mask has shape {mask.shape}, expected HxW",
                        "pass one HxW mask at a time")
    return mask


def full_scale(mask: np.ndarray) -> int:
    """The value of a fully-on pixel: 65535 for a uint16 (16-bit file) mask, 255 otherwise."""
    return 65535 if np.asarray(mask).dtype == np.uint16 else 255


def binarize(mask: np.ndarray, threshold: float = 127, path: PathLike = None) -> np.ndarray:
    """Soft or 0/255 mask → uint8 {0, 1} via ``mask > threshold``; bool and 0/1 masks are kept as they are.

    ``threshold`` is on the 8-bit scale: for a uint16 mask (a 16-bit file, 0..65535) it is scaled by
    65535 / 255. Refused as ambiguous: negative values, a mask of exactly 0, 1 and 255 (0/1 with 255 as
    void, or 0/255 with stray 1s) and a 16-bit mask whose values stay within 2..255 (its scale is unclear).
    """
    mask = _gray(mask, path)
    if mask.dtype == bool:
        return mask.astype(np.uint8)
    if np.issubdtype(mask.dtype, np.signedinteger) and mask.size and mask.min() < 0:
        raise DataError(path, f"mask has negative values (down to {mask.min()}): a soft mask holds 0..255 and a "
                        "binary one 0/1", "map the negative values (a void label such as -1?) to 0, or to 255 and "
                        "read the mask with validate_mask(mask, num_classes=2)")
    if np.issubdtype(mask.dtype, np.floating) and threshold >= 1 and mask.size and mask.max() <= 1:
        raise DataError(path, f"mask values lie in [0, 1] (dtype {mask.dtype}) but the "
                        f"threshold is {threshold:g}, which would make every pixel background",
                        "pass threshold=0.5 for probability masks")
    if threshold >= 1 and mask.size and mask.min() >= 0 and mask.max() == 1:  # already 0/1, not 0/255
        return mask.astype(np.uint8)
    if np.issubdtype(mask.dtype, np.integer) and threshold >= 1 and set(_value_counts(mask)[0].tolist()) == {0, 1, 255}:
        raise DataError(path, "mask values are exactly 0, 1 and 255: a 0/1 mask with 255 as void (as Pascal "
                        "VOC's), or a 0/255 mask with stray 1s; a threshold would make the 1s background and "
                        "the 255s foreground", "for a 0/1 mask with void use validate_mask(mask, num_classes=2) "
                        "(255 is ignored); for a 0/255 mask set its 1s to 0")
    if mask.dtype == np.uint16 and threshold >= 1:
        if 1 < mask.max() <= 255:
            raise DataError(path, f"16-bit mask whose values stay within 0..255 (up to {mask.max()}): 8-bit "
                            "values or a nearly empty 16-bit mask", "save the mask as an 8-bit PNG (0..255), "
                            "or as a 16-bit one that uses 0..65535")
        threshold = threshold * full_scale(mask) / 255
    return (mask > threshold).astype(np.uint8)


def instances_to_binary(mask: np.ndarray, path: PathLike = None) -> np.ndarray:
    """Instance-id mask (0 background, k = k-th object, as Penn-Fudan) → uint8 {0, 1}."""
    return (_integer(_gray(mask, path), path, "instance mask") > 0).astype(np.uint8)


# --------------------------------------------------------------------------- geometry

_CV2_DTYPES = {np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32)}


def resize_mask(mask: np.ndarray, size_hw: Sequence[int]) -> np.ndarray:
    """Resize a label map to ``(H, W)`` by nearest neighbour: no output value is new.

    Uses ``cv2.resize(..., interpolation=cv2.INTER_NEAREST_EXACT)`` (pixel-centre sampling, as
    PIL's NEAREST). Pass the flag by keyword: ``cv2.resize(mask, size, cv2.INTER_NEAREST)`` puts
    it in the ``dst`` slot and silently resizes bilinearly.
    """
    mask = np.asarray(mask)
    h, w = (int(s) for s in size_hw)
    if mask.ndim not in (2, 3) or h < 1 or w < 1:
        raise ConfigError(f"resize_mask needs an HxW (or HxWxC) mask and a positive size, got "
                          f"{mask.shape} -> {(h, w)}")
    if mask.shape[:2] == (h, w):
        return mask.copy()
    if mask.dtype in _CV2_DTYPES and (mask.ndim == 2 or mask.shape[2] <= 4):
        out = cv2.resize(np.ascontiguousarray(mask), (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
        return out.reshape((h, w) + mask.shape[2:])
    # dtypes OpenCV does not take (bool, int64): OpenCV resizes the row and column indices instead, so every
    # dtype picks the same source pixel, also where an output pixel's centre falls halfway between two
    H, W = mask.shape[:2]
    rows = cv2.resize(np.arange(H, dtype=np.int32)[:, None], (1, h), interpolation=cv2.INTER_NEAREST_EXACT)
    cols = cv2.resize(np.arange(W, dtype=np.int32)[None], (w, 1), interpolation=cv2.INTER_NEAREST_EXACT)
    return mask[rows.reshape(h, 1), cols.reshape(w)]


def fit_mask_to_image(mask: np.ndarray, image_hw: Sequence[int], max_offset: int = 1,
                      path: PathLike = None) -> np.ndarray:
    """Crop (bottom/right) or edge-pad a mask that is off the image size by ≤ ``max_offset`` px.

    Some datasets (TikTok) store masks one row taller than their images. Bigger mismatches are
    a wrong pairing or a resized file and raise :class:`DataError`.
    """
    mask = np.asarray(mask)
    H, W = (int(s) for s in tuple(image_hw)[:2])
    h, w = mask.shape[:2]
    if (h, w) == (H, W):
        return mask
    if abs(h - H) > max_offset or abs(w - W) > max_offset:
        raise DataError(path, f"mask is {h}x{w} but the image is {H}x{W} (HxW), more than "
                        f"{max_offset} px apart",
                        "check that the mask belongs to this image, or resize it explicitly with "
                        "resize_mask (nearest neighbour)")
    mask = mask[:H, :W]
    pad = [(0, H - mask.shape[0]), (0, W - mask.shape[1])] + [(0, 0)] * (mask.ndim - 2)
    return np.pad(mask, pad, mode="edge") if any(p[1] for p in pad) else mask


# --------------------------------------------------------------------------- colour masks


def _as_colors(colors, what: str = "colors") -> np.ndarray:
    """``(N, 3)`` uint8 from any sequence of RGB triples."""
    arr = np.asarray(colors)
    if arr.size == 0:
        return np.zeros((0, 3), np.uint8)
    if arr.ndim == 0 or arr.shape[-1] != 3 or arr.min() < 0 or arr.max() > 255:
        raise ConfigError(f"{what} must be RGB triples in 0..255, got shape {arr.shape}")
    return arr.reshape(-1, 3).astype(np.uint8)


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` uint8 colours → ``(...)`` uint32 keys ``r << 16 | g << 8 | b``."""
    rgb = np.asarray(rgb)
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return (r << 16) | (g << 8) | b


def unpack_rgb(keys: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_rgb`: uint32 keys → ``(..., 3)`` uint8 colours."""
    keys = np.asarray(keys, np.uint32)
    return np.stack([(keys >> 16) & 255, (keys >> 8) & 255, keys & 255], axis=-1).astype(np.uint8)


def _nearest(points: np.ndarray, centres: np.ndarray, metric: str = "l2",
             chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest centre for each point and its distance (``l2`` or ``linf``), chunked."""
    points = np.asarray(points, np.float32)
    centres = np.asarray(centres, np.float32)
    idx = np.empty(len(points), np.intp)
    dist = np.empty(len(points), np.float32)
    c2 = (centres**2).sum(1)
    for s in range(0, len(points), chunk):
        p = points[s : s + chunk]
        if metric == "linf":
            d = np.abs(p[:, None, :] - centres[None]).max(-1)
        else:
            d = np.maximum((p**2).sum(1)[:, None] - 2 * p @ centres.T + c2, 0)
        idx[s : s + chunk] = j = d.argmin(1)
        dist[s : s + chunk] = d[np.arange(len(p)), j]
    return idx, (np.sqrt(dist) if metric == "l2" else dist)


@dataclass(frozen=True)
class ColorMatchReport:
    """How the pixels of a colour mask matched a palette (see :func:`rgb_to_index`)."""

    total: int                    # pixels looked at
    exact: int                    # exactly a palette or void colour
    approximate: int              # within the tolerance of one (JPEG noise)
    ignored: int                  # mapped to ignore because they are (near) a void colour
    unmatched: int                # no colour within tolerance: set to ignore
    unmatched_colors: tuple = ()  # ((r, g, b), pixel count), most frequent first (top N)

    @property
    def unmatched_fraction(self) -> float:
        return self.unmatched / self.total if self.total else 0.0

    def __str__(self) -> str:
        colours = ", ".join(f"{c} x{n}" for c, n in self.unmatched_colors[:5])
        return (f"{self.total} px: {self.exact} exact, {self.approximate} within tolerance "
                f"({self.ignored} of these void), {self.unmatched} unmatched ({self.unmatched_fraction:.3%})"
                + (f"; e.g. {colours}" if colours else ""))


def rgb_to_index(rgb: np.ndarray, colors, *, ignore_colors: Iterable = (),
                 ignore_index: int = IGNORE_INDEX, tolerance: float = 0, metric: str = "linf",
                 void_tolerance: float | None = None, strict: bool = False, top: int = 10,
                 path: PathLike = None) -> tuple[np.ndarray, ColorMatchReport]:
    """Colour-coded ``HxWx3`` mask → ``(labels HxW uint8, report)``; ``colors[i]`` is class i.

    ``tolerance == 0``: exact lookup (packed uint32 keys, ``np.searchsorted``). ``tolerance > 0``
    (JPEG masks): a colour that is not exact takes the nearest palette/void colour if its
    ``metric`` distance (``"linf"`` max-abs per channel, or ``"l2"``) is ≤ ``tolerance``. Void
    colours and unmatched colours become ``ignore_index``; ``strict=True`` raises instead.
    ``void_tolerance`` (default: ``tolerance``) is the tolerance for void colours; 0 matches them
    only exactly, so that near-miss pixels go to the nearest class.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] not in (3, 4):
        raise DataError(path, f"expected a colour-coded HxWx3 mask, got shape {rgb.shape}",
                        "an HxW mask already holds indices: check it with validate_mask")
    if rgb.dtype != np.uint8:
        if not np.issubdtype(rgb.dtype, np.integer) or rgb.min() < 0 or rgb.max() > 255:
            raise DataError(path, f"colour mask has dtype {rgb.dtype}, expected uint8 0..255",
                            _INTEGER_HINT)
        rgb = rgb.astype(np.uint8)
    if metric not in ("linf", "l2"):
        raise ConfigError(f"metric must be 'linf' or 'l2', got {metric!r}")
    palette = _as_colors(colors)
    void = _as_colors(list(ignore_colors), "ignore_colors")
    if not 1 <= len(palette) <= ignore_index <= 255:
        raise ConfigError(f"{len(palette)} classes with ignore_index {ignore_index}: "
                          "labels must fit uint8")
    class_keys, void_keys = pack_rgb(palette), pack_rgb(void)
    if len(np.unique(class_keys)) < len(palette) or np.isin(void_keys, class_keys).any():
        raise ConfigError("palette colours must be distinct and no ignore colour a class colour")
    values = np.concatenate([np.arange(len(palette)), np.full(len(void), ignore_index)])
    keys_t, first = np.unique(np.concatenate([class_keys, void_keys]), return_index=True)
    values = values[first].astype(np.uint8)

    keys = pack_rgb(rgb[..., :3]).ravel()
    pos = np.minimum(np.searchsorted(keys_t, keys), len(keys_t) - 1)
    hit = keys_t[pos] == keys
    labels = values[pos]
    labels[~hit] = ignore_index
    exact = int(hit.sum())
    ignored = int((hit & (labels == ignore_index)).sum()) if len(void) else 0
    approximate = 0
    miss = np.flatnonzero(~hit)
    rest_keys = np.zeros(0, np.uint32)
    rest_counts = np.zeros(0, np.intp)
    if len(miss):
        uniq, inverse, counts = np.unique(keys[miss], return_inverse=True, return_counts=True)
        inverse = inverse.ravel()
        close = np.zeros(len(uniq), bool)
        void_tol = tolerance if void_tolerance is None else void_tolerance
        limit = np.where(values == ignore_index, void_tol, tolerance)
        candidates = np.flatnonzero(limit > 0)
        if len(candidates):
            j, dist = _nearest(unpack_rgb(uniq), unpack_rgb(keys_t[candidates]), metric)
            j = candidates[j]
            close = dist <= limit[j]
            got = np.where(close, values[j], np.uint8(ignore_index)).astype(np.uint8)
            labels[miss] = got[inverse]
            approximate = int(counts[close].sum())
            ignored += int(counts[close & (values[j] == ignore_index)].sum())
        rest_keys, rest_counts = uniq[~close], counts[~close]
    order = np.argsort(-rest_counts, kind="stable")[:top]
    report = ColorMatchReport(
        total=int(keys.size), exact=exact, approximate=approximate, ignored=ignored,
        unmatched=int(rest_counts.sum()),
        unmatched_colors=tuple((tuple(int(v) for v in unpack_rgb(rest_keys[i])),
                                int(rest_counts[i])) for i in order))
    if strict and report.unmatched:
        shown = ", ".join(f"{c} ({n} px)" for c, n in report.unmatched_colors[:5])
        raise DataError(path, f"{report.unmatched} pixels ({report.unmatched_fraction:.2%}) have "
                        f"colours that are not in the palette: {shown}",
                        "add these colours to the palette or to ignore_colors, or pass tolerance>0 "
                        "if the mask was saved as JPEG")
    return labels.reshape(rgb.shape[:-1]), report


def index_to_rgb(labels: np.ndarray, colors, ignore_color=(0, 0, 0)) -> np.ndarray:
    """Label map → ``(..., 3)`` uint8 colours; values that are no class get ``ignore_color``."""
    palette = _as_colors(colors)
    labels = _integer(labels, None, "label map")
    if labels.dtype != np.uint8:
        labels = np.where((labels >= 0) & (labels < 256), labels, 255).astype(np.uint8)
    table = np.empty((256, 3), np.uint8)
    table[:] = _as_colors([ignore_color], "ignore_color")[0]
    table[: len(palette)] = palette
    return table[labels]


@dataclass(frozen=True, eq=False)
class Palette:
    """Class names, their colours (``C x 3`` uint8) and the void colours that mean "ignore"."""

    names: tuple[str, ...]
    colors: np.ndarray
    void_colors: tuple[tuple[int, int, int], ...] = ()
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "colors", _as_colors(self.colors))
        void = _as_colors(list(self.void_colors), "void_colors")
        object.__setattr__(self, "void_colors", tuple(tuple(int(v) for v in c) for c in void))
        if len(self.names) != len(self.colors):
            raise ConfigError(f"{len(self.names)} class names but {len(self.colors)} colours")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def to_index(self, rgb: np.ndarray, **kwargs) -> tuple[np.ndarray, ColorMatchReport]:
        """:func:`rgb_to_index` with this palette and its void colours."""
        return rgb_to_index(rgb, self.colors, ignore_colors=self.void_colors,
                            ignore_index=self.ignore_index, **kwargs)

    def to_rgb(self, labels: np.ndarray, ignore_color=None) -> np.ndarray:
        """:func:`index_to_rgb` with this palette; ignore gets the first void colour (or black)."""
        if ignore_color is None:
            ignore_color = self.void_colors[0] if self.void_colors else (0, 0, 0)
        return index_to_rgb(labels, self.colors, ignore_color)


# --------------------------------------------------------------------------- K-means on colours


def _unique_colors(data) -> tuple[np.ndarray, np.ndarray]:
    """Distinct colours and their pixel counts in an ``(..., 3)`` array or a list of them."""
    arrays = [data] if isinstance(data, np.ndarray) else list(data)
    keys = []
    for a in arrays:
        a = np.asarray(a)
        if a.shape[-1] not in (3, 4):
            raise ConfigError(f"expected RGB pixels (..., 3), got shape {a.shape}")
        low, high = (a[..., :3].min(), a[..., :3].max()) if a.size else (0, 0)
        if low < 0 or high > 255:  # 300 would wrap to 44
            raise ConfigError(f"colours must be 8-bit (0..255), got values {low}..{high}: scale 16-bit colours "
                              "down first (>> 8)")
        keys.append(pack_rgb(a[..., :3].astype(np.uint8)).ravel())
    uniq, counts = np.unique(np.concatenate(keys), return_counts=True)
    return unpack_rgb(uniq).astype(np.float32), counts.astype(np.float64)


@dataclass(frozen=True, eq=False)
class ColorClusters:
    """Fitted colour clusters: ``centers`` (k x 3), pixels per cluster, inertia, iterations run."""

    centers: np.ndarray
    sizes: np.ndarray
    inertia: float
    n_iter: int

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """Nearest centre for every pixel of ``rgb`` (``(..., 3)`` → ``(...)`` int64)."""
        rgb = np.asarray(rgb)
        keys = pack_rgb(rgb[..., :3].astype(np.uint8))
        uniq, inverse = np.unique(keys, return_inverse=True)
        j, _ = _nearest(unpack_rgb(uniq), self.centers)
        return j[inverse.ravel()].reshape(keys.shape).astype(np.int64)


def kmeans_colors(rgb_pixels_or_masks, k: int, seed: int = 0, iters: int = 100,
                  tol: float = 1e-3) -> ColorClusters:
    """K-means (k-means++ init, NumPy) on the colours that actually occur in masks.

    Takes an ``(..., 3)`` array or a list of colour masks; fits on the distinct colours weighted
    by their pixel counts, so it is as fast on a dataset as on its palette. Fit it on mask pixels,
    never on random RGB triplets (whose clusters are Voronoi cells of colour space, not classes).
    """
    points, weights = _unique_colors(rgb_pixels_or_masks)
    if not 1 <= k <= len(points):
        raise ConfigError(f"k={k} clusters but the masks hold {len(points)} distinct colours")
    rng = np.random.default_rng(seed)
    centers = np.empty((k, 3), np.float32)
    centers[0] = points[rng.choice(len(points), p=weights / weights.sum())]
    d2 = ((points - centers[0]) ** 2).sum(1)
    for i in range(1, k):  # k-means++: next centre with probability ∝ weight x squared distance
        p = weights * d2
        centers[i] = points[rng.choice(len(points), p=p / p.sum())] if p.sum() > 0 else points[i]
        d2 = np.minimum(d2, ((points - centers[i]) ** 2).sum(1))
    n_iter = 0
    for n_iter in range(1, iters + 1):  # noqa: B007 (returned after the loop)
        assign, dist = _nearest(points, centers)
        sums = np.stack([np.bincount(assign, weights * points[:, c], minlength=k)
                         for c in range(3)], axis=1)
        mass = np.bincount(assign, weights, minlength=k)
        new = centers.copy()
        full = mass > 0
        new[full] = sums[full] / mass[full, None]
        for e in np.flatnonzero(~full):  # an empty cluster restarts at the worst-served colour
            far = int(np.argmax(weights * dist**2))
            new[e], dist[far] = points[far], 0
        shift = float(np.abs(new - centers).max())
        centers = new
        if shift < tol:
            break
    assign, dist = _nearest(points, centers)
    sizes = np.bincount(assign, weights, minlength=k).astype(np.int64)
    return ColorClusters(centers, sizes, float((weights * dist**2).sum()), n_iter)


def match_clusters_to_palette(centers: np.ndarray, colors,
                              ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Class index for each cluster centre (``k`` uint8): a one-to-one nearest-colour assignment
    (Hungarian). Centres left over when ``k > C`` get ``ignore_index``. Use ``mapping[clusters]``.
    """
    from scipy.optimize import linear_sum_assignment

    _check_uint8_ignore(ignore_index)
    centers = np.asarray(centers, np.float64)
    palette = _as_colors(colors).astype(np.float64)
    cost = np.sqrt(((centers[:, None] - palette[None]) ** 2).sum(-1))
    rows, cols = linear_sum_assignment(cost)
    mapping = np.full(len(centers), ignore_index, np.uint8)
    mapping[rows] = cols
    return mapping


# --------------------------------------------------------------------------- Cityscapes


class CityscapesLabel(NamedTuple):
    """One row of cityscapesScripts' label table."""

    name: str
    id: int
    train_id: int
    color: tuple[int, int, int]


# From cityscapesScripts (helpers/labels.py): name, labelId, trainId (255 = ignored), colour.
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = tuple(CityscapesLabel(*row) for row in (
    ("unlabeled", 0, 255, (0, 0, 0)),
    ("ego vehicle", 1, 255, (0, 0, 0)),
    ("rectification border", 2, 255, (0, 0, 0)),
    ("out of roi", 3, 255, (0, 0, 0)),
    ("static", 4, 255, (0, 0, 0)),
    ("dynamic", 5, 255, (111, 74, 0)),
    ("ground", 6, 255, (81, 0, 81)),
    ("road", 7, 0, (128, 64, 128)),
    ("sidewalk", 8, 1, (244, 35, 232)),
    ("parking", 9, 255, (250, 170, 160)),
    ("rail track", 10, 255, (230, 150, 140)),
    ("building", 11, 2, (70, 70, 70)),
    ("wall", 12, 3, (102, 102, 156)),
    ("fence", 13, 4, (190, 153, 153)),
    ("guard rail", 14, 255, (180, 165, 180)),
    ("bridge", 15, 255, (150, 100, 100)),
    ("tunnel", 16, 255, (150, 120, 90)),
    ("pole", 17, 5, (153, 153, 153)),
    ("polegroup", 18, 255, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)),
    ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)),
    ("terrain", 22, 9, (152, 251, 152)),
    ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)),
    ("rider", 25, 12, (255, 0, 0)),
    ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)),
    ("bus", 28, 15, (0, 60, 100)),
    ("caravan", 29, 255, (0, 0, 90)),
    ("trailer", 30, 255, (0, 0, 110)),
    ("train", 31, 16, (0, 80, 100)),
    ("motorcycle", 32, 17, (0, 0, 230)),
    ("bicycle", 33, 18, (119, 11, 32)),
    ("license plate", -1, 255, (0, 0, 142)),  # trainId -1 upstream: never in train labels
))

_TRAIN = sorted((lab for lab in CITYSCAPES_LABELS if lab.train_id != 255),
                key=lambda lab: lab.train_id)
CITYSCAPES_CLASSES: tuple[str, ...] = tuple(lab.name for lab in _TRAIN)
CITYSCAPES_PALETTE: np.ndarray = np.array([lab.color for lab in _TRAIN], np.uint8)
CITYSCAPES_PALETTE.flags.writeable = False
# Colours of the ignored labels, except those shared with a class (polegroup = pole, plate = car).
CITYSCAPES_VOID_COLORS: tuple[tuple[int, int, int], ...] = tuple(dict.fromkeys(
    lab.color for lab in CITYSCAPES_LABELS
    if lab.train_id == 255 and lab.color not in {t.color for t in _TRAIN}))
CITYSCAPES = Palette(CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, CITYSCAPES_VOID_COLORS)

CITYSCAPES_LABELID_TO_TRAINID: np.ndarray = np.full(256, IGNORE_INDEX, np.uint8)
for _lab in CITYSCAPES_LABELS:
    if _lab.id >= 0:
        CITYSCAPES_LABELID_TO_TRAINID[_lab.id] = _lab.train_id
CITYSCAPES_LABELID_TO_TRAINID.flags.writeable = False
del _lab


def labelids_to_trainids(mask: np.ndarray) -> np.ndarray:
    """Cityscapes ``*_labelIds.png`` values → trainIds (0..18, 255 = ignore), a 256-entry LUT."""
    mask = _integer(mask, None, "labelId mask")
    if mask.dtype == np.uint8:
        return CITYSCAPES_LABELID_TO_TRAINID[mask]
    inside = (mask >= 0) & (mask < 256)
    return np.where(inside, CITYSCAPES_LABELID_TO_TRAINID[np.where(inside, mask, 255)],
                    IGNORE_INDEX).astype(np.uint8)


def cityscapes_colors_to_trainids(rgb: np.ndarray, *, tolerance: float = 0,
                                  metric: str = "linf", report: Counter | None = None,
                                  path: PathLike = None) -> np.ndarray:
    """Cityscapes colour mask (``gtFine_color`` or the Kaggle pairs' JPEG half) → trainIds.

    The colours of ignored labels map to 255 when exact; other colours take the nearest class
    colour within ``tolerance``, else 255. Void colours are not matched approximately because
    some sit within a few levels of a class (caravan (0,0,90) and trailer (0,0,110) between truck
    and car, guard rail near fence): JPEG-blurred car edges would turn into "trailer" = ignore.
    ``report`` (a Counter, e.g. a dataset's quirks report) receives the pixel counts.
    """
    labels, rep = CITYSCAPES.to_index(rgb, tolerance=tolerance, metric=metric, void_tolerance=0,
                                      path=path)
    if report is not None:
        for key, n in (("colour-mask pixels matched within tolerance", rep.approximate),
                       ("colour-mask pixels of void colours (ignored)", rep.ignored),
                       ("colour-mask pixels beyond tolerance (ignored)", rep.unmatched)):
            if n:
                report[key] += n
    return labels
