"""Small helpers every notebook uses: seeding, device choice, parameter counts, atomic writes.

torch is imported where it is used, so that modules which only write files (downloads, caches)
can use :func:`atomic_path` without loading it.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from seglib.errors import ConfigError, DataError

if TYPE_CHECKING:
    import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_device(name: str | torch.device | None = None) -> torch.device:
    """``name`` checked against what this machine has; without it ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

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


# ----------------------------------------------------------------------------------------------
# atomic writes


def _sibling(path: Path, kind: str) -> Path:
    """A hidden, unique name beside ``path``: ``.<name>.<pid>-<random>.<kind>``."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.{kind}")


def _remove(path: Path) -> None:
    """Delete a file or a folder tree if it is there; a failure to delete is ignored."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):  # nothing to remove, or no folder to remove it from
            path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush ``path`` to disk: the file, or every file in the folder."""
    for file in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _move_into_place(tmp: Path, path: Path) -> None:
    """``os.replace(tmp, path)``; a folder also replaces whatever is at ``path`` (moved aside, then deleted)."""
    try:
        os.replace(tmp, path)
    except OSError:
        if not (tmp.is_dir() and path.exists()):
            raise
        old = _sibling(path, "old")  # a folder is not replaced by os.replace unless it is empty
        os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            os.replace(old, path)  # put the old folder back: a failed write loses nothing
            raise
        _remove(old)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """A hidden temporary sibling of ``path`` to write (a file, or a folder to create); moved onto ``path``
    in one step when the ``with`` block ends without an error, deleted otherwise.

    ``path``'s folder is created. ``fsync=True`` flushes the data to disk before the rename, so even a
    power cut leaves the old ``path`` or the complete new one. A raised error in the block (a failed
    check, say) keeps the old ``path``; only a killed process can leave the hidden ``.<name>.*.tmp``.

    >>> with atomic_path("out/report.json") as tmp:
    ...     tmp.write_text("{}")
    """
    path = Path(path)
    tmp = _sibling(path, "tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        _move_into_place(tmp, path)
    finally:
        _remove(tmp)


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a hidden temporary sibling, then rename it onto ``path`` (:func:`atomic_path`).

    A crash or ``kill -9`` leaves either the old file or the new one, never half of one. A failure
    raises :class:`DataError` naming ``path``, not the temporary file.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise DataError(path, "is a folder", "pass a file name")
        with atomic_path(path) as tmp:
            write(tmp)
    except OSError as exc:
        raise DataError(path, f"cannot write it ({exc.strerror or exc})",
                        "choose a file name in a folder you can write to") from exc
    return path
