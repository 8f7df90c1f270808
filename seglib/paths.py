"""Where things live. Notebooks run with ``cwd=notebooks/``, so never guess with ``"../data"``.

``SEGLIB_DATA_DIR`` names a folder that holds the datasets under their publishers' folder names
(``PennFudanPed/``, ``CamVid/``, ...). Without it, ``data/`` in the repository is used.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FIGURES_DIR = REPO_ROOT / "figures"
SAMPLE_DATA_DIR = Path(__file__).resolve().parent / "sample_data"  # small datasets shipped with the package
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def data_dir() -> Path:
    """The datasets folder: ``$SEGLIB_DATA_DIR`` if set, else ``<repo>/data``."""
    env = os.environ.get("SEGLIB_DATA_DIR")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "data"


def work_dir() -> Path:
    """Where seglib writes what it derives (splits, caches, synthetic data): ``$SEGLIB_WORK_DIR``, else
    ``<repo>/data``.

    Kept apart from :func:`data_dir`, which may be a read-only shared copy.
    """
    env = os.environ.get("SEGLIB_WORK_DIR")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "data"


def display_path(path: str | Path) -> str:
    """``path`` as a reader of committed outputs should see it: under the data folder as
    ``$SEGLIB_DATA_DIR/...`` and under the work folder as ``$SEGLIB_WORK_DIR/...`` where those are set, inside
    the repository relative to it (``data/...``); anything else (a temporary folder, say) as its name alone."""
    path = Path(path).expanduser().resolve()
    named = [(folder(), f"${var}") for folder, var in ((data_dir, "SEGLIB_DATA_DIR"), (work_dir, "SEGLIB_WORK_DIR"))
             if os.environ.get(var)]  # unset, both are <repo>/data: shown as data/...
    for root, shown in (*named, (REPO_ROOT, ".")):
        if path == root or root in path.parents:
            return str(Path(shown) / path.relative_to(root))
    return f"<...>/{path.name}"
