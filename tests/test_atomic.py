"""seglib.utils.atomic_path: the target is the old one or the complete new one, never half, never lost."""

import errno
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from seglib import utils
from seglib.checkpoint import save_checkpoint
from seglib.errors import DataError
from seglib.utils import atomic_path, write_atomic


def test_a_failed_block_keeps_the_old_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("a failed check")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_a_folder_replaces_a_folder(tmp_path):
    target = tmp_path / "cache"
    (target / "old").mkdir(parents=True)
    with atomic_path(target, fsync=True, folder=True) as tmp:
        tmp.mkdir()
        (tmp / "new.npy").write_bytes(b"x")
    assert [p.name for p in target.iterdir()] == ["new.npy"] and [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_a_folder_is_swapped_in_one_step_never_leaving_the_target_missing(tmp_path, monkeypatch):
    """Moved aside, then the new one moved in: a kill (or a second writer) between the two found no folder, and
    the old one was left under a hidden name. On Linux the two are exchanged in one rename."""
    import ctypes

    if not hasattr(ctypes.CDLL(None), "renameat2"):
        pytest.skip("no renameat2 in this C library (not Linux): the two-step fallback is tested below")
    target = tmp_path / "cache"
    (target / "old").mkdir(parents=True)
    moved_away = []
    real_replace = os.replace
    monkeypatch.setattr(utils.os, "replace", lambda src, dst: moved_away.append(src) if Path(src) == target
                        else real_replace(src, dst))
    with atomic_path(target, folder=True) as tmp:
        tmp.mkdir()
        (tmp / "new.npy").write_bytes(b"x")
    assert moved_away == [] and [p.name for p in target.iterdir()] == ["new.npy"]
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]  # the old folder, swapped out, is deleted


def test_a_folder_whose_replacement_fails_is_put_back(tmp_path, monkeypatch):
    """Where no one-step swap exists: moved aside, and put back when the new one cannot go in."""
    target = tmp_path / "cache"
    (target / "old").mkdir(parents=True)
    monkeypatch.setattr(utils, "_exchange", lambda a, b: False)
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 3:  # 1: onto the non-empty folder (refused), 2: old aside, 3: the new one in
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(utils.os, "replace", replace)
    full = pytest.raises(DataError, match=f"{target}: no space left on the disk")
    with full, atomic_path(target, folder=True) as tmp:
        tmp.mkdir()
        (tmp / "new.npy").write_bytes(b"x")
    assert [p.name for p in target.iterdir()] == ["old"] and [p.name for p in tmp_path.iterdir()] == ["cache"]


WRITERS = {  # what writes through atomic_path: a JSON report, a checkpoint
    "json": lambda path: write_atomic(path, lambda tmp: tmp.write_text("{}")),
    "checkpoint": lambda path: save_checkpoint({"x": torch.zeros(3)}, path),
}


@pytest.mark.parametrize("writer", WRITERS)
def test_a_link_planted_at_the_temporary_name_is_never_written_through(tmp_path, monkeypatch, writer):
    victim, target = tmp_path / "victim.txt", tmp_path / "out" / "report.json"
    victim.write_text("precious")
    target.parent.mkdir()
    names = iter(["a" * 32, "b" * 32])  # the "random" part of the temporary name, made predictable
    monkeypatch.setattr(utils.uuid, "uuid4", lambda: SimpleNamespace(hex=next(names)))
    planted = target.with_name(f".report.json.{os.getpid()}-aaaaaaaa.tmp")
    planted.symlink_to(victim)
    WRITERS[writer](target)
    assert victim.read_text() == "precious" and planted.is_symlink() and not target.is_symlink()


@pytest.mark.parametrize("writer", WRITERS)
def test_a_link_at_the_output_name_is_refused(tmp_path, writer):
    victim, target = tmp_path / "victim.txt", tmp_path / "report.json"
    victim.write_text("precious")
    target.symlink_to(victim)
    with pytest.raises(DataError, match=f"{target}: is a symbolic link \\(to {victim}\\).*Fix: remove the link"):
        WRITERS[writer](target)
    assert victim.read_text() == "precious" and target.is_symlink()


def test_without_overwrite_an_existing_file_is_refused(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(DataError, match=f"{target}: exists. Fix: pass --overwrite"):
        write_atomic(target, lambda tmp: tmp.write_text("new"), overwrite=False)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("writer", WRITERS)
def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch, writer):
    target = tmp_path / "last.pt"
    target.write_bytes(b"previous" * 1000)
    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(DataError) as err:
        WRITERS[writer](target)
    assert str(err.value).startswith(f"{target}: no space left on the disk: it needs about 8.0 kB, ")
    assert " free there; nothing was replaced. Fix: free some space" in str(err.value)
    assert target.read_bytes() == b"previous" * 1000 and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_file_that_appears_while_the_result_is_written_is_not_replaced(tmp_path):
    target = tmp_path / "r.json"
    with pytest.raises(DataError, match="exists"):
        with atomic_path(target, overwrite=False) as tmp:
            tmp.write_text("new")
            target.write_text("appeared")  # another process, in the meantime
    assert target.read_text() == "appeared"


def test_an_existing_file_is_refused_before_any_work_is_done(tmp_path):
    target, called = tmp_path / "r.json", []
    target.write_text("old")
    with pytest.raises(DataError):
        write_atomic(target, lambda tmp: called.append(tmp), overwrite=False)
    assert called == [] and target.read_text() == "old"


def test_errors_other_than_a_full_disk_pass_through_as_they_are(tmp_path):
    with pytest.raises(PermissionError):
        with atomic_path(tmp_path / "r.json"):
            raise PermissionError(errno.EACCES, "Permission denied")
    assert list(tmp_path.iterdir()) == []
