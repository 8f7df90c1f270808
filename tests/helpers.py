"""What several test files share: the engine tests' tiny run, the command line in a fresh interpreter, a
copy of the synthetic dataset to damage, and tiny image/mask pairs (and a Kaggle CamVid) written on the spot."""

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from seglib.data import SPECS, find_folder
from seglib.data.specs import CAMVID32_COLOURS
from seglib.synthetic import make_sample
from seglib.data.splits import in_val
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


def write_png_pairs(image_dir: Path, mask_dir: Path, stems, mask_name: str = "{}.png", size: int = 8) -> None:
    """Tiny pairs: a ``size``×``size`` RGB PNG ``image_dir/STEM.png`` and a 0/255 mask ``mask_dir/mask_name``."""
    rng = np.random.default_rng(0)
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(image_dir / f"{stem}.png")
        Image.fromarray(np.where(rng.random((size, size)) > 0.5, 255, 0).astype(np.uint8)).save(
            mask_dir / mask_name.format(stem))


def groups_in_both_splits(dataset: str, candidates, n_train: int = 2, n_val: int = 1) -> list[str]:
    """The first ``n_train`` groups (videos, images) of ``candidates`` that the hash split puts in train and the first
    ``n_val`` it puts in val: tiny datasets whose splits are never empty."""
    val = [g for g in candidates if in_val(dataset, g, SPECS[dataset].val_fraction)]
    train = [g for g in candidates if g not in val]
    return train[:n_train] + val[:n_val]


def write_camvid32(folder, splits=("train", "val"), size=(24, 32)):
    """The Kaggle CamVid layout: class_dict.csv (spaces after commas, as Kaggle's), SPLIT/ID.png and
    SPLIT_labels/ID_L.png colour masks; returns the label maps written, by split."""
    folder.mkdir(parents=True)
    (folder / "class_dict.csv").write_text("\ufeffname,r,g,b\n" + "".join(  # a BOM and a blank last line too
        f"{name},{r}, {g}, {b}\n" for name, (r, g, b) in CAMVID32_COLOURS.items()) + "  \n", encoding="utf-8")
    written = {}
    for k, split in enumerate(splits):
        (folder / split).mkdir()
        (folder / f"{split}_labels").mkdir()
        image, shapes = make_sample(k, size)
        labels = np.array([30, 17, 31, 21], np.uint8)[shapes]  # Void, Road, Wall, Sky in class_dict order
        Image.fromarray(image).save(folder / split / f"0001TP_{k:06d}.png")
        colours = np.array(list(CAMVID32_COLOURS.values()), np.uint8)
        Image.fromarray(colours[labels]).save(folder / f"{split}_labels" / f"0001TP_{k:06d}_L.png")
        written[split] = labels
    return written


def free_port() -> int:
    """A TCP port nobody listens on now, for a torchrun rendezvous (a fixed one fails when it is taken)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
