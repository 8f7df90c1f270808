"""Dataset caches: faithful resize, reuse by fingerprint, atomic builds, damage reported."""

import errno
import hashlib
import json
import os
import pickle
import shutil
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from seglib import cache as C
from seglib import transforms as T
from seglib.errors import ConfigError, DataError
from seglib.masks import resize_mask
from seglib.paths import work_dir
from seglib.synthetic import make_sample


@pytest.fixture(autouse=True)
def fresh_work_dir(private_work_dir, tmp_path, monkeypatch):
    """Each test starts with no caches (the shared work dir would carry them between tests)."""
    monkeypatch.setenv("SEGLIB_WORK_DIR", str(tmp_path / "work"))


class CountingDataset:
    """The dataset protocol over synthetic samples of varying sizes; counts ``load`` calls."""

    name, split, num_classes, ignore_index = "fake", "train", 4, 255

    def __init__(self, n=6, version="v1", fail_at=None):
        self.n, self.version, self.fail_at, self.loads = n, version, fail_at, 0
        self.ids = [f"img{i:03d}" for i in range(n)]

    def __len__(self):
        return self.n

    def load(self, i):
        if i == self.fail_at:
            raise RuntimeError(f"disk unplugged while reading sample {i}")
        self.loads += 1
        image, mask = make_sample(i, (40 + 13 * i, 90 - 7 * i))   # shrinking, enlarging, non-square
        mask = mask.copy()
        mask[:2] = 255
        return image, mask

    def fingerprint(self):
        return hashlib.sha1(self.version.encode()).hexdigest()


def test_round_trip_equals_direct_resize():
    ds = CountingDataset()
    cache = C.build_cache(ds, 32)
    assert cache.path == work_dir() / "cache" / f"fake_train_32_{ds.fingerprint()[:12]}"
    assert cache.images.shape == (6, 32, 32, 3) and cache.masks.shape == (6, 32, 32)
    assert cache.images.dtype == cache.masks.dtype == np.uint8
    assert (len(cache), cache.ids, cache.name, cache.split) == (6, ds.ids, "fake", "train")
    assert (cache.num_classes, cache.ignore_index, cache.size) == (4, 255, 32)
    assert cache.fingerprint() == ds.fingerprint()
    for i in range(len(ds)):
        image, mask = ds.load(i)
        h, w = image.shape[:2]
        interp = cv2.INTER_AREA if h >= 32 and w >= 32 else cv2.INTER_LINEAR
        got_image, got_mask = cache.load(i)
        assert np.array_equal(got_image, cv2.resize(image, (32, 32), interpolation=interp))
        assert np.array_equal(got_mask, resize_mask(mask, (32, 32)))
        assert set(np.unique(got_mask)) <= set(np.unique(mask))     # nearest: no invented labels


def test_cache_plugs_into_the_torch_dataset_and_pickles():
    cache = C.load_or_build_cache(CountingDataset(), 24)
    x, y = T.SegmentationTorchDataset(cache, T.eval_transform(24))[3]
    assert x.dtype == torch.float32 and x.shape == (3, 24, 24) and y.dtype == torch.int64
    assert np.array_equal(y.numpy(), cache.masks[3])
    clone = pickle.loads(pickle.dumps(cache))                      # what a "spawn" worker receives
    assert len(pickle.dumps(cache)) < 1000 and np.array_equal(clone.images, cache.images)
    image, _ = cache.load(0)
    image[:] = 0                                                   # copies: the cache is untouched
    assert cache.images[0].any()


def test_reused_while_fingerprint_matches_rebuilt_when_it_changes():
    ds = CountingDataset()
    first = C.load_or_build_cache(ds, 16)
    assert ds.loads == 6
    again = C.load_or_build_cache(ds, 16)
    assert ds.loads == 6 and again.path == first.path              # no decoding the second time
    ds.version = "v2"                                              # the files changed
    rebuilt = C.load_or_build_cache(ds, 16)
    assert ds.loads == 12 and rebuilt.path != first.path and rebuilt.fingerprint() == ds.fingerprint()
    C.load_or_build_cache(ds, 20)                                  # another size is another cache
    assert ds.loads == 18


def test_explicit_path_is_rebuilt_in_place_when_stale(tmp_path):
    ds = CountingDataset(n=3)
    C.load_or_build_cache(ds, 16, tmp_path / "c")
    ds.version = "v2"
    cache = C.load_or_build_cache(ds, 16, tmp_path / "c")
    assert ds.loads == 6 and cache.fingerprint() == ds.fingerprint()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]     # old copy and temp folder gone


