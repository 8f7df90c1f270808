"""Reliability and security, end to end (issue 7): bad inputs, faults and untrusted files.

What test_data, test_masks, test_download, test_checkpoint and test_engine already cover is not
repeated here, nor the command line's refusals (test_cli_safety); docs/RELIABILITY.md maps every
case of the issue to the test that checks it. Training is killed with ``kill -9`` in a subprocess
(``python -m seglib train``) to check that nothing was written half.
"""

import itertools
import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglib import engine
from seglib.checkpoint import load_checkpoint, save_checkpoint
from seglib.data import SPECS, load_dataset
from seglib.data.prepare import prepare
from seglib.data.splits import in_val
from seglib.engine import NonFiniteLoss, fit
from seglib.errors import DataError, SeglibError
from seglib.models import create_model

from helpers import SEGLIB, TINY, cli, synthetic_copy


# ------------------------------------------------------------------ data, in process


def test_grayscale_and_rgba_images_are_read_as_rgb(tmp_path):
    folder = synthetic_copy(tmp_path)
    ds = load_dataset("synthetic", "all", tmp_path)
    i, j = ds.ids.index("shapes_0008"), ds.ids.index("shapes_0009")
    rgb = np.array(Image.open(folder / "images" / "shapes_0008.png"))
    Image.fromarray(rgb).convert("L").save(folder / "images" / "shapes_0008.png")
    Image.fromarray(np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])).save(
        folder / "images" / "shapes_0009.png")  # fully transparent: the colours still count
    gray, labels = ds.load(i)
    assert gray.shape == (*labels.shape, 3) and gray.dtype == np.uint8
    assert (gray == gray[..., :1]).all()
    rgba, _ = ds.load(j)
    np.testing.assert_array_equal(rgba, rgb)


def test_labels_out_of_range_through_a_dataset(tmp_path):
    folder = synthetic_copy(tmp_path)
    mask = folder / "masks" / "shapes_0010.png"
    labels = np.array(Image.open(mask))
    labels[0, :4] = [4, 4, 7, 255]  # 255 is the ignore index: allowed
    Image.fromarray(labels).save(mask)
    ds = load_dataset("synthetic", "all", tmp_path)
    with pytest.raises(DataError) as err:
        ds.load(ds.ids.index("shapes_0010"))
    message = str(err.value)
    assert message.startswith(f"{mask}: 3 pixels have labels outside 0..3"), message
    assert "4 (2 px), 7 (1 px)" in message and "Fix: map raw values" in message


def msrc_folder(root: Path, gt: np.ndarray) -> Path:
    folder = root / "MSRC_ObjCategImageDatabase_v2"
    (folder / "Images").mkdir(parents=True)
    (folder / "GroundTruth").mkdir()
    image = np.full((*gt.shape[:2], 3), 90, np.uint8)
    Image.fromarray(image).save(folder / "Images" / "1_1_s.png")
    Image.fromarray(gt).save(folder / "GroundTruth" / "1_1_s_GT.png")
    return folder


def test_msrc_colour_that_matches_no_class_names_the_colour(tmp_path):
    palette = SPECS["msrc"].palette
    gt = np.zeros((12, 16, 3), np.uint8)   # black = void
    gt[:6] = palette[1]                    # grass
    gt[6:, :8] = palette[6]                # sky
    gt[10:, 12:] = (128, 0, 1)             # one off from "building" (128, 0, 0): no class
    folder = msrc_folder(tmp_path, gt)
    ds = load_dataset("msrc", "all", tmp_path)
    with pytest.raises(DataError) as err:
        ds.load(0)
    message = str(err.value)
    assert message.startswith(str(folder / "GroundTruth" / "1_1_s_GT.png")), message
    assert "8 pixels (4.17%) have colours that are not in the palette: (128, 0, 1) (8 px)" in message
    assert "Fix: add these colours to the palette" in message

    gt[10:, 12:] = palette[0]  # the same file with the exact colour decodes
    Image.fromarray(gt).save(folder / "GroundTruth" / "1_1_s_GT.png")
    _, labels = ds.load(0)
    assert set(np.unique(labels)) == {0, 1, 6, 255}


