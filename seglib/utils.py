"""Small helpers every notebook uses: seeding, device choice, parameter counts, the environment record,
atomic writes.

torch is imported where it is used, so that modules which only write files (downloads, caches)
can use :func:`atomic_path` without loading it.
"""

from __future__ import annotations

import contextlib
import errno
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


def environment(device: str | torch.device) -> dict:
    """What a run or a measurement ran on: device, library versions, date, and the workbook's commit
    (None unless seglib runs from a git checkout of the workbook)."""
    import platform
    import subprocess
    from datetime import datetime, timezone

    import torch

    device = torch.device(device)
    cuda = device.type == "cuda"
    checkout, commit = Path(__file__).resolve().parent.parent, None
    if (checkout / ".git").exists():  # not an installed copy inside some other repository
        try:
            commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=checkout, capture_output=True,
                                    text=True, timeout=10).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    return {"device": torch.cuda.get_device_name(device) if cuda
            else f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores, "
                 f"{torch.get_num_threads()} threads)",
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None, "python": platform.python_version(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit}


# ----------------------------------------------------------------------------------------------
# atomic writes

DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _sibling(path: Path, kind: str) -> Path:
    """A hidden, unique name beside ``path``: ``.<name>.<pid>-<random>.<kind>``."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.{kind}")


def _create_file(path: Path) -> Path:
    """A new empty hidden sibling of ``path``, created exclusively: never a name that exists, never a link's target.

    The file gets the umask's mode (as ``open()`` gives), not ``mkstemp``'s 0600.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp = _sibling(path, "tmp")
        try:
            os.close(os.open(tmp, flags, 0o666))
            return tmp
        except FileExistsError:  # planted, or a rare clash: another random name
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name beside it", str(path))


def _remove(path: Path) -> None:
    """Delete a file or a folder tree if it is there; a failure to delete is ignored."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):  # nothing to remove, or no folder to remove it from
            path.unlink(missing_ok=True)


def _size(path: Path) -> int:
    """Bytes in a file or a folder tree; 0 for nothing there."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _fsync(path: Path) -> None:
    """Flush ``path`` to disk: the file, or every file in the folder."""
    for file in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def refuse_link(path: Path) -> None:
    """An output is never written through a symbolic link: one at ``path`` is a DataError naming it."""
    if path.is_symlink():
        raise DataError(path, f"is a symbolic link (to {os.readlink(path)}); outputs are never written through links",
                        "remove the link, or choose another name")


def refuse_existing(path: Path) -> None:
    """Without ``--overwrite`` an output never replaces a file: one at ``path`` is a DataError naming it."""
    if os.path.lexists(path):
        raise DataError(path, "exists", "pass --overwrite to replace it, or choose another name")


def _check_target(path: Path, overwrite: bool) -> None:
    """:func:`refuse_link`, and :func:`refuse_existing` unless ``overwrite``."""
    refuse_link(path)
    if not overwrite:
        refuse_existing(path)


def _free_space(path: Path) -> int:
    """Bytes free on the disk that holds ``path`` (or the nearest folder above it that exists)."""
    return shutil.disk_usage(next(p for p in [path, *path.parents] if p.exists())).free


def _amount(size: int) -> str:
    """``size`` bytes as people read it: ``1.2 GB``, ``35.0 MB``, ``8.0 kB``, ``12 bytes``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def disk_full(path: Path, needed: int = 0) -> DataError:
    """The one message for a full disk or quota: ``path``, the space it needs (when known) and the space free."""
    need = f"it needs about {_amount(needed)}, " if needed else ""
    return DataError(path, f"no space left on the disk: {need}{_amount(_free_space(path))} free there; nothing was "
                     "replaced", "free some space (or quota) on that disk, or write to another folder")


def ensure_free_space(path: Path, needed: int) -> None:
    """A :func:`disk_full` error unless the disk that will hold ``path`` has ``needed`` bytes free."""
    if _free_space(path) < needed:
        raise disk_full(path, needed)


def refuse_dataset_folder(path: Path, flag: str, folders: tuple = ()) -> None:
    """Refuse an output ``path`` that is, or is inside, one of ``folders`` or a dataset's folder
    (:func:`seglib.data.dataset_around`): nothing is ever written among a dataset's files."""
    from seglib.data import dataset_around

    target, found = Path(path).expanduser().resolve(), dataset_around(path)
    for folder in [*map(Path, folders), *([found[1]] if found else [])]:
        if folder.resolve() == target or folder.resolve() in target.parents:
            raise DataError(path, f"is inside the dataset folder {folder}", f"write {flag} outside the dataset")


def check_output(path: str | Path, flag: str, *, overwrite: bool = False, inputs: dict | None = None,
                 folders: tuple = ()) -> Path:
    """Refuse, before any work, an output ``flag`` names that would replace what it must not.

    ``inputs`` (``{"the checkpoint": path}``) and anything inside ``folders`` or a dataset's folder
    (:func:`seglib.data.dataset_around`) are never written, with or without ``overwrite``; nor a folder or a
    symbolic link; an existing file only with ``overwrite``.
    """
    target = Path(path)
    refuse_link(target)
    if target.is_dir():
        raise DataError(target, "is a folder", f"pass a file name to {flag}")
    for what, source in (inputs or {}).items():
        if target.exists() and target.resolve() == Path(source).resolve():
            raise DataError(target, f"is {what} being read: {flag} would overwrite it", f"pass another {flag} file")
    refuse_dataset_folder(target, flag, folders)
    if not overwrite:
        refuse_existing(target)
    return target


def _exchange(a: Path, b: Path) -> bool:
    """Swap what is at ``a`` and ``b`` in one step (Linux's ``renameat2(RENAME_EXCHANGE)``); False where the
    system or the file system cannot."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or a C library older than glibc 2.28
        return False
    at_cwd, exchange = -100, 2  # AT_FDCWD, RENAME_EXCHANGE
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # an old kernel, or a file system without it
        return False
    raise OSError(code, os.strerror(code), str(b))


def _move_into_place(tmp: Path, path: Path, overwrite: bool) -> None:
    """``os.replace(tmp, path)``; a folder also replaces whatever is at ``path``: swapped with it in one step where
    the system can (the old one is then at ``tmp``, which :func:`atomic_path` deletes), else moved aside first."""
    _check_target(path, overwrite)  # again: a link or file may have appeared while the block ran
    try:
        os.replace(tmp, path)
    except OSError:
        if not (tmp.is_dir() and path.exists()):
            raise
        if _exchange(tmp, path):  # no moment without a folder at path: a kill, or a reader, finds one
            return
        old = _sibling(path, "old")  # a folder is not replaced by os.replace unless it is empty
        os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            os.replace(old, path)  # put the old folder back: a failed write loses nothing
            raise
        _remove(old)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, fsync: bool = False, folder: bool = False, overwrite: bool = True,
                size: int = 0) -> Iterator[Path]:
    """A hidden temporary sibling of ``path`` to write; moved onto ``path`` in one step when the ``with``
    block ends without an error, deleted otherwise. Every seglib writer goes through here.

    The temporary is a new empty file, created exclusively (a file or link planted at its name is
    never written through); with ``folder=True`` it is a name for the block to create as a folder
    (``mkdir`` is exclusive too). ``path`` itself must not be a symbolic link; without ``overwrite``
    it must not exist. ``path``'s folder is created. ``fsync=True`` flushes the data to disk before
    the rename, so even a power cut leaves the old ``path`` or the complete new one. A raised error
    in the block (a failed check, say) keeps the old ``path``; only a killed process can leave the
    hidden ``.<name>.*.tmp``. A full disk or quota (ENOSPC, EDQUOT) anywhere in the block is one
    :func:`disk_full` error naming ``path`` and the space it needs (at least ``size`` bytes).

    >>> with atomic_path("out/report.json") as tmp:
    ...     tmp.write_text("{}")
    """
    path = Path(path)
    _check_target(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp") if folder else _create_file(path)
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        _move_into_place(tmp, path, overwrite)
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        raise disk_full(path, max(size, _size(tmp), _size(path))) from exc
    finally:
        _remove(tmp)


def write_atomic(path: str | Path, write: Callable[[Path], object], *, overwrite: bool = True) -> Path:
    """``write(tmp)`` to a hidden temporary sibling, then rename it onto ``path`` (:func:`atomic_path`).

    A crash or ``kill -9`` leaves either the old file or the new one, never half of one. A failure
    raises :class:`DataError` naming ``path``, not the temporary file; ``overwrite=False`` refuses an
    existing ``path`` (the command line's outputs without ``--overwrite``).
    """
    path = Path(path)
    try:
        if path.is_dir() and not path.is_symlink():
            raise DataError(path, "is a folder", "pass a file name")
        with atomic_path(path, overwrite=overwrite) as tmp:
            write(tmp)
    except OSError as exc:
        raise DataError(path, f"cannot write it ({exc.strerror or exc})",
                        "choose a file name in a folder you can write to") from exc
    return path
