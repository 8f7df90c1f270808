"""seglib.utils.atomic_path: the target is the old one or the complete new one, never half, never lost."""

import os

import pytest

from seglib import utils
from seglib.utils import atomic_path


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
    with atomic_path(target, fsync=True) as tmp:
        tmp.mkdir()
        (tmp / "new.npy").write_bytes(b"x")
    assert [p.name for p in target.iterdir()] == ["new.npy"] and [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_a_folder_whose_replacement_fails_is_put_back(tmp_path, monkeypatch):
    target = tmp_path / "cache"
    (target / "old").mkdir(parents=True)
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 3:  # 1: onto the non-empty folder (refused), 2: old aside, 3: the new one in
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(utils.os, "replace", replace)
    with pytest.raises(OSError, match="No space"), atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.npy").write_bytes(b"x")
    assert [p.name for p in target.iterdir()] == ["old"] and [p.name for p in tmp_path.iterdir()] == ["cache"]