def test_zero_255_person_masks_decode_to_0_1(tmp_path):
    """Penn-Fudan-style 0/255 masks (where 0/1 is expected) become person = 1, nothing ignored."""
    folder = tmp_path / "PennFudanPed"
    (folder / "PNGImages").mkdir(parents=True)
    (folder / "PedMasks").mkdir()
    mask = np.zeros((20, 24), np.uint8)
    mask[5:15, 6:12] = 255
    Image.fromarray(np.full((20, 24, 3), 70, np.uint8)).save(folder / "PNGImages" / "FudanPed00001.png")
    Image.fromarray(mask).save(folder / "PedMasks" / "FudanPed00001_mask.png")
    _, labels = load_dataset("pennfudan", "all", tmp_path).load(0)
    np.testing.assert_array_equal(labels, mask // 255)


def test_damaged_copy_of_real_pennfudan_samples(real_data, tmp_path):
    """A few real Penn-Fudan pairs, copied to tmp_path and damaged: every bad file is reported."""
    source = real_data / "PennFudanPed"
    if not source.is_dir():
        pytest.skip(f"PennFudanPed is not in {real_data}")
    stems = sorted(p.stem for p in (source / "PNGImages").glob("*.png"))
    pick = ([s for s in stems if in_val("pennfudan", s, 0.2)][:2]
            + [s for s in stems if not in_val("pennfudan", s, 0.2)][:3])
    folder = tmp_path / "PennFudanPed"
    for sub in ("PNGImages", "PedMasks"):
        (folder / sub).mkdir(parents=True)
    for stem in pick:
        shutil.copy(source / "PNGImages" / f"{stem}.png", folder / "PNGImages")
        shutil.copy(source / "PedMasks" / f"{stem}_mask.png", folder / "PedMasks")
    bad_image = folder / "PNGImages" / f"{pick[0]}.png"
    bad_image.write_bytes(bad_image.read_bytes()[:1000])
    bad_mask = folder / "PedMasks" / f"{pick[2]}_mask.png"
    Image.fromarray(np.zeros((7, 9), np.uint8)).save(bad_mask)
    problems = [p for r in prepare("pennfudan", tmp_path) for p in r.problems]
    assert len(problems) == 2
    assert any(p.startswith(f"{bad_image}: cannot be decoded") for p in problems), problems
    assert any(p.startswith(f"{bad_mask}: mask is 7x9") for p in problems), problems


# ------------------------------------------------------------------ checkpoints that do not fit


def fit_quiet(cfg, **kw):
    return fit(cfg, device="cpu", verbose=False, **kw)


def test_checkpoints_that_do_not_fit_are_refused_by_name(tmp_path):
    bare = tmp_path / "bare.pt"
    torch.save(create_model("unet", 4, base_channels=8, depth=2).state_dict(), bare)
    with pytest.raises(DataError, match="not a seglib checkpoint: it lacks model.*Fix: pass best.pt"):
        fit_quiet(replace(TINY, out=str(tmp_path / "a")), init_from=bare)

    wide = replace(TINY, model_options={"base_channels": 16, "depth": 2}, epochs=1, out=str(tmp_path / "w"))
    fit_quiet(wide)
    with pytest.raises(DataError) as err:  # same model and classes, other widths
        fit_quiet(replace(TINY, out=str(tmp_path / "b")), init_from=tmp_path / "w" / "best.pt")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'w' / 'best.pt'}: its weights do not fit this UNet (size mismatch")
    assert "Fix: train with the options it was made with (its model_options: {'base_channels': 16" in message

    assert not (tmp_path / "b").exists()  # the refused runs wrote nothing: the folder they made is gone
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "w" / "last.pt", tmp_path / "b" / "last.pt")  # --resume with it
    with pytest.raises(DataError, match=r"--resume with other training options \(model_options: \{'base_"
                                        r"channels': 16, 'depth': 2\} → \{'base_channels': 8"):  # the option named,
        fit_quiet(replace(TINY, out=str(tmp_path / "b")), resume=True)  # before any state is loaded
    save_checkpoint({"model": {}, "meta": {"model": "unet", "num_classes": 4}}, tmp_path / "b" / "last.pt")
    with pytest.raises(DataError, match="it lacks optimizer, scheduler, epoch, rng, history, best"):
        fit_quiet(replace(TINY, out=str(tmp_path / "b")), resume=True)


