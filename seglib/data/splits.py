"""Deterministic train/val splits for datasets that publish none, and user split files.

A sample goes to ``val`` when a hash of its *group* (the video for TikTok frames, the image
otherwise) falls in the first ``val_fraction`` of the hash range. The rule needs no random state,
gives the same answer on every machine, and keeps its assignments when files are added or removed,
so a subset and the full dataset agree. Whole groups move together, so near-identical frames of
one video never straddle train and val.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from seglib.errors import DataError
from seglib.utils import write_atomic


def in_val(name: str, group: str, val_fraction: float) -> bool:
    """Whether ``group`` of dataset ``name`` belongs to the validation split."""
    bucket = int(hashlib.sha256(f"{name}:{group}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < val_fraction


def assign(name: str, ids: Iterable[str], split: str, val_fraction: float,
           group_of: Callable[[str], str] = lambda i: i) -> list[str]:
    """The ids of ``split`` ("train", "val" or "all") under the hash rule, in sorted order."""
    if split == "all":
        return sorted(ids)
    want_val = split == "val"
    return sorted(i for i in ids if in_val(name, group_of(i), val_fraction) == want_val)


def save_split(path: Path, splits: dict[str, list[str]], rule: str) -> None:
    """Write the realised split lists (atomically) so they can be read, diffed and reused."""
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps({"rule": rule, **splits}, indent=1)))


def read_split_file(path: Path, split: str, known: set[str]) -> list[str]:
    """The ids a user split file (``{"train": [...], "val": [...]}``) lists for ``split``."""
    try:
        table = json.loads(Path(path).read_text())
        ids = table[split]
    except FileNotFoundError as exc:
        raise DataError(path, "split file not found", "pass an existing JSON split file") from exc
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(path, f"not a split file with a {split!r} list ({exc})",
                        'write JSON like {"train": ["id1", ...], "val": [...]}') from exc
    missing = [i for i in ids if i not in known]
    if missing:
        raise DataError(path, f"{len(missing)} ids name no file in the dataset, e.g. {missing[:5]}",
                        "fix or regenerate the split file, or restore the missing files")
    twice = sorted(i for i, n in Counter(ids).items() if n > 1)
    if twice:
        raise DataError(path, f"the {split!r} list names {len(twice)} ids more than once, e.g. {twice[:5]}",
                        "list each id once")
    for other, listed in table.items():
        if other == split or not isinstance(listed, list):  # itself, or "rule" and other notes
            continue
        shared = sorted(set(ids) & set(listed))
        if shared:
            raise DataError(path, f"{len(shared)} ids are in both {split!r} and {other!r}, e.g. {shared[:5]}: "
                            "a model would be scored on images it trained on", "put each id in one list only")
    return list(ids)
