"""Small helpers every notebook uses: seeding, device choice, parameter counts."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from seglib.errors import ConfigError, DataError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_device(name: str | torch.device | None = None) -> torch.device:
    """``name`` checked against what this machine has; without it ``cuda`` when a GPU is visible, else ``cpu``."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a device: use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ConfigError(f"--device {name}: this machine has {count or 'no'} CUDA GPU{'s' * (count != 1)}; "
                              "use --device cpu, or leave --device out to pick one")
    return device


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a hidden temporary sibling, then rename it onto ``path`` in one step.

    A crash or ``kill -9`` leaves either the old file or the new one, never half of one.
    (``seglib.checkpoint.save_checkpoint`` does the same, with an fsync, for checkpoints.)
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if path.is_dir():
            raise DataError(path, "is a folder", "pass a file name")
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise DataError(path, f"cannot write it ({exc.strerror or exc})",
                        "choose a file name in a folder you can write to") from exc
    finally:
        with contextlib.suppress(OSError):  # nothing to remove, or no folder to remove it from
            tmp.unlink(missing_ok=True)
    return path