def test_resume_from_a_truncated_last_pt_is_refused(tmp_path):
    cfg = replace(TINY, epochs=1, out=str(tmp_path))
    fit_quiet(cfg)
    last = tmp_path / "last.pt"
    last.write_bytes(last.read_bytes()[:4096])
    with pytest.raises(DataError, match=r"last.pt: truncated or corrupt checkpoint .*Fix: delete it"):
        fit_quiet(replace(cfg, epochs=2), resume=True)


# ------------------------------------------------------------------ training faults


def test_kill_9_mid_epoch_then_resume(tmp_path):
    out, epochs = tmp_path / "run", 6
    train = ["train", "--smoke", "--dataset", "synthetic", "--epochs", str(epochs), "--image-size", "96",
             "--out", str(out)]
    proc = subprocess.Popen([*SEGLIB, *train], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=tmp_path)
    try:
        for line in proc.stdout:  # "epoch   1/6 | ..." is printed once last.pt is written
            if line.startswith("epoch   1/"):
                break
        else:
            pytest.fail("the run ended without finishing epoch 1")
        time.sleep(0.15)  # inside epoch 2
        proc.kill()       # SIGKILL: no handler runs, nothing is flushed
        printed = 1 + sum(line.startswith("epoch ") for line in proc.stdout.read().splitlines())
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -9
    state = load_checkpoint(out / "last.pt", expect={"model": "unet", "num_classes": 4})
    done = state["epoch"]
    assert printed <= done <= printed + 1 < epochs + 1, (printed, done)  # at most one epoch lost
    assert done < epochs, "the run ended before the kill: nothing was tested"
    before = [row["epoch"] for row in json.loads((out / "history.json").read_text())]
    # history.json is written just after last.pt: a kill between the two leaves it one epoch behind (the resume
    # takes its history from last.pt, asserted below)
    assert before == list(range(1, len(before) + 1)) and done - 1 <= len(before) <= done, (before, done)

    resumed = cli(*train, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {out / 'last.pt'} after epoch {done}" in resumed.stdout
    history = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in history] == list(range(1, epochs + 1))
    assert history[:done] == state["history"]  # the epochs before the kill are kept as they were
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == epochs
    for name in ("best.pt", "last.pt"):
        ckpt = load_checkpoint(out / name, expect={"model": "unet", "num_classes": 4})
        create_model("unet", 4, **TINY.model_options).load_state_dict(ckpt["model"])
    assert load_checkpoint(out / "last.pt")["epoch"] == epochs
    again = cli(*train, "--resume", cwd=tmp_path)  # nothing left to train: said, not a silent no-op
    assert again.returncode == 0 and f"after epoch {epochs}: its {epochs} epochs are done" in again.stdout


WRITER = """
import sys, torch
from seglib.checkpoint import save_checkpoint
for i in range(1, 10_000):
    save_checkpoint({"epoch": i, "w": torch.full((int(sys.argv[2]),), float(i))}, sys.argv[1])
    print(i, flush=True)
"""


def test_a_new_run_removes_half_written_checkpoints_of_a_killed_one(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stray = out / ".last.pt.k1ll3d.tmp"
    stray.write_bytes(b"half a checkpoint")
    keep = out / "notes.txt"
    keep.write_text("mine")
    fit(replace(TINY, epochs=1, out=str(out)), device="cpu", verbose=False)
    assert not stray.exists() and keep.read_text() == "mine"
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "last.pt"]


