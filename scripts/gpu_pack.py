"""Pack what a lent GPU machine lacks (wheels, datasets) into ignored folders that a `run` carries.

    python scripts/gpu_pack.py wheels                  # .whl/: albumentations + notebook kernel, for Python 3.12
    python scripts/gpu_pack.py data tiktok msrc        # .carry/data/<original folders>, with a size check
    python scripts/gpu_pack.py data camvid:train,trainannot --dest .carry1   # part of a dataset

The GPU machine has torch, numpy, scipy, opencv and matplotlib but not albumentations or a Jupyter
kernel; nothing can be downloaded there. One call carries at most 64 MiB (tracked files included),
so datasets go in bundles that fit: see docs/GPU_RUNS.md for the plan. Both folders are ignored by
git (`.git/info/exclude`); the licensed data never enters the repository.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUDGET = 64 * 2**20
WHEELS = ["albumentations==2.0.8", "nbclient", "ipykernel", "ipywidgets", "nbstripout"]
# already in the GPU image (KINDS.md, 2026-11-17): carrying a second version would stop the install
PRESENT = {"attrs", "numpy", "opencv_python_headless", "packaging", "psutil", "pygments", "python_dateutil",
           "pyyaml", "scipy", "typing_extensions", "tzdata", "platformdirs"}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "any"]


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def tracked_size() -> int:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    return sum((REPO / f.decode()).stat().st_size for f in files if f and (REPO / f.decode()).is_file())


def exclude(dest: Path) -> None:
    """Add ``/dest/`` to ``.git/info/exclude`` (when inside the checkout) so git never holds it."""
    if dest.resolve().parent != REPO:
        return
    name, path = dest.name, REPO / ".git" / "info" / "exclude"
    lines = path.read_text().splitlines() if path.exists() else []
    if f"/{name}/" not in lines:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([*lines, f"/{name}/"]) + "\n")


def pack_wheels(dest: Path) -> None:
    exclude(dest)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version",
                    "3.12", "--implementation", "cp", *platforms, "-d", str(dest), *WHEELS], check=True)
    for wheel in dest.glob("*.whl"):
        if wheel.name.split("-")[0].lower() in PRESENT:
            wheel.unlink()


def pack_data(names: list[str], dest: Path, root: Path | None) -> None:
    """Copy each dataset (``name``, or ``name:sub1,sub2`` for some of its subfolders) to ``dest/data``."""
    from seglib.data import find_folder, get_spec

    exclude(dest)
    for entry in names:
        name, _, parts = entry.partition(":")
        source = find_folder(name, root)
        target = dest / "data" / get_spec(name).folder
        for part in parts.split(",") if parts else [""]:
            if (source / part).is_file():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / part, target / part)
            elif not (target / part).exists():
                shutil.copytree(source / part, target / part)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("wheels", "data"))
    parser.add_argument("datasets", nargs="*", help="with 'data': dataset names (seglib.data)")
    parser.add_argument("--root", type=Path, help="where the datasets are (default $SEGLIB_DATA_DIR)")
    parser.add_argument("--dest", type=Path, help="default .whl (wheels) or .carry (data)")
    args = parser.parse_args()
    dest = args.dest or REPO / (".whl" if args.what == "wheels" else ".carry")
    if args.what == "wheels":
        pack_wheels(dest)
    else:
        pack_data(args.datasets, dest, args.root)
    total = tracked_size() + size_of(dest)
    print(f"{dest}: {size_of(dest) / 2**20:.1f} MiB; with the tracked files {total / 2**20:.1f} of 64 MiB")
    if total > BUDGET:
        print("error: over one call's 64 MiB: carry fewer datasets per call (docs/GPU_RUNS.md)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
