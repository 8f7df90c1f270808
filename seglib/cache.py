"""Decode a dataset once into uint8 arrays at training resolution, so epochs stop re-decoding PNGs.

>>> cache = load_or_build_cache(ds, 256)      # builds on first use, reuses while ds is unchanged
>>> image, mask = cache.load(0)               # 256×256×3 uint8, 256×256 uint8 (255 = ignore)
>>> cache.images.shape, cache.masks.shape     # (N, 256, 256, 3), (N, 256, 256): for GPU-resident data

On disk a cache is a folder (``np.savez`` archives cannot be memory-mapped, plain ``.npy`` files can)::

    <work dir>/cache/<name>_<split>_<size>_<fingerprint[:12]>/
        images.npy   uint8 N×size×size×3
        masks.npy    uint8 N×size×size
        meta.json    ids, name, split, num_classes, ignore_index, fingerprint, size, format, checksum

Choices:

* **Square, aspect ratio not kept.** Every sample is resized to ``size×size`` (one array needs one
  shape), as :func:`seglib.transforms.eval_transform` and :mod:`seglib.gpu_augment` do. Images use
  ``INTER_AREA`` when shrunk and ``INTER_LINEAR`` when enlarged; masks use nearest neighbour at pixel
  centres (:func:`seglib.masks.resize_mask`), so no label is invented. Random crops taken from the
  cache are cut from the ``size×size`` picture, not the full-resolution file: cache at a larger
  size if that matters.
* **Atomic.** A build writes into a hidden temporary sibling folder and ``os.replace``-s it into
  place once ``meta.json`` is written (:func:`seglib.utils.atomic_path`); an interrupted build leaves
  nothing at the final path (a killed process can leave a hidden ``.*.tmp`` folder, which is never
  read and may be deleted).
* **Damage is an error, not a silent rebuild.** A cache that cannot be read (truncated, edited)
  raises :class:`seglib.errors.DataError` naming the folder and saying to delete it; the next
  :func:`load_or_build_cache` then rebuilds it. ``meta.json`` holds a CRC-32 of both arrays, checked
  whenever a cache is opened (not when a DataLoader worker reopens it): a byte changed in place is
  found. The whole files are checked, not samples: 1000 images at 256 px (262 MB) take 0.7 s on a
  busy 2-core machine (zlib's CRC-32 hashes ~1.3 GB/s there, SHA-1 ~0.6 GB/s), once per run. A
  cache of an *older* version of the files, or of labels an older decoder made (the fingerprint also
  covers the spec's settings and the decoding code), is not damage: its fingerprint differs, so it
  lives at another path and is simply not used; one of an older cache format is rebuilt.
* **Space first.** A build checks the free space it needs and reserves the files' blocks
  (``posix_fallocate``) before writing: a full disk is one error naming the cache, not a ``SIGBUS``
  from a memory map on a full disk, and leaves no temporary folder.
* **Memory-mapped, copy-on-write.** :class:`CachedDataset` maps the arrays (``mmap_mode="c"``):
  opening costs the checksum only, DataLoader workers share the pages, and the arrays are writable in memory
  (so ``torch.from_numpy`` takes them without a warning) while the files are never modified.
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

from seglib.errors import ConfigError, DataError
from seglib.masks import resize_mask
from seglib.paths import work_dir
from seglib.utils import atomic_path, ensure_free_space

FORMAT = 2  # 2: meta.json holds the arrays' checksum
ARRAYS = ("images.npy", "masks.npy")

__all__ = ["CachedDataset", "build_cache", "cache_path", "load_or_build_cache", "open_cache",
           "resize_image", "resize_sample"]


def check_size(size: int) -> int:
    """``size`` as an int if it is a positive whole number of pixels (the square side), else ConfigError."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ConfigError(f"size must be a positive int (square side in pixels), got {size!r}")
    return int(size)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.") or "x"


