"""Hostile inputs (issue 17): images that would exhaust memory or decode to garbage, 16-bit masks, files that are
not checkpoints and checkpoints whose metadata lies, out-of-range flags and labels, archives that fail to extract.

Everything runs in this process on tiny files written here; the command line through ``seglib.cli.main``.
"""

import errno
import io
import os
import re
import sys
import warnings
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from seglib.checkpoint import load_checkpoint
from seglib.cli import main
from seglib.data.io import pixel_cap, read_image, read_label
from seglib.download import DOWNLOADS_SUBDIR, download_dataset
from seglib.errors import ConfigError, DataError, DownloadError
from seglib.inference import load_model
from seglib.masks import binarize
from seglib.synthetic import make_sample
from helpers import write_camvid32, write_png_pairs


def seglib(capsys, *args) -> tuple[int, str]:
    """Exit status and stderr of ``python -m seglib ARGS``, run in this process."""
    status = main([str(a) for a in args])
    return status, capsys.readouterr().err


# ------------------------------------------------------------------ images: pixel cap, damaged JPEG


@pytest.mark.parametrize("side", [40, 100])  # above PIL's cap (a warning today), above twice the cap (its error)
def test_an_image_above_the_pixel_cap_is_refused_by_name(tmp_path, monkeypatch, side):
    path = tmp_path / "bomb.png"
    Image.new("L", (side, side)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError) as err:
            read_image(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and f"{side * side:,} pixels" in text and "1,000" in text
    assert err.value.fix.startswith("if the image is genuine, raise the cap: SEGLIB_MAX_IMAGE_PIXELS")
    assert text.count(str(path)) == 1 and "re-download" not in text  # not wrapped in a second error
    monkeypatch.setenv("SEGLIB_MAX_IMAGE_PIXELS", str(side * side))  # the documented way to raise the cap
    assert read_image(path).shape == (side, side, 3)


@pytest.mark.parametrize("value", ["0", "-5", "1e9", "lots"])
def test_a_pixel_cap_that_is_not_a_positive_count_is_refused(monkeypatch, value):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    monkeypatch.setenv("SEGLIB_MAX_IMAGE_PIXELS", value)
    with pytest.raises(ConfigError, match=f"SEGLIB_MAX_IMAGE_PIXELS={value!r}: must be a whole number"):
        pixel_cap()


def test_read_label_keeps_palette_indices_and_gives_one_bit_masks_as_0_255(tmp_path):
    indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    palette_png = Image.fromarray(indices, mode="P")
    palette_png.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10] + [0] * 759)
    palette_png.save(tmp_path / "p.png")
    assert read_label(tmp_path / "p.png").tolist() == indices.tolist()  # indices, not colours
    assert read_label(tmp_path / "p.png", colour=True)[0, 1].tolist() == [200, 10, 10]
    Image.fromarray(indices > 0).save(tmp_path / "bits.png")  # mode "1"
    bits = read_label(tmp_path / "bits.png")
    assert bits.dtype == np.uint8 and bits.tolist() == [[0, 255, 255], [255, 255, 0]]