def test_an_explicit_path_holding_another_size_is_rebuilt_at_the_size_asked_for(tmp_path):
    ds = CountingDataset(n=3)
    C.load_or_build_cache(ds, 16, tmp_path / "c")
    cache = C.load_or_build_cache(ds, 20, tmp_path / "c")
    assert cache.size == 20 and cache.images.shape[1:3] == (20, 20) and ds.loads == 6


def test_the_cache_keeps_the_dataset_class_names_and_palette():
    ds = CountingDataset(n=2)
    ds.class_names, ds.palette = ("a", "b", "c", "d"), [(1, 2, 3), (4, 5, 6), (7, 8, 9), (10, 11, 12)]
    cache = C.build_cache(ds, 16)
    assert cache.class_names == ("a", "b", "c", "d") and cache.palette.tolist() == [list(c) for c in ds.palette]


def test_a_dataset_with_no_samples_or_too_few_ids_leaves_no_cache(tmp_path):
    with pytest.raises(DataError, match="fake/train has no samples to cache"):
        C.build_cache(CountingDataset(n=0), 16, tmp_path / "empty")
    ds = CountingDataset(n=3)
    ds.ids = ds.ids[:2]
    with pytest.raises(DataError, match="has 3 samples but 2 ids"):
        C.build_cache(ds, 16, tmp_path / "short")
    assert list(tmp_path.iterdir()) == []  # neither half-built nor empty: nothing


def test_a_cache_whose_ids_were_cut_is_damaged():
    path = C.build_cache(CountingDataset(n=3), 16).path
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "ids": meta["ids"][:-1]}))
    with pytest.raises(DataError, match="meta.json lists 2 ids for 3 samples"):
        C.open_cache(path)


def test_resize_image_uses_area_only_when_both_sides_shrink():
    """A side that shrinks beside one that grows is an enlargement (bilinear); sizes below 1 px are refused."""
    image = np.random.default_rng(0).integers(0, 256, (20, 64, 3), dtype=np.uint8)
    assert np.array_equal(C.resize_image(image, 32), cv2.resize(image, (32, 32), interpolation=cv2.INTER_LINEAR))
    assert np.array_equal(C.resize_image(image, 16), cv2.resize(image, (16, 16), interpolation=cv2.INTER_AREA))
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="positive int"):
            C.check_size(bad)


def test_a_negative_index_reads_from_the_end_as_numpy_does():
    cache = C.build_cache(CountingDataset(n=3), 16)
    assert all(np.array_equal(a, b) for a, b in zip(cache.load(-1), cache.load(2)))
    with pytest.raises(IndexError, match="sample -4 out of range"):
        cache.load(-4)


@pytest.mark.parametrize("damage", ["truncate_images", "truncate_masks", "bad_meta", "missing_masks",
                                    "changed_in_place"])
def test_damaged_cache_raises_data_error_naming_the_folder(damage):
    ds = CountingDataset(n=3)
    path = C.build_cache(ds, 16).path
    if damage.startswith("truncate"):
        target = path / f"{damage.split('_')[1]}.npy"
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "bad_meta":
        (path / "meta.json").write_text(json.dumps({"format": C.FORMAT, "n": 3}))
    elif damage == "changed_in_place":  # same size, one byte of one image changed: only the checksum sees it
        with open(path / "images.npy", "r+b") as f:
            f.seek(-100, os.SEEK_END)
            byte = f.read(1)
            f.seek(-100, os.SEEK_END)
            f.write(bytes([byte[0] ^ 1]))
    else:
        (path / "masks.npy").unlink()
    for attempt in (lambda: C.load_or_build_cache(ds, 16), lambda: C.open_cache(path),
                    lambda: C.open_cache(path, mmap=False)):
        with pytest.raises(DataError) as info:
            attempt()
        assert info.value.path == path and str(path) in str(info.value) and "delete" in str(info.value)
    assert ds.loads == 3                                           # reported, not silently rebuilt


def test_interrupted_build_leaves_no_cache():
    ds = CountingDataset(fail_at=4)
    with pytest.raises(RuntimeError, match="disk unplugged"):
        C.load_or_build_cache(ds, 16)
    folder = work_dir() / "cache"
    assert not C.cache_path(ds, 16).exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".fake_train_16")]  # temp removed
    ds.fail_at = None                                              # the next run builds it cleanly
    assert len(C.load_or_build_cache(ds, 16)) == 6


