"""Datasets: one registry for every dataset of the workbook, found on disk or downloaded.

>>> ds = load_dataset("camvid", "train")          # finds $SEGLIB_DATA_DIR/CamVid
>>> image, labels = ds.load(0)                     # HxWx3 uint8, HxW uint8 (255 = ignore)
>>> pets = load_dataset("pets", "val")             # the full copy if found, else the sample shipped with seglib
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import NamedTuple

from seglib.data.base import IGNORE_INDEX, DatasetSpec, Item, SegmentationDataset
from seglib.data.specs import SPECS, read_bsds_ground_truth
from seglib.data.splits import read_split_file
from seglib.errors import ConfigError, DataError, SeglibError
from seglib.paths import SAMPLE_DATA_DIR, data_dir, display_path, work_dir

DATASET_NAMES = tuple(SPECS)
PERSON_DATASETS = ("tiktok", "pennfudan", "synthetic")  # person/background data, best first

__all__ = ["DATASET_NAMES", "IGNORE_INDEX", "SPECS", "DatasetSpec", "Item", "SegmentationDataset",
           "PERSON_DATASETS", "PersonData", "available_datasets", "find_folder", "get_spec", "load_dataset",
           "person_dataset", "read_bsds_ground_truth", "shipped_sample"]


def get_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name``; an unknown name lists the known ones."""
    try:
        return SPECS[name]
    except KeyError:
        pass
    by_folder = {Path(spec.folder).name.lower(): known for known, spec in SPECS.items()}
    close = difflib.get_close_matches(str(name).lower(), [*SPECS, *by_folder], n=1, cutoff=0.75)
    guess = f"did you mean {by_folder.get(close[0], close[0])!r}? " if close else ""
    raise ConfigError(f"unknown dataset {name!r}; {guess}choose one of: {', '.join(SPECS)}") from None


def shipped_sample(name: str) -> Path | None:
    """The folder of the small copy of dataset ``name`` shipped with seglib (publisher's layout), if any."""
    spec = get_spec(name)
    return SAMPLE_DATA_DIR / spec.sample if spec.sample else None


_ANNOUNCED: set[str] = set()


def _take_sample(spec: DatasetSpec, base: Path) -> Path:
    """The shipped sample, announced in one line, once per dataset and process."""
    folder = shipped_sample(spec.name)
    if spec.name not in _ANNOUNCED:
        _ANNOUNCED.add(spec.name)
        count = sum(1 for _ in spec.list_items(folder, "all"))
        print(f"{spec.name}: no full copy in {display_path(base / spec.folder)}: using the {count}-photo sample "
              f"shipped with seglib ({display_path(folder)})")
    return folder


def find_folder(name: str, root: str | Path | None = None, *, sample: bool = True) -> Path:
    """The dataset's folder in its publisher's layout.

    ``root`` may be the dataset folder itself or a folder holding it under its original name;
    without it, ``$SEGLIB_DATA_DIR`` (or ``<repo>/data``) is searched, and a dataset with a sample
    shipped with seglib (``pets``) falls back to it unless ``sample`` is false. The synthetic dataset
    is generated on first use (not when ``sample`` is false: DataError until then).
    """
    spec = get_spec(name)
    if spec.name == "synthetic":
        base = Path(root).expanduser() if root else data_dir()
        given = [base, base / spec.folder] if root else [base / spec.folder]
        folder = next((c for c in given if spec.is_present(c)), work_dir() / spec.folder)
        if not spec.is_present(folder):
            if not sample:
                raise DataError(folder, f"{spec.title} not generated yet", "it is generated on first use")
            spec.generate(folder)
        return folder
    base = Path(root).expanduser() if root else data_dir()
    if root and not base.is_dir():
        raise DataError(base, "folder not found", "pass an existing folder with --root")
    for candidate in (base / spec.folder, base):
        if spec.is_present(candidate):
            return candidate
    if spec.sample and sample and not root:
        return _take_sample(spec, base)
    raise DataError(base / spec.folder, f"{spec.title} not found",
                    f"get it from {spec.homepage} (python -m seglib prepare {name} downloads it "
                    f"where a public URL exists) and put its '{spec.folder}' folder under "
                    f"{base}, or point SEGLIB_DATA_DIR / --root at the folder that holds it")