@pytest.mark.parametrize("reader", [read_image, read_label])
def test_an_empty_file_is_called_empty_not_undecodable(tmp_path, reader):
    (tmp_path / "cut.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"cut.png: file is empty \(0 bytes\)"):
        reader(tmp_path / "cut.png")


def damaged_jpeg(path, seed=0):
    """A photo-like JPEG with 64 bytes in the middle of its compressed data zeroed."""
    pixels = (np.random.default_rng(seed).random((96, 128, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    data = bytearray(buffer.getvalue())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    return path


def test_a_jpeg_damaged_in_the_middle_cannot_be_decoded(tmp_path):
    path = damaged_jpeg(tmp_path / "photo.jpg")
    with pytest.raises(DataError, match=r"cannot be decoded as an image \(Corrupt JPEG data") as err:
        read_image(path)
    assert str(err.value).startswith(f"{path}: ") and "Fix: " in str(err.value)
    good = tmp_path / "good.jpg"
    Image.fromarray(make_sample(0, (40, 48))[0]).save(good, quality=90)
    assert read_image(good).shape == (40, 48, 3)


def test_the_damage_check_gives_the_same_answers_in_threads(tmp_path):
    """Each decode borrows file descriptor 2; two at once must not swap each other's complaints, nor leave
    the process's stderr pointing at a deleted temporary file."""
    from concurrent.futures import ThreadPoolExecutor

    bad = [damaged_jpeg(tmp_path / f"bad{i}.jpg", seed=i) for i in range(4)]
    good = []
    for i in range(4):
        good.append(tmp_path / f"good{i}.jpg")
        Image.fromarray(make_sample(i, (64, 80))[0]).save(good[-1], quality=90)

    def refused(path) -> bool:
        try:
            read_image(path)
        except DataError as exc:
            assert str(exc).startswith(f"{path}: ")  # the file at fault, not another thread's
            return True
        return False

    before = os.readlink("/proc/self/fd/2") if os.path.exists("/proc/self/fd/2") else None
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(refused, (bad + good) * 15))
    assert answers == ([True] * 4 + [False] * 4) * 15
    if before is not None:
        assert os.readlink("/proc/self/fd/2") == before


def test_a_folder_named_like_an_image_is_named_a_folder(tmp_path):
    (tmp_path / "photo.png").mkdir()
    with pytest.raises(DataError, match="is a folder, not an image file"):
        read_image(tmp_path / "photo.png")


def test_without_opencv_jpegs_still_decode(tmp_path, monkeypatch):
    """The GPU machine has no albumentations, hence no OpenCV: the damage check is skipped, not a crash."""
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 raises ImportError
    good = tmp_path / "good.jpg"
    Image.fromarray(make_sample(0, (40, 48))[0]).save(good, quality=90)
    assert read_image(good).shape == (40, 48, 3)


def test_predict_skips_a_bomb_and_a_damaged_jpeg_and_exits_1(smoke_run, tmp_path, capsys, monkeypatch):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    Image.fromarray(make_sample(0, (24, 30))[0]).save(inputs / "a_good.png")
    Image.new("L", (100, 100)).save(inputs / "b_bomb.png")
    damaged_jpeg(inputs / "c_damaged.jpg")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    status, err = seglib(capsys, "predict", "--checkpoint", smoke_run / "best.pt", "--input", inputs,
                         "--output", out, "--batch-size", 1)
    assert status == 1 and "Traceback" not in err
    assert f"skipped: {inputs / 'b_bomb.png'}: " in err and f"skipped: {inputs / 'c_damaged.jpg'}: " in err
    assert err.strip().splitlines()[-1].startswith("error: 2 of 3 inputs could not be read")
    assert sorted(p.name for p in out.iterdir()) == ["a_good.png"]


# ------------------------------------------------------------------ 16-bit person masks


def test_16_bit_person_masks_are_thresholded_on_their_own_scale(tmp_path):
    soft = np.array([[0, 20000, 40000, 65535]], np.uint16)  # a TikTok-style soft mask saved with 16 bits
    Image.fromarray(soft).save(tmp_path / "mask.png")
    raw = read_label(tmp_path / "mask.png")
    assert raw.dtype == np.uint16
    assert binarize(raw).tolist() == [[0, 0, 1, 1]]  # on the 8-bit scale every pixel above 127 was a person
    Image.fromarray(np.array([[0, 200, 255]], np.uint16)).save(tmp_path / "narrow.png")
    with pytest.raises(DataError, match="16-bit mask whose values stay within 0..255") as err:
        binarize(read_label(tmp_path / "narrow.png"), path=tmp_path / "narrow.png")
    assert str(err.value).startswith(f"{tmp_path / 'narrow.png'}: ") and "Fix: " in str(err.value)


# ------------------------------------------------------------------ files given as a checkpoint, lying metadata


@pytest.mark.parametrize("name, content, kind", [
    ("config.json", b'{"model": "unet", "num_classes": 2}\n', "JSON"),
    ("notes.txt", "weights: see the other file \u00e9\n".encode(), "text"),
    ("long.md", ("x" * 508 + "\U0001f600" * 4).encode(), "text"),  # byte 512 cuts no character, byte 509 does
    ("cut.md", ("x" * 510 + "\U0001f600" * 4).encode(), "text"),  # byte 512 cuts a 4-byte character in two
    ("mask.png", None, "a PNG image"),
])
def test_a_file_that_is_no_checkpoint_says_what_it_is(tmp_path, name, content, kind):
    path = tmp_path / name
    if content is None:
        Image.new("L", (4, 4)).save(path)
    else:
        path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_checkpoint(path)
    text = str(err.value)
    assert text.startswith(f"{path}: not a PyTorch checkpoint: it looks like {kind}") and "Fix: " in text
    assert "pickled" not in text


BAD_META = {  # case: (what the meta changes, the key the error names)
    "unknown model": ({"model": "segformer"}, "meta['model'] is 'segformer'"),
    "model not a string": ({"model": ["unet"]}, "meta['model'] is ['unet']"),
    "class count a string": ({"num_classes": "2"}, "meta['num_classes'] is '2'"),
    "a billion classes": ({"num_classes": 10**9}, "meta['num_classes'] is 1000000000"),
    "zero classes": ({"num_classes": 0}, "meta['num_classes'] is 0"),
    "bool classes": ({"num_classes": True}, "meta['num_classes'] is True"),
    "more names than uint8 labels hold": ({"class_names": ["c"] * 256}, "meta['class_names'] is ['c', "),
    "bool image size": ({"image_size": True}, "meta['image_size'] is True"),
    "huge image size": ({"image_size": 10**6}, "meta['image_size'] is 1000000"),
    "options a list": ({"model_options": [1]}, "meta['model_options'] is [1]"),
    "huge width": ({"model_options": {"base_channels": 2**20}}, "meta['model_options']['base_channels'] is 1048576"),
    "deep": ({"model_options": {"depth": 40}}, "meta['model_options']['depth'] is 40"),
    "unknown option": ({"model_options": {"backdoor": 1}}, "meta['model_options']['backdoor'] is 1"),
    "class names not strings": ({"class_names": [1, 2]}, "meta['class_names'] is [1, 2]"),
    "more classes than uint8 labels hold": ({"num_classes": 256}, "meta['num_classes'] is 256"),
    "three names for two classes": ({"class_names": ["a", "b", "c"]}, "names 3 classes and meta['num_classes'] is 2"),
    "meta a list": (None, "'meta' is a list"),
}


@pytest.mark.parametrize("case", BAD_META)
def test_checkpoint_metadata_is_checked_before_any_model_is_built(tmp_path, monkeypatch, case):
    changes, key = BAD_META[case]
    meta = {"model": "unet", "num_classes": 2, "image_size": 32, "dataset": "synthetic",
            "class_names": ["background", "person"], "model_options": {"base_channels": 8, "depth": 2}}
    path = tmp_path / "best.pt"
    torch.save({"model": {}, "meta": [meta] if changes is None else {**meta, **changes}}, path)
    monkeypatch.setattr("seglib.models.create_model", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(DataError) as err:
        load_model(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and key in text and "Fix: " in text


# ------------------------------------------------------------------ flags out of range


BAD_FLAGS = [  # (command line, the flag the one-line error names)
    *([["train", flag, value], flag] for flag, value in [
        ("--seed", "-1"), ("--seed", str(2**64)), ("--warmup-epochs", "inf"), ("--lr", "inf"), ("--lr", "nan"),
        ("--lr", "-1"), ("--epochs", "0"), ("--epochs", "-2"), ("--batch-size", "0"), ("--image-size", "8"),
        ("--image-size", "100000"), ("--num-workers", "-1"), ("--num-workers", "100000"), ("--grad-clip", "inf"),
        ("--weight-decay", "nan"), ("--trunk-lr-mult", "inf"), ("--log-freq", "0")]),
    [["latency", "--image-size", "1"], "--image-size"],
    [["latency", "--num-classes", str(10**9)], "--num-classes"],
    [["latency", "--iters", "0"], "--iters"],
    [["export", "--checkpoint", "x.pt", "--onnx", "m.onnx", "--image-size", "3"], "--image-size"],
    [["predict", "--checkpoint", "x.pt", "--input", "i", "--output", "o", "--batch-size", "0"], "--batch-size"],
    [["evaluate", "--checkpoint", "x.pt", "--max-images", "-1"], "--max-images"],
]


@pytest.mark.parametrize("args, flag", BAD_FLAGS, ids=[" ".join(a[-2:]) for a, _ in BAD_FLAGS])
def test_every_numeric_flag_is_range_checked_by_argparse(capsys, args, flag):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: seglib {args[0]}: argument {flag}") and "Fix: " in err


# ------------------------------------------------------------------ the machine's defaults


@pytest.mark.parametrize("cpus, workers", [(1, 0), (2, 1), (3, 2), (16, 4)])
def test_default_workers_leave_a_core_to_the_main_process(monkeypatch, cpus, workers):
    from seglib import train_config

    assert train_config.TrainConfig().num_workers == train_config.default_workers()  # this machine's
    monkeypatch.setattr(train_config.os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    assert train_config.default_workers() == workers  # PyTorch warns above the usable CPUs ("suggested max")


# ------------------------------------------------------------------ latency --checkpoint and --model


def test_latency_refuses_a_model_that_is_not_the_checkpoints(smoke_run, capsys):
    quick = ["--image-size", "32", "--warmup", "1", "--iters", "1", "--device", "cpu"]
    checkpoint = smoke_run / "best.pt"
    for conflict in (["--model", "hourglass"], ["--num-classes", "7"], ["--big"]):
        status, err = seglib(capsys, "latency", "--checkpoint", checkpoint, *conflict, *quick)
        assert status == 2 and err.startswith(f"error: {conflict[0]} ") and "a unet with 4 classes" in err, err
        assert len(err.strip().splitlines()) == 1
    assert main(["latency", "--checkpoint", str(checkpoint), "--model", "unet", *quick]) == 0  # the same: used
    assert capsys.readouterr().out.startswith(f"unet from {checkpoint} | 32x32")


# ------------------------------------------------------------------ operating-system errors: one line with a fix


@pytest.mark.parametrize("code, fix", [
    (errno.ENOENT, "check the path"), (errno.EACCES, "check its permissions"), (errno.EPERM, "check its permissions"),
    (errno.EISDIR, "is a folder"), (errno.ENOTDIR, "is a file, not a folder"),
    (errno.ENOSPC, "free space on the disk holding {folder} (it has "), (errno.EIO, "try again")])
def test_an_os_error_is_one_line_naming_the_file_and_the_fix(tmp_path, capsys, monkeypatch, code, fix):
    from seglib.cli import data

    target = tmp_path / "out" / "report.json"

    def fail(args):
        raise OSError(code, os.strerror(code), str(target))

    monkeypatch.setattr(data, "cmd_datasets", fail)
    status, err = seglib(capsys, "datasets")
    assert status == 2 and err.count("\n") == 1 and "[Errno" not in err
    assert err.startswith(f"error: {target}: {os.strerror(code)}. Fix: ") and fix.format(folder=tmp_path) in err


def test_predict_into_a_path_under_a_file_is_one_line(smoke_run, tmp_path, capsys):
    (tmp_path / "a_file").write_text("keep me")
    Image.fromarray(make_sample(0, (24, 30))[0]).save(tmp_path / "x.png")
    status, err = seglib(capsys, "predict", "--checkpoint", smoke_run / "best.pt", "--input", tmp_path / "x.png",
                         "--output", tmp_path / "a_file" / "out")
    assert status == 2 and err.startswith(f"error: {tmp_path / 'a_file' / 'out'}: Not a directory. Fix: "), err


# ------------------------------------------------------------------ extraction: all or nothing, no copies left


def zip_of(path, members: dict):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("content", ["no masks", "no images", "not an archive"])
def test_a_failed_extraction_leaves_no_dataset_folder_and_no_copy(tmp_path, content):
    source = tmp_path / "peds.zip"
    if content == "no masks":  # the right top folder, without PedMasks: it used to be moved into place
        zip_of(source, {"PennFudanPed/PNGImages/FudanPed00001.png": b"i"})
    elif content == "no images":  # the marker (PedMasks) is there, the photos are not: incomplete all the same
        zip_of(source, {"PennFudanPed/PedMasks/FudanPed00001_mask.png": b"m"})
    else:
        source.write_bytes(b"damaged " * 100)
    before = source.read_bytes()
    root = tmp_path / "data"
    with pytest.raises(DownloadError) as err:
        download_dataset("pennfudan", root, source=source)
    assert str(err.value).startswith(f"{source}: ") or str(err.value).startswith(f"{root / DOWNLOADS_SUBDIR}")
    assert not root.exists() or list(root.iterdir()) == []  # no partial folder, no copy in downloads/
    assert source.read_bytes() == before  # the user's own file is never deleted
    if content == "no images":  # says what is missing
        assert "holds an incomplete Penn-Fudan Pedestrian: PennFudanPed/PNGImages: folder not found" in str(err.value)


def test_a_corrupt_copy_in_downloads_is_removed_but_a_source_there_is_kept(tmp_path):
    root = tmp_path / "data"
    (root / DOWNLOADS_SUBDIR).mkdir(parents=True)
    own = root / DOWNLOADS_SUBDIR / "peds.zip"  # the user put the archive there and passes it as --source
    own.write_bytes(b"damaged " * 100)
    with pytest.raises(DownloadError):
        download_dataset("pennfudan", root, source=own)
    assert own.is_file()


def test_source_given_for_a_dataset_already_there_is_not_ignored(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "PennFudanPed" / "PedMasks").mkdir(parents=True)
    (root / "PennFudanPed" / "PNGImages").mkdir()
    source = zip_of(tmp_path / "peds.zip", {"PennFudanPed/PedMasks/x_mask.png": b"m"})
    status, err = seglib(capsys, "prepare", "pennfudan", "--root", root, "--source", source)
    assert status == 2 and err.startswith(f"error: {root / 'PennFudanPed'}: already holds Penn-Fudan"), err
    assert "--source" in err and "Fix: " in err and not (root / DOWNLOADS_SUBDIR).exists()
    renamed = tmp_path / "mine" / "peds"  # --root is the dataset itself, under another name
    (root / "PennFudanPed").rename(renamed.parent.mkdir() or renamed)
    status, err = seglib(capsys, "prepare", "pennfudan", "--root", renamed, "--source", source)
    assert status == 2 and err.startswith(f"error: {renamed}: already holds Penn-Fudan"), err
    assert sorted(p.name for p in renamed.parent.iterdir()) == ["peds"]  # no second copy unpacked beside it
    bsds = tmp_path / "datasets" / "bsds_copy" / "data"  # a dataset folder of two parts (BSR/BSDS500/data)
    (bsds / "images").mkdir(parents=True)
    (bsds / "groundTruth").mkdir()
    status, err = seglib(capsys, "prepare", "bsds500", "--root", bsds, "--source", source)
    assert status == 2 and err.startswith(f"error: {bsds}: already holds"), err
    assert not (tmp_path / "datasets" / "BSR").exists()  # was unpacked two levels up, as BSR/BSDS500/data


def test_a_folder_given_as_source_is_checked_in_place_and_says_so(tmp_path, capsys):
    camvid = tmp_path / "kaggle" / "CamVid"  # the unzipped Kaggle folder
    write_camvid32(camvid)
    status, err = seglib(capsys, "prepare", "camvid32", "--root", tmp_path / "data", "--source", camvid)
    assert status == 0 and f"note: {camvid} is used where it is" in err and f"--root {camvid}" in err
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("dataset, folder, layout, hint", [
    ("pennfudan", "PennFudanPed", ["train_images", "train_masks", "valid_images"], "no 'PedMasks' in it"),
    ("camvid", "CamVid", "camvid32", "it is laid out as camvid32: pass --dataset camvid32 --root "),
])
def test_a_dataset_folder_in_another_layout_is_named_not_downloaded_over(tmp_path, capsys, monkeypatch, dataset,
                                                                         folder, layout, hint):
    """The debuggercafe Penn-Fudan layout, or Kaggle's CamVid under --dataset camvid, was taken for a missing dataset:
    seglib tried to download it (offline: 'cannot connect') into the user's folder."""
    monkeypatch.setattr("seglib.download.download_dataset", lambda *a, **k: pytest.fail("downloaded"))
    there = tmp_path / folder
    if layout == "camvid32":
        write_camvid32(there)
    else:
        for sub in layout:
            (there / sub).mkdir(parents=True)
    for root in (tmp_path, there):  # the folder holding it, or the dataset folder itself
        status, err = seglib(capsys, "prepare", dataset, "--root", root)
        assert status == 2 and err.startswith(f"error: {there}: holds files, but not "), err
        assert hint in err and "Fix: " in err
    assert main(["datasets", "--root", str(tmp_path)]) == 0
    listed = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(f"{dataset} "))
    assert listed.endswith(f"not found: {there} holds another layout (prepare {dataset} says more)")


class _TwoImages:
    name, split, num_classes, ignore_index, ids = "toy", "train", 2, 255, ["a", "b"]

    def __len__(self):
        return 2

    def load(self, i):
        return np.zeros((40, 30, 3), np.uint8), np.ones((40, 30), np.uint8)

    def fingerprint(self):
        return "f" * 40


@pytest.mark.parametrize("key, value", [("ids", 2), ("num_classes", "two"), ("num_classes", None),
                                        ("ignore_index", [255]), ("palette", [[0, 0]]), ("palette", [[300, 0, 0]]),
                                        ("class_names", 5)])
def test_a_cache_whose_meta_json_was_changed_is_called_damaged(tmp_path, key, value):
    """These fields were read after the checks: a raw TypeError, ValueError or OverflowError (or a 2-column
    palette, accepted) instead of 'damaged dataset cache: ... delete the folder'."""
    import json

    from seglib.cache import build_cache, open_cache

    folder = build_cache(_TwoImages(), 16, tmp_path / "cache").path
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, key: value}))
    with pytest.raises(DataError, match="damaged dataset cache: .*Fix: delete the folder"):
        open_cache(folder)


@pytest.mark.parametrize("changes, message", [
    ({"epochs": "5"}, "epochs must be a whole number, not '5'"),
    ({"epochs": 2.0}, "epochs must be a whole number, not 2.0"),  # fit failed later: range() of a float
    ({"batch_size": 4.7}, "batch_size must be a whole number, not 4.7"),
    ({"patience": True}, "patience must be a whole number or None, not True"),
    ({"lr": None}, "lr must be given, not None"),
    ({"lr": "1e-3"}, "lr must be a number, not '1e-3'"),
    ({"model_options": "big"}, "model_options must be a dict, not 'big'"),
    ({"compile": 1}, "compile must be True or False, not 1"),
])
def test_a_config_of_the_wrong_type_is_a_config_error(changes, message):
    """A config from Python or an edited JSON was checked for its ranges only: a TypeError, or accepted and failed
    in the middle of fit."""
    from seglib.train_config import TrainConfig

    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig(**changes)
    cfg = TrainConfig(lr=1, warmup_epochs=0, max_steps=np.int64(3), crop_scale=np.float32(0.5))  # NumPy's too,
    assert cfg.lr == 1 and type(cfg.max_steps) is int and type(cfg.crop_scale) is float  # as Python's (for JSON)


def test_a_subset_too_small_for_the_split_rule_says_so(tmp_path):
    """Frames of two videos that the hash rule both puts in train: 'no val samples. Fix: check the layout with
    prepare' sent the user to prepare, which printed the same line."""
    from seglib.data import load_dataset
    from seglib.data.splits import in_val

    videos = [v for v in (f"{k:05d}" for k in range(2, 60)) if not in_val("tiktok", v, 0.2)][:2]
    folder = tmp_path / "tiktok_person"
    write_png_pairs(folder / "images", folder / "masks", [f"{v}_0001" for v in videos])
    assert len(load_dataset("tiktok", "train", tmp_path)) == 2
    with pytest.raises(DataError, match=r"its 2 samples \(2 groups: hash of the video id.*\) all fall outside the "
                                        r"'val' split\. Fix: add more images \(videos\)"):
        load_dataset("tiktok", "val", tmp_path)


def test_half_of_a_two_archive_dataset_is_completed_and_half_of_pets_falls_back_to_the_sample(tmp_path, monkeypatch):
    """Not 'another layout': the first of Cityscapes' two archives lacks the marker until the second comes, and a
    partial pets folder has always meant the shipped sample."""
    from seglib.cli.data import ensure_dataset
    from seglib.data import load_dataset, shipped_sample

    root = tmp_path / "data"
    left = zip_of(tmp_path / "leftImg8bit_trainvaltest.zip", {"leftImg8bit/train/aachen/a_leftImg8bit.png": b"i"})
    gt = zip_of(tmp_path / "gtFine_trainvaltest.zip", {"gtFine/train/aachen/a_gtFine_labelIds.png": b"l"})
    with pytest.raises(DownloadError, match="pass its other archive too with --source"):
        ensure_dataset("cityscapes", str(root), str(left))
    assert ensure_dataset("cityscapes", str(root), str(gt)) == root / "cityscapes"
    assert sorted(p.name for p in (root / "cityscapes").iterdir()) == ["gtFine", "leftImg8bit"]
    (tmp_path / "pets" / "oxford_iiit_pet" / "images").mkdir(parents=True)
    (tmp_path / "pets" / "oxford_iiit_pet" / "images" / "Bengal_1.jpg").write_bytes(b"photo")
    monkeypatch.setenv("SEGLIB_DATA_DIR", str(tmp_path / "pets"))
    assert load_dataset("pets", "val").folder == shipped_sample("pets")


def test_an_ignore_index_that_does_not_fit_uint8_is_refused():
    from seglib.masks import validate_mask

    for ignore in (-100, 300):  # would come back as 156 and 44
        with pytest.raises(ConfigError, match=f"ignore_index {ignore} does not fit a uint8 label map"):
            validate_mask(np.array([[0, 1, ignore]]), num_classes=2, ignore_index=ignore)
    assert validate_mask(np.array([[0, 1, 7]]), num_classes=2, ignore_index=7).tolist() == [[0, 1, 7]]


@pytest.mark.parametrize("shapes", [[(6, 8), (8, 6)], []])
def test_a_bsds500_ground_truth_with_ragged_or_no_annotations_is_named(tmp_path, shapes):
    from scipy.io import savemat

    from seglib.data import get_spec
    from seglib.data.base import Item

    image = tmp_path / "1.jpg"
    Image.new("RGB", (8, 6)).save(image)
    cells = np.empty((1, len(shapes)), dtype=object)
    for k, shape in enumerate(shapes):
        cells[0, k] = {"Segmentation": np.ones(shape, np.uint16), "Boundaries": np.zeros(shape, np.uint8)}
    savemat(tmp_path / "1.mat", {"groundTruth": cells})
    with pytest.raises(DataError, match=f"holds {len(shapes)} annotations of shapes") as err:
        get_spec("bsds500").load(Item("1", image, tmp_path / "1.mat"))
    assert str(err.value).startswith(f"{tmp_path / '1.mat'}: ")


def test_a_mask_whose_shape_is_in_its_alpha_channel_is_named(tmp_path):
    shape = np.zeros((6, 8), np.uint8)
    shape[2:4, 2:6] = 255
    for mode, colours in (("LA", np.zeros((6, 8, 1), np.uint8)), ("RGBA", np.full((6, 8, 3), 30, np.uint8))):
        path = tmp_path / f"{mode}.png"
        Image.fromarray(np.dstack([colours, shape]), mode).save(path)
        with pytest.raises(DataError, match="shape is in its alpha") as err:
            read_label(path)
        assert str(err.value).startswith(f"{path}: ")
    drawn = np.dstack([shape, np.full((6, 8), 255, np.uint8)])  # opaque, the shape in gray: read as it is
    Image.fromarray(drawn, "LA").save(tmp_path / "gray.png")
    assert (read_label(tmp_path / "gray.png") == shape).all()