def test_samples_breaking_the_protocol_are_named():
    class Gray(CountingDataset):
        def load(self, i):
            image, mask = super().load(i)
            return image[..., 0], mask

    with pytest.raises(DataError, match="img000"):
        C.build_cache(Gray(n=2), 16)


def test_a_mask_of_another_size_than_its_image_is_refused():
    """Both used to be stretched to size×size on their own: labels misaligned, no error."""
    class Short(CountingDataset):
        def load(self, i):
            image, mask = super().load(i)
            return image, mask[:-2]

    with pytest.raises(DataError, match="img000"):
        C.build_cache(Short(n=2), 16)
    assert not C.cache_path(Short(n=2), 16).exists()


def test_editing_the_arrays_in_memory_never_writes_into_the_cache():
    """The arrays are mapped copy-on-write: an in-place edit must not reach the files (and damage the cache)."""
    path = C.build_cache(CountingDataset(n=3), 16).path
    before = {name: (path / name).read_bytes() for name in ("images.npy", "masks.npy")}
    cache = C.open_cache(path)
    cache.images[0] ^= 255
    cache.masks[0] = 7
    del cache
    assert {name: (path / name).read_bytes() for name in before} == before
    C.open_cache(path)  # still whole: no "damaged dataset cache"


def test_a_cache_of_an_older_format_is_rebuilt():
    ds = CountingDataset(n=3)
    path = C.build_cache(ds, 16).path
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "format": C.FORMAT - 1}))
    assert C.load_or_build_cache(ds, 16).meta["format"] == C.FORMAT and ds.loads == 6


def test_build_never_replaces_a_folder_that_is_not_a_cache(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match=f"{mine}: exists and is not a dataset cache"):
        C.build_cache(CountingDataset(n=2), 16, mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def no_temporary_folder_left():
    folder = work_dir() / "cache"
    return not folder.exists() or not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_a_disk_without_room_for_the_cache_is_refused_before_the_build(monkeypatch):
    ds = CountingDataset()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9, free=1000))
    with pytest.raises(DataError) as err:
        C.load_or_build_cache(ds, 32)
    assert C.cache_bytes(6, 32) == 24832
    assert str(err.value).startswith(f"{C.cache_path(ds, 32)}: no space left on the disk: it needs about "
                                     "24.8 kB, 1.0 kB free there")
    assert ds.loads == 0 and not C.cache_path(ds, 32).exists() and no_temporary_folder_left()


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="no posix_fallocate here")
def test_a_disk_that_fills_during_the_build_leaves_no_temporary_cache(monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)  # where a memory map on a full disk would die of SIGBUS
    ds = CountingDataset()
    with pytest.raises(DataError, match=f"{C.cache_path(ds, 32)}: no space left on the disk: it needs about"):
        C.load_or_build_cache(ds, 32)
    assert not C.cache_path(ds, 32).exists() and no_temporary_folder_left()


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="no posix_fallocate here")
@pytest.mark.parametrize("code", [errno.EOPNOTSUPP, errno.EINVAL])
def test_a_file_system_that_cannot_reserve_blocks_still_gets_its_cache(monkeypatch, code):
    """tmpfs, some network and FUSE file systems refuse posix_fallocate: the free-space check stands in."""
    def unsupported(fd, offset, length):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    cache = C.load_or_build_cache(CountingDataset(n=2), 16)
    assert cache.images.shape == (2, 16, 16, 3) and no_temporary_folder_left()


def test_a_cache_never_serves_labels_that_the_decoder_would_now_make_otherwise(monkeypatch):
    from seglib.data import base, load_dataset

    ds = load_dataset("pets", "val", max_samples=4)  # the shipped sample
    first = C.load_or_build_cache(ds, 16)
    assert C.load_or_build_cache(ds, 16).path == first.path  # reused while nothing changes
    with monkeypatch.context() as edited:  # (not undo(): the private work dir stays)
        edited.setattr(ds.spec, "left_out", ("Abyssinian_34", "Bengal_56"))  # a spec setting, as a fix would
        changed = C.load_or_build_cache(ds, 16)
        assert changed.path != first.path and changed.fingerprint() == ds.fingerprint()
    monkeypatch.setattr(base, "decoder_source", lambda: "the decoding code, edited")
    assert ds.fingerprint() not in (first.fingerprint(), changed.fingerprint())