def cache_path(ds, size: int) -> Path:
    """Default folder of ``ds``'s cache: ``work_dir()/cache/<name>_<split>_<size>_<fingerprint[:12]>``."""
    size = check_size(size)
    return (work_dir() / "cache"
            / f"{_slug(ds.name)}_{_slug(ds.split)}_{size}_{ds.fingerprint()[:12]}")


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` resized to ``size×size``: area when shrinking, bilinear when enlarging.

    Training data and inference inputs both go through this, so a model sees the same kind of picture.
    """
    size = check_size(size)
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return np.ascontiguousarray(image)
    interp = cv2.INTER_AREA if size <= h and size <= w else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=interp)


def resize_sample(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(image, mask)`` resized to ``size×size``: :func:`resize_image`, masks nearest."""
    return resize_image(image, size), resize_mask(np.ascontiguousarray(mask), (check_size(size),) * 2)


def _check_sample(ds, i: int, image, mask) -> None:
    image, mask = np.asarray(image), np.asarray(mask)
    ok = (image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
          and mask.dtype == np.uint8 and mask.shape == image.shape[:2])
    if not ok:
        sample = ds.ids[i] if i < len(ds.ids) else i
        raise DataError(None, f"{ds.name}/{ds.split} sample {sample!r} gave image {image.dtype} "
                        f"{image.shape} and mask {mask.dtype} {mask.shape}, expected uint8 HxWx3 "
                        "and uint8 HxW of the same size",
                        "fix the dataset's load() so it follows the dataset protocol")


def cache_bytes(n: int, size: int) -> int:
    """Disk space of a cache of ``n`` samples at ``size``: the two arrays and their headers."""
    return n * size * size * 4 + 2 * 128


def _allocate(path: Path) -> None:
    """Give ``path`` its disk blocks now: a full disk fails here (ENOSPC), not later as a ``SIGBUS``
    when the memory map is written. Without ``posix_fallocate`` (macOS, Windows, some file systems)
    the free-space check before the build stands in."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
    finally:
        os.close(fd)


def _open_array(path: Path, shape: tuple) -> np.memmap:
    """A new uint8 ``.npy`` of ``shape`` at ``path``, its blocks reserved, memory-mapped for writing."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    _allocate(path)
    return array


def _checksum(folder: Path) -> str:
    """CRC-32 of the two arrays' files, whole: catches a cache changed in place."""
    crc = 0
    for name in ARRAYS:
        with open(folder / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                crc = zlib.crc32(block, crc)
    return f"crc32:{crc:08x}"


def _write(ds, size: int, folder: Path) -> dict:
    """Decode every sample of ``ds`` into ``folder`` (which must be new); returns the metadata."""
    n = len(ds)
    start = time.perf_counter()
    folder.mkdir(parents=True)
    images = _open_array(folder / "images.npy", (n, size, size, 3))
    masks = _open_array(folder / "masks.npy", (n, size, size))
    for i in range(n):  # streamed to disk: memory stays at one sample, whatever N is
        image, mask = ds.load(i)
        _check_sample(ds, i, image, mask)
        images[i], masks[i] = resize_sample(image, mask, size)
    images.flush()
    masks.flush()
    del images, masks
    meta = {"format": FORMAT, "name": ds.name, "split": ds.split, "size": size, "n": n,
            "num_classes": int(ds.num_classes), "ignore_index": int(ds.ignore_index),
            "fingerprint": ds.fingerprint(), "ids": list(ds.ids), "checksum": _checksum(folder),
            "image_resize": "INTER_AREA when shrinking, INTER_LINEAR when enlarging",
            "mask_resize": "nearest (pixel centres)",
            "build_seconds": round(time.perf_counter() - start, 3)}
    for key in ("class_names", "palette"):
        value = getattr(ds, key, None)
        if value is not None:
            meta[key] = np.asarray(value).tolist()
    if len(meta["ids"]) != n:
        raise DataError(None, f"{ds.name}/{ds.split} has {n} samples but {len(meta['ids'])} ids",
                        "fix the dataset so that len(ds) == len(ds.ids)")
    (folder / "meta.json").write_text(json.dumps(meta))
    return meta


def build_cache(ds, size: int, path: str | Path | None = None) -> CachedDataset:
    """Decode ``ds`` at ``size×size`` into ``path`` (default :func:`cache_path`), atomically, and open it.

    An existing cache at ``path`` is replaced; anything else there is refused. The free space is
    checked first.
    """
    size = check_size(size)
    final = Path(path) if path is not None else cache_path(ds, size)
    if len(ds) == 0:
        raise DataError(None, f"{ds.name}/{ds.split} has no samples to cache",
                        "check the dataset folder and split")
    if final.exists() and not (final / "meta.json").is_file():
        raise DataError(final, "exists and is not a dataset cache", "pass another path, or delete it")
    needed = cache_bytes(len(ds), size)
    ensure_free_space(final, needed)
    with atomic_path(final, fsync=True, folder=True, size=needed) as tmp:  # replaces an older cache there
        _write(ds, size, tmp)
    return CachedDataset(final)


def open_cache(path: str | Path, *, mmap: bool = True) -> CachedDataset:
    """The cache in folder ``path``; a missing or damaged one raises :class:`DataError`."""
    return CachedDataset(path, mmap=mmap)


def load_or_build_cache(ds, size: int, path: str | Path | None = None) -> CachedDataset:
    """The cache of ``ds`` at ``size``: reused while ``ds.fingerprint()`` matches, else (re)built."""
    size = check_size(size)
    final = Path(path) if path is not None else cache_path(ds, size)
    if final.exists() and not _older_format(final):
        cache = CachedDataset(final)  # damaged → DataError naming the folder
        if (cache.fingerprint() == ds.fingerprint() and cache.size == size
                and cache.name == ds.name and cache.split == ds.split and len(cache) == len(ds)):
            return cache
    return build_cache(ds, size, final)


def _older_format(folder: Path) -> bool:
    """Whether ``folder``'s meta.json says an older cache format (rebuilt, not damage)."""
    try:
        return int(json.loads((folder / "meta.json").read_text())["format"]) < FORMAT
    except (OSError, ValueError, KeyError, TypeError):
        return False  # unreadable: CachedDataset names the damage


class CachedDataset:
    """A built cache; follows the dataset protocol (``len``, ``load(i)``, ``ids``, ``fingerprint()``)."""

    def __init__(self, path: str | Path, *, mmap: bool = True):
        self.path, self._mmap = Path(path), mmap
        self._open()

    def _damaged(self, problem: str) -> DataError:
        return DataError(self.path, f"damaged dataset cache: {problem}",
                         f"delete the folder (rm -r '{self.path}'); load_or_build_cache rebuilds it")

    def _open(self, verify: bool = True) -> None:
        if not self.path.is_dir():
            raise DataError(self.path, "no dataset cache here",
                            "build it with seglib.cache.load_or_build_cache(ds, size)")
        try:
            meta = json.loads((self.path / "meta.json").read_text())
            mode = "c" if self._mmap else None
            images = np.load(self.path / "images.npy", mmap_mode=mode, allow_pickle=False)
            masks = np.load(self.path / "masks.npy", mmap_mode=mode, allow_pickle=False)
            n, size = int(meta["n"]), int(meta["size"])
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, this seglib reads format {FORMAT}")
            missing = [k for k in ("name", "split", "num_classes", "ignore_index", "fingerprint", "ids",
                                   "checksum") if k not in meta]
            if missing:
                raise KeyError(f"meta.json lacks {', '.join(missing)}")
            ids, num_classes, ignore_index = [str(i) for i in meta["ids"]], int(meta["num_classes"]), \
                int(meta["ignore_index"])
            class_names = tuple(str(n) for n in meta["class_names"]) if "class_names" in meta else None
            palette = np.asarray(meta["palette"], dtype=np.uint8) if "palette" in meta else None
            if palette is not None and (palette.ndim != 2 or palette.shape[1] != 3):
                raise ValueError(f"its palette is {palette.shape}, not N×3 colours")
        except (OSError, ValueError, EOFError, KeyError, TypeError, OverflowError) as e:
            raise self._damaged(f"{type(e).__name__}: {e}") from e
        if images.dtype != np.uint8 or images.shape != (n, size, size, 3):
            raise self._damaged(f"images.npy is {images.dtype} {images.shape}, meta.json says "
                                f"uint8 {(n, size, size, 3)}")
        if masks.dtype != np.uint8 or masks.shape != (n, size, size):
            raise self._damaged(f"masks.npy is {masks.dtype} {masks.shape}, meta.json says "
                                f"uint8 {(n, size, size)}")
        if len(ids) != n:
            raise self._damaged(f"meta.json lists {len(ids)} ids for {n} samples")
        checksum = _checksum(self.path) if verify else meta["checksum"]
        if checksum != meta["checksum"]:
            raise self._damaged(f"its arrays changed since it was built (checksum {checksum}, "
                                f"meta.json says {meta['checksum']})")
        self.meta, self.images, self.masks = meta, images, masks
        self.ids: list[str] = ids
        self.name: str = meta["name"]
        self.split: str = meta["split"]
        self.size: int = size
        self.num_classes, self.ignore_index = num_classes, ignore_index
        if class_names is not None:
            self.class_names = class_names
        if palette is not None:
            self.palette = palette

    def fingerprint(self) -> str:
        """The fingerprint of the files the cache was built from."""
        return self.meta["fingerprint"]

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image size×size×3 uint8, mask size×size uint8)``, copies the caller may modify."""
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} out of range for a cache of {len(self)}")
        return np.array(self.images[i]), np.array(self.masks[i])

    def __repr__(self) -> str:
        return (f"CachedDataset({self.name!r}, split={self.split!r}, n={len(self)}, "
                f"size={self.size}, path='{self.path}')")

    # pickled (DataLoader workers under "spawn") as its path, reopened on the other side
    def __getstate__(self) -> dict:
        return {"path": str(self.path), "mmap": self._mmap}

    def __setstate__(self, state: dict) -> None:
        self.path, self._mmap = Path(state["path"]), state["mmap"]
        self._open(verify=False)  # checked when the main process opened it
