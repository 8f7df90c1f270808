"""The dataset protocol: a spec (what a dataset is and how its files decode) and a loaded split."""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seglib.data.io import read_image, read_label
from seglib.errors import DataError
from seglib.masks import IGNORE_INDEX, validate_mask  # seglib.data re-exports IGNORE_INDEX


@dataclass(frozen=True)
class Item:
    """One sample on disk. ``mask`` is None where the label lives in the image file itself."""

    id: str
    image: Path
    mask: Path | None


class DatasetSpec:
    """What a dataset is: its folder, classes, colours, splits and how its labels decode.

    Subclasses set the class attributes and implement :meth:`split_items`; most override
    :meth:`decode` only.
    """

    name: str
    title: str
    folder: str                    # relative to the data dir, in the publisher's layout
    marker: str                    # a path (or glob pattern) inside ``folder`` that proves the dataset is there
    task: str                      # "binary", "multiclass" or "boundary"
    class_names: tuple[str, ...]
    palette: np.ndarray            # (num_classes, 3) uint8 display colours
    colour_masks: bool = False     # masks painted in class colours (palette PNGs are read as RGB)
    splits: tuple[str, ...] = ("train", "val")
    split_rule: str = "official"
    split_dir: str = "{split}"     # a folder whose presence means the split is on disk
    redistributable: bool = False  # may its images appear in committed outputs?
    attribution: str = ""          # the credit line under any figure that shows them (redistributable sets)
    sample: str | None = None      # a small copy shipped in seglib/sample_data/, the fallback of find_folder
    left_out: dict[str, str] = {}  # ids whose label the publisher got wrong -> why (hash splits skip them)
    homepage: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def is_present(self, folder: Path) -> bool:
        if "*" in self.marker:  # a pattern: some file must match it
            return next(Path(folder).glob(self.marker), None) is not None
        return (folder / self.marker).exists()

    def has_split(self, folder: Path, split: str) -> bool:
        return split == "all" or (folder / self.split_dir.format(split=split)).is_dir()

    def list_items(self, folder: Path, split: str) -> list[Item]:
        """The samples of ``split``; ``"all"`` joins every split on disk."""
        if split == "all":
            return [i for s in self.splits if self.has_split(folder, s)
                    for i in self.list_items(folder, s)]
        return self.split_items(folder, split)

    def split_items(self, folder: Path, split: str) -> list[Item]:
        raise NotImplementedError

    def decode(self, raw: np.ndarray, item: Item, image_hw: tuple[int, int],
               report: Counter | None) -> np.ndarray:
        """Raw label file values → uint8 label map in {0..C-1, 255}. Default: stored as is."""
        return raw

    def load(self, item: Item, report: Counter | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(image HxWx3 uint8, labels HxW uint8)``, validated against the image."""
        image = read_image(item.image)
        labels = self.decode(read_label(item.mask, self.colour_masks), item, image.shape[:2], report)
        decoded = type(self).decode is not DatasetSpec.decode  # its own decoder maps void: 0/255 may be real
        return image, validate_mask(labels, num_classes=self.num_classes, image_size=image.shape[:2],
                                    path=item.mask, decoded=decoded)


def spec_settings(spec) -> list:
    """A spec's plain settings (class names, palette, threshold, left-out ids, ...), its own and its classes'."""
    found = {k: v for cls in reversed(type(spec).__mro__) for k, v in vars(cls).items()
             if not k.startswith("_") and not callable(v) and not isinstance(v, (property, classmethod, staticmethod))}
    return sorted({**found, **vars(spec)}.items())


@functools.cache
def decoder_source() -> str:
    """A hash of the code that turns files into labels (the specs, the mask functions, the readers)."""
    here = Path(__file__).resolve().parent
    return hashlib.sha1(b"".join(p.read_bytes() for p in (here / "specs.py", here / "io.py",
                                                           here.parent / "masks.py"))).hexdigest()


class SegmentationDataset:
    """One split of one dataset: ``len(ds)``, ``ds.load(i) -> (image, labels)``."""

    def __init__(self, spec: DatasetSpec, folder: Path, split: str, items: list[Item]):
        if not items:
            raise DataError(folder, f"no {split!r} samples found for {spec.name}",
                            f"check the layout with python -m seglib prepare {spec.name}")
        self.spec, self.folder, self.split, self.items = spec, folder, split, items
        self.report: Counter = Counter()  # quirks met while decoding (cropped masks, 1-bit, ...)

    name = property(lambda self: self.spec.name)
    num_classes = property(lambda self: self.spec.num_classes)
    class_names = property(lambda self: self.spec.class_names)
    palette = property(lambda self: self.spec.palette)
    ignore_index = IGNORE_INDEX

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"SegmentationDataset({self.name!r}, split={self.split!r}, n={len(self)}, folder='{self.folder}')"

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.spec.load(self.items[i], self.report)

    def fingerprint(self) -> str:
        """Changes whenever a file is added, removed, resized or touched, and whenever the labels would be decoded
        otherwise (the spec's settings, or seglib's decoding code): a cache never serves labels of an old decoder."""
        h = hashlib.sha1(self.name.encode())
        h.update(f"{type(self.spec).__qualname__}:{spec_settings(self.spec)!r}:{decoder_source()};".encode())
        for item in self.items:
            for path in (item.image, item.mask):
                if path is not None:
                    st = path.stat()
                    h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        return h.hexdigest()
