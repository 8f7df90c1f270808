"""The folder a run writes (``--out``): refused where writing would harm data, locked so that one run writes it
at a time, and left as it was when a run fails before writing anything.

>>> check_out(cfg, init_from=None)       # not inside the dataset, not among images, not over --init-from
>>> made, lock = open_folder(Path(cfg.out))
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from seglib.errors import ConfigError, DataError
from seglib.paths import IMAGE_SUFFIXES
from seglib.resume import FINISHED
from seglib.tensorboard_log import close_board
from seglib.utils import refuse_dataset_folder

if TYPE_CHECKING:
    from seglib.engine import Run
    from seglib.train_config import TrainConfig


def check_out(cfg: TrainConfig, init_from: str | Path | None) -> None:
    """Refuse an ``--out`` inside the dataset or holding images (a dataset's folder), or one whose
    checkpoint is the ``--init-from`` this run would overwrite."""
    from seglib.data import find_folder

    out, data = Path(cfg.out).resolve(), find_folder(cfg.dataset, cfg.root).resolve()
    refuse_dataset_folder(Path(cfg.out), "--out", (data,))
    a_run = any((out / name).is_file() for name in FINISHED + ("last.pt",))  # its figures are its own
    if out.is_dir() and not a_run and any(p.name in ("images", "masks") or p.suffix.lower() in IMAGE_SUFFIXES
                                          for p in out.iterdir()):
        raise DataError(cfg.out, "holds images (a dataset's folder?); a run never writes among them",
                        "pass another --out, e.g. runs/NAME")
    if init_from is not None and Path(init_from).resolve() in {out / name for name in ("best.pt", "best_loss.pt",
                                                                                      "last.pt")}:
        raise DataError(init_from, "is --init-from and a checkpoint this run overwrites",
                        "copy it out of --out first, or pass another --out")


def open_folder(out: Path) -> tuple[tuple[Path, ...], int | None]:
    """Make ``out`` and lock it (:func:`lock_folder`), deleting the half-written checkpoints a killed run left;
    ``(the folders made: out, then its new parents; the lock's descriptor)``. ``out`` is no file (setup_run)."""
    made = tuple(p for p in (out, *out.parents) if not p.exists())
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = lock_folder(out)  # before anything is written or deleted: one run per folder
    except OSError as exc:
        raise ConfigError(f"cannot write to --out {out} ({exc.strerror}); choose a writable folder") from exc
    for stray in out.glob(".*.pt.*.tmp"):
        stray.unlink()
    return made, lock


def lock_folder(out: Path) -> int | None:
    """Take ``out/.lock`` (holding this pid) exclusively, without waiting; its descriptor, which holds
    the lock until :func:`unlock_folder`. None where there are no locks (no fcntl, or a file system without them)."""
    try:
        import fcntl
    except ImportError:
        return None
    path = out / ".lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataError(out, f"another training is writing this folder (pid {holder})",
                            "wait for it, or pass another --out") from None
        except OSError:
            os.close(fd)
            return None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)  # the run before removed this lock file as we took it: take the new one
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def unlock_folder(out: Path, lock: int | None) -> None:
    """Remove ``out/.lock`` and release it (removed first: a run that opened it meanwhile takes a new one)."""
    if lock is not None:
        (out / ".lock").unlink(missing_ok=True)
        os.close(lock)


@contextlib.contextmanager
def holding(run: Run) -> Iterator[None]:
    """The run's folder while the block trains: its TensorBoard file is closed and its lock released at the end,
    and a failure before anything was written removes the folders :func:`open_folder` made (never one that was
    there)."""
    try:
        yield
    except BaseException:
        close_board(run)
        unlock_folder(run.out, run.lock)
        for folder in run.made:
            with contextlib.suppress(OSError):  # rmdir: only while empty
                folder.rmdir()
        raise
    close_board(run)
    unlock_folder(run.out, run.lock)