def refuse_other_layout(name: str, root: str | Path | None) -> None:
    """Before a download into it: a folder under the dataset's own name that holds files, but not in the
    publisher's layout (another project's ``train_images/``, Kaggle's CamVid as ``camvid``), is named, with the
    dataset it is laid out as when one matches; never taken as missing and downloaded into. Not for a dataset
    published in several archives (Cityscapes, pets), whose folder lacks the marker until the last one is in."""
    from seglib.download import SOURCES

    spec = get_spec(name)
    if len(SOURCES.get(name, ())) > 1:
        return
    base, parts = Path(root).expanduser() if root else data_dir(), Path(spec.folder).parts
    for folder in (base / spec.folder, base):
        if folder.parts[-len(parts):] == parts and folder.is_dir() and any(folder.iterdir()):
            hint = next((f"it is laid out as {other}: pass --dataset {other} --root {folder}; or "
                         for other in SPECS if other not in (name, "synthetic") and _laid_out_as(other, folder)), "")
            raise DataError(folder, f"holds files, but not {spec.title} in its publisher's layout (no "
                            f"'{spec.marker}' in it)", f"{hint}lay it out as the README's dataset table says, or "
                            "move it aside to download a fresh copy")


def _laid_out_as(name: str, folder: Path) -> bool:
    """Whether ``folder`` holds dataset ``name`` in its layout: its marker, and samples it can list."""
    try:
        return SPECS[name].is_present(folder) and bool(SPECS[name].list_items(folder, "all"))
    except SeglibError:
        return False


def dataset_around(path: str | Path) -> tuple[str, Path] | None:
    """``(name, folder)`` of a dataset whose folder is ``path`` or holds it: a folder under its original name
    (``CamVid``, ``PennFudanPed``, ...) with the dataset's marker inside; None when there is none. Outputs are
    never written there (a prediction over a mask folder would pass for ground truth)."""
    target = Path(path).expanduser().resolve()
    for folder in (target, *target.parents):
        for name, spec in SPECS.items():
            if folder.name == Path(spec.folder).name and spec.is_present(folder):
                return name, folder
    return None


def _spread(items: list[Item], n: int | None) -> list[Item]:
    """``n`` items (all, if there are fewer) spread evenly over the list, the first one included."""
    if n is None or len(items) <= n:
        return items
    return [items[i * len(items) // n] for i in range(n)]


def load_dataset(name: str, split: str = "train", root: str | Path | None = None, *,
                 split_file: str | Path | None = None,
                 max_samples: int | None = None) -> SegmentationDataset:
    """One split (``train``, ``val``, ``test`` where published, or ``all``) of dataset ``name``.

    ``split_file`` replaces the built-in split with a JSON file ``{"train": [ids], "val": [ids]}`` (and
    ``"test"``, for any dataset); ``all`` is still every sample.
    """
    spec = get_spec(name)
    if split_file is not None and split != "all":  # the file's list (read_split_file names a missing one)
        folder = find_folder(name, root)
        by_id = {item.id: item for item in spec.list_items(folder, "all")}
        items = [by_id[i] for i in read_split_file(Path(split_file), split, set(by_id))]
    else:
        if split not in (*spec.splits, "all"):
            raise ConfigError(f"dataset {name!r} has no split {split!r}; "
                              f"choose one of: {', '.join((*spec.splits, 'all'))}")
        folder = find_folder(name, root)
        if not spec.has_split(folder, split):
            raise DataError(folder / spec.split_dir.format(split=split), f"the {split!r} split is not here",
                            f"choose a split that is present (python -m seglib prepare {name} lists them)")
        items = spec.list_items(folder, split)
    return SegmentationDataset(spec, folder, split, _spread(items, max_samples))


class PersonData(NamedTuple):
    name: str
    folder: Path


def _train_and_val_folder(name: str, root: str | Path | None) -> Path:
    """The folder of dataset ``name`` if both its train and val splits load (``DataError`` otherwise)."""
    folder = load_dataset(name, "train", root, max_samples=1).folder
    load_dataset(name, "val", root, max_samples=1)
    return folder


def available_datasets(*names: str, root: str | Path | None = None, verbose: bool = True) -> tuple[str, ...]:
    """Those of ``names`` whose train and val splits load, printing one line per dataset missing.

    >>> scenes = available_datasets("camvid", "msrc")   # the sections on the others are skipped
    """
    found = []
    for name in names:
        try:
            _train_and_val_folder(name, root)
            found.append(name)
        except DataError as err:
            if verbose:
                print(f"{name}: not available ({err.problem})")
    return tuple(found)


def person_dataset(root: str | Path | None = None, *, verbose: bool = True) -> PersonData:
    """The first of :data:`PERSON_DATASETS` whose train and val splits load: TikTok, else Penn-Fudan, else the
    synthetic shapes (generated when missing; not person data, but the same code runs on it).

    Prints one line per dataset skipped, with the reason, and one for the choice.

    >>> person = person_dataset().name
    """
    for name in PERSON_DATASETS:
        try:
            folder = _train_and_val_folder(name, root)
        except DataError as err:
            if name == PERSON_DATASETS[-1]:
                raise
            if verbose:
                print(f"person data: {name} skipped ({err.problem})")
            continue
        if verbose:
            print(f"person data: {name} ({display_path(folder)})")
        return PersonData(name, folder)
