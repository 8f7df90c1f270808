"""Re-execute notebooks top to bottom in a fresh kernel, write outputs in place, strip metadata.

    python scripts/run_notebooks.py                 # every notebook, full configuration
    python scripts/run_notebooks.py 03 04           # only those whose name starts with 03 / 04
    python scripts/run_notebooks.py --smoke 01      # the CI configuration (for a quick check)
    python scripts/run_notebooks.py --dest /tmp/nb 06   # outputs elsewhere, the committed notebooks untouched

The run sets ``SEGLIB_PUBLISH=1``: outputs are meant to be committed, so licensed images are
drawn as placeholders (see ``seglib.viz``). Afterwards ``nbstripout --keep-output --keep-count``
removes volatile metadata but keeps outputs and execution counts, which nbval needs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def merge_streams(nb) -> None:
    """Join each run of stdout (or stderr) outputs of a cell into one, as a reader sees them: the kernel splits
    a cell's printing into as many outputs as its timing happens to flush."""
    for cell in nb.cells:
        merged = []
        for out in cell.get("outputs", []):
            last = merged[-1] if merged else None
            if out.output_type == "stream" and last is not None and last.output_type == "stream" \
                    and last.name == out.name:
                last.text += out.text
            else:
                merged.append(out)
        if cell.cell_type == "code":
            cell.outputs = merged


def run(path: Path, timeout: int, dest: Path) -> float:
    """Execute ``path`` (in its own folder) and write it, with its outputs, to ``dest / path.name``."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    merge_streams(nb)
    dest.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest / path.name)
    subprocess.run([sys.executable, "-m", "nbstripout", "--keep-output", "--keep-count", str(dest / path.name)],
                   check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="*", help="run only notebooks whose name starts so")
    parser.add_argument("--smoke", action="store_true", help="CI configuration (SEGLIB_SMOKE=1)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    parser.add_argument("--dest", type=Path, default=NOTEBOOKS,
                        help="write the executed notebooks here (default: in place)")
    args = parser.parse_args()
    os.environ["SEGLIB_PUBLISH"] = "1"
    os.environ["SEGLIB_SMOKE"] = "1" if args.smoke else "0"
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.pop("MPLBACKEND", None)
    paths = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")
                   if not args.prefixes or any(p.name.startswith(x) for x in args.prefixes))
    if not paths:
        sys.exit(f"no notebook in {NOTEBOOKS} matches {args.prefixes}")
    for path in paths:
        print(f"{path.name}: {run(path, args.timeout, args.dest):.0f} s", flush=True)


if __name__ == "__main__":
    main()
