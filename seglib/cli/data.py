"""``seglib datasets`` (what is known, what is found) and ``seglib prepare`` (find or download a dataset and
check every sample); ``ensure_dataset`` is how ``train`` finds its data too."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seglib.cli.flags import numbers
from seglib.errors import DataError, SeglibError


def cmd_datasets(args: argparse.Namespace) -> int:
    """List the known datasets and which are found locally, with sample counts."""
    from seglib.data import SPECS, find_folder, shipped_sample
    from seglib.paths import data_dir

    if args.root is not None and not Path(args.root).is_dir():
        raise DataError(args.root, "folder not found", "pass the folder that holds the datasets")
    print(f"data folder: {args.root or data_dir()} (set SEGLIB_DATA_DIR or pass --root to change)")
    print(f"{'name':17s} {'task':10s} {'classes':>7s}  {'samples':26s} found in")
    for name, spec in SPECS.items():
        try:
            folder = find_folder(name, args.root, sample=name != "synthetic")  # listing generates nothing
        except SeglibError:
            missing = "generated on first use" if name == "synthetic" else _not_found(name, args.root)
            print(f"{name:17s} {spec.task:10s} {spec.num_classes:7d}  {'-':26s} {missing}")
            continue
        try:
            counts = ", ".join(f"{s} {len(spec.list_items(folder, s))}" for s in spec.splits
                               if spec.has_split(folder, s))
        except SeglibError as exc:
            counts = f"broken: {exc}"
        where = "the sample shipped with seglib" if folder == shipped_sample(name) else str(folder)
        print(f"{name:17s} {spec.task:10s} {spec.num_classes:7d}  {counts:26s} {where}")
    return 0


def _not_found(name: str, root: str | None) -> str:
    """``"not found"``, or where a folder of the dataset's name holds another layout (:func:`refuse_other_layout`)."""
    from seglib.data import refuse_other_layout

    try:
        refuse_other_layout(name, root)
    except DataError as exc:
        return f"not found: {exc.path} holds another layout (prepare {name} says more)"
    return "not found"


def ensure_dataset(name: str, root: str | None, source: str | None = None):
    """The dataset's folder: found locally (a shipped sample too, unless ``source`` is given), or downloaded
    (from ``source`` or the official URL)."""
    from seglib.data import find_folder, get_spec, refuse_other_layout
    from seglib.download import download_dataset
    from seglib.paths import data_dir

    spec = get_spec(name)
    try:
        folder = find_folder(name, root, sample=source is None)
    except SeglibError:
        if name == "synthetic" or (root and source is None and not Path(root).expanduser().is_dir()):
            raise  # nothing to download, or a mistyped --root: only an explicit --source creates it
        if source is None:  # a folder of the dataset's name in another layout is not downloaded into
            refuse_other_layout(name, root)
        print(f"{name} not found locally: " + (f"taking --source {source}" if source else "downloading it"), flush=True)
        return download_dataset(name, root or data_dir(), source=source)
    if source is None:
        return folder
    # found, and --source given: download_dataset adds another archive of the dataset, or refuses; never ignores it
    parts = Path(spec.folder).parts
    if folder.parts[-len(parts):] != parts:  # --root is the dataset under another name: its parents are not ours
        raise DataError(folder, f"already holds {spec.title} (under another name than '{spec.folder}'), "
                        f"so --source {source} would not be used", "leave out --source, or rename the folder to "
                        f"'{spec.folder}' to add an archive to it")
    return download_dataset(name, folder.parents[len(parts) - 1], source=source)


def cmd_prepare(args: argparse.Namespace) -> int:
    """Find (or download) a dataset, decode every sample, print counts and mask statistics."""
    from seglib.data.prepare import format_stats, prepare

    root = ensure_dataset(args.dataset, args.root, args.source)
    if args.source and Path(args.source).expanduser().is_dir() and \
            root.resolve().is_relative_to(Path(args.source).expanduser().resolve()):
        print(f"note: {root} is used where it is (a folder given as --source is checked, not copied): "
              f"pass --root {root} to train on it", file=sys.stderr)
    results = prepare(args.dataset, root, max_samples=args.max_samples)
    print(format_stats(args.dataset, results, root))
    problems = sum(len(r.problems) for r in results)
    if problems:
        print(f"error: {problems} samples failed the checks above. Fix: repair or replace each file named "
              "on a PROBLEM: line (re-download the dataset if many), then run prepare again", file=sys.stderr)
        return 1
    return 0


def add_data_parsers(sub) -> None:
    p = sub.add_parser("datasets", help=cmd_datasets.__doc__)
    p.add_argument("--root", help="folder holding the datasets (default: $SEGLIB_DATA_DIR or data/)")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("prepare", help=cmd_prepare.__doc__)
    p.add_argument("dataset", nargs="?", default="pennfudan", help="dataset name (default pennfudan)")
    p.add_argument("--root", help="the dataset folder, or a folder holding it")
    p.add_argument("--source", help="a URL or a local archive to take instead of the official URL, or a folder "
                   "(tiktok: the release's per-video folders <video>/{images,masks}/, copied into "
                   "tiktok_person/{images,masks}/<video>_<frame>.png)")
    p.add_argument("--max-samples", type=numbers().count, help="check only this many samples per split")
    p.set_defaults(func=cmd_prepare)
