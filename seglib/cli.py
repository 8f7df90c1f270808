"""The command line: ``python -m seglib COMMAND`` (or ``seglib COMMAND``).

Errors print as one line and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from seglib.errors import SeglibError


def cmd_datasets(args: argparse.Namespace) -> int:
    """List the known datasets and which are found locally, with sample counts."""
    from seglib.data import SPECS, find_folder
    from seglib.paths import data_dir

    print(f"data folder: {data_dir()} (set SEGLIB_DATA_DIR or pass --root to change)")
    print(f"{'name':17s} {'task':10s} {'classes':>7s}  {'found':32s} counts")
    for name, spec in SPECS.items():
        try:
            folder = find_folder(name, args.root)
        except SeglibError:
            print(f"{name:17s} {spec.task:10s} {spec.num_classes:7d}  {'no':32s} -")
            continue
        counts = ", ".join(f"{s} {len(spec.list_items(folder, s))}" for s in spec.splits
                           if spec.has_split(folder, s))
        print(f"{name:17s} {spec.task:10s} {spec.num_classes:7d}  {str(folder)[-32:]:32s} {counts}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Find (or download) a dataset, decode every sample, print counts and mask statistics."""
    from seglib.data import find_folder, get_spec
    from seglib.data.prepare import format_stats, prepare
    from seglib.download import download_dataset
    from seglib.paths import data_dir

    get_spec(args.dataset)
    try:
        find_folder(args.dataset, args.root)
    except SeglibError as missing:
        if args.dataset == "synthetic":
            raise
        print(f"{missing}\ntrying to download it...", file=sys.stderr)
        download_dataset(args.dataset, args.root or data_dir(), source=args.source)
    results = prepare(args.dataset, args.root, max_samples=args.max_samples)
    print(format_stats(args.dataset, results))
    problems = sum(len(r.problems) for r in results)
    if problems:
        print(f"error: {problems} samples failed the checks above", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seglib", description="The segmentation workbook's tools.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("datasets", help=cmd_datasets.__doc__)
    p.add_argument("--root", help="folder holding the datasets (default: $SEGLIB_DATA_DIR or data/)")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("prepare", help=cmd_prepare.__doc__)
    p.add_argument("dataset", nargs="?", default="pennfudan", help="dataset name (default pennfudan)")
    p.add_argument("--root", help="the dataset folder, or a folder holding it")
    p.add_argument("--source", help="a URL or a local archive to take instead of the official URL")
    p.add_argument("--max-samples", type=int, help="check only this many samples per split")
    p.set_defaults(func=cmd_prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SeglibError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
