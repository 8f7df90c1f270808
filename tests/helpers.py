"""What several test files share: the engine tests' tiny run, the command line in a fresh interpreter, and a
copy of the synthetic dataset to damage."""

import shutil
import subprocess
import sys
from pathlib import Path

from seglib.data import SPECS, find_folder
from seglib.train_config import TrainConfig

# TrainConfig.smoke() on GPU-resident batches (augmented by GpuAugment, on the CPU here) at a rate that learns in
# its few steps
TINY = TrainConfig.smoke(lr=1e-2, loader="gpu")

SEGLIB = [sys.executable, "-m", "seglib"]


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """``python -m seglib ARGS`` in a fresh interpreter, in ``cwd`` (where a default output folder lands): the exit
    status, stdout and stderr as a user sees them."""
    return subprocess.run([*SEGLIB, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


def synthetic_copy(root: Path) -> Path:
    """A copy of the generated synthetic dataset, ``root/synthetic_shapes/{images,masks}``."""
    folder = root / SPECS["synthetic"].folder
    shutil.copytree(find_folder("synthetic"), folder)
    return folder