@pytest.mark.parametrize("old, writes_before_kill", [(False, 0), (True, 0), (True, 2)])
def test_kill_9_during_a_checkpoint_write(tmp_path, old, writes_before_kill):
    """The target is the previous complete checkpoint (or absent), never a half file."""
    target, n = tmp_path / "last.pt", 24_000_000  # ~96 MB: long enough to be caught mid-write
    if old:
        save_checkpoint({"epoch": 0, "w": torch.zeros(n)}, target)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(n)], stdout=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    try:
        for _ in range(writes_before_kill):
            assert proc.stdout.readline().strip()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until a temporary file is being filled
            temps = [p for p in tmp_path.glob(".last.pt.*.tmp") if p.stat().st_size > 0]
            if temps:
                break
            time.sleep(0.002)
        else:
            pytest.fail("the writer never started a checkpoint")
        proc.kill()
        proc.wait()
    finally:
        proc.kill()
        proc.wait()
    completed = writes_before_kill + len(proc.stdout.read().split())  # may have finished one more
    if not old and not target.exists():
        assert completed == 0
    else:
        state = load_checkpoint(target)
        assert max(writes_before_kill, 0 if old else 1) <= state["epoch"] <= completed + 1
        assert torch.equal(state["w"], torch.full((n,), float(state["epoch"])))  # complete, not mixed
    # whatever kill -9 left behind is hidden and not named *.pt: never taken for a checkpoint
    assert [p.name for p in tmp_path.glob("*.pt")] == (["last.pt"] if target.exists() else [])
    strays = [p for p in tmp_path.iterdir() if p.name != "last.pt"]
    assert all(p.name.startswith(".last.pt.") and p.name.endswith(".tmp") for p in strays), strays
    for stray in strays:  # and a half-written one is recognised as such if loaded by hand
        if stray.stat().st_size < 4 * n:
            with pytest.raises(DataError, match="truncated or corrupt checkpoint"):
                load_checkpoint(stray)


def poison_loss(monkeypatch, value: float, after_calls: int = 3):
    """The real loss for epoch 1 (2 train + 1 val calls), then multiplied by ``value`` (a hook)."""
    real_build = engine.build_loss

    def build(*args, **kwargs):
        loss_fn, calls = real_build(*args, **kwargs), itertools.count(1)
        loss_fn.register_forward_hook(lambda module, inputs, out: out * value if next(calls) > after_calls else out)
        return loss_fn

    monkeypatch.setattr(engine, "build_loss", build)


def test_inf_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    poison_loss(monkeypatch, float("inf"))
    # the first inf step turns the weights into NaN, so the epoch's mean loss may read nan
    with pytest.raises(NonFiniteLoss, match=r"the training loss became (inf|nan) ; lower --lr \(now .*last "
                                            "good checkpoint is kept"):
        fit_quiet(replace(TINY, epochs=3, out=str(tmp_path)))
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert [row["epoch"] for row in json.loads((tmp_path / "history.json").read_text())] == [1]
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1


def test_a_loss_not_finite_from_the_start_says_no_checkpoint_was_written(tmp_path, monkeypatch):
    poison_loss(monkeypatch, float("nan"), after_calls=0)  # what --lr inf gives: nothing finite to keep
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLoss) as err:
        fit_quiet(replace(TINY, out=str(out)))
    assert str(err.value).endswith("; no checkpoint was written: this happened before the first one")
    assert "kept" not in str(err.value) and not out.exists()  # the folder it made, empty, is removed


@pytest.mark.parametrize("batch_size, hint", [(4, "try --batch-size 2"),
                                              (1, "try --image-size 16 (or a smaller model)")])
def test_cuda_out_of_memory_names_what_to_try(tmp_path, monkeypatch, batch_size, hint):
    """Simulated (no GPU here): the train step raises torch.cuda.OutOfMemoryError in epoch 2."""
    real_step, calls = engine.train_one_epoch, {"n": 0}

    def step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", step)
    with pytest.raises(SeglibError) as err:
        fit_quiet(replace(TINY, batch_size=batch_size, out=str(tmp_path)))
    assert str(err.value) == f"CUDA out of memory at --batch-size {batch_size} and --image-size 32; {hint}"
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1  # the finished epoch is kept
