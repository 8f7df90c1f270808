"""Check a dataset end to end: every file decodes, every mask fits its image; counts and stats."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seglib.data import find_folder, get_spec, load_dataset
from seglib.data.splits import save_split
from seglib.errors import SeglibError
from seglib.paths import work_dir


@dataclass
class SplitStats:
    """What one split holds: sample count, size range, pixels per class, quirks and problems."""

    split: str
    count: int = 0
    min_hw: tuple[int, int] | None = None
    max_hw: tuple[int, int] | None = None
    class_pixels: np.ndarray | None = None
    ignored_pixels: int = 0
    quirks: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    suspects: list[str] = field(default_factory=list)  # binary masks almost all foreground: likely broken


SUSPECT_SHARE = 0.99  # a binary mask whose labelled pixels are at least this much foreground is reported


def inspect_split(name: str, split: str, root: str | Path | None = None,
                  max_samples: int | None = None) -> SplitStats:
    """Decode every sample of a split; collect stats, and problems instead of stopping at one. For a binary
    dataset, the masks that are almost all foreground (``SUSPECT_SHARE``) are listed to be looked at: a photo
    is rarely all person, and a mask saved inverted or filled in looks like that."""
    ds = load_dataset(name, split, root, max_samples=max_samples)
    stats = SplitStats(split, class_pixels=np.zeros(ds.num_classes, np.int64))
    hws = []
    for i in range(len(ds)):
        try:
            _, labels = ds.load(i)
        except SeglibError as exc:
            stats.problems.append(str(exc))
            continue
        hws.append(labels.shape)
        counts = np.bincount(labels.ravel(), minlength=256)
        stats.class_pixels += counts[: ds.num_classes]
        stats.ignored_pixels += int(counts[ds.ignore_index])
        labelled = counts[: ds.num_classes].sum()
        if ds.spec.task == "binary" and labelled and counts[1] >= SUSPECT_SHARE * labelled:
            stats.suspects.append(ds.ids[i])
    stats.count = len(ds)
    if hws:
        stats.min_hw = tuple(np.min(hws, axis=0).tolist())
        stats.max_hw = tuple(np.max(hws, axis=0).tolist())
    stats.quirks = ds.report
    return stats


def prepare(name: str, root: str | Path | None = None,
            max_samples: int | None = None) -> list[SplitStats]:
    """Inspect every split present; save the realised split lists for hash-split datasets."""
    spec = get_spec(name)
    folder = find_folder(name, root)
    results = [inspect_split(name, s, folder, max_samples) if spec.has_split(folder, s)
               else SplitStats(s) for s in spec.splits]
    if spec.split_rule != "official":
        lists = {s: load_dataset(name, s, folder).ids for s in ("train", "val")}
        save_split(work_dir() / "splits" / f"{name}.json", lists, spec.split_rule)
    return results


def format_stats(name: str, results: list[SplitStats], folder: Path | None = None) -> str:
    """A readable report: one block per split, class frequencies as percentages; the samples the spec leaves
    out, those in ``folder`` only when it is given."""
    spec = get_spec(name)
    lines = [f"{spec.title} ({name}): {spec.task}, {spec.num_classes} classes, "
             f"split rule: {spec.split_rule}"]
    present = {item.id for item in spec.all_items(folder)} if folder is not None and spec.left_out else None
    lines += [f"  left out: {item} ({why})" for item, why in spec.left_out.items()
              if present is None or item in present]
    for r in results:
        if r.count == 0:
            lines.append(f"  {r.split:5s}: not present")
            continue
        lines.append(f"  {r.split:5s}: {r.count} samples, sizes {r.min_hw} .. {r.max_hw} (HxW)")
        total = r.class_pixels.sum() + r.ignored_pixels
        if total:
            freqs = ", ".join(f"{c} {100 * n / total:.1f}%" for c, n in zip(spec.class_names, r.class_pixels))
            lines.append(f"         pixels: {freqs}, ignore {100 * r.ignored_pixels / total:.1f}%")
        else:
            lines.append("         pixels: none (no mask of this split could be read; see the problems below)")
        for quirk, n in sorted(r.quirks.items()):
            lines.append(f"         note: {quirk}: {n}")
        if r.suspects:
            shown = ", ".join(r.suspects[:5]) + (f" and {len(r.suspects) - 5} more" if len(r.suspects) > 5 else "")
            lines.append(f"         check: {len(r.suspects)} masks are {SUSPECT_SHARE:.0%} or more "
                         f"{spec.class_names[1]} (likely broken; look at them): {shown}")
        for p in r.problems:
            lines.append(f"         PROBLEM: {p}")
    return "\n".join(lines)
