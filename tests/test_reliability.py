"""Reliability and security, end to end (issue 7): bad inputs, faults and untrusted files.

What test_data, test_masks, test_download, test_checkpoint and test_engine already cover is not
repeated here; docs/RELIABILITY.md maps every case of the issue to the test that checks it.
Command-line cases run ``python -m seglib`` in a subprocess and check the exit status, that the
error is one ``error:`` line naming the file or value and what to do, that there is no traceback,
and that nothing was written half.
"""

import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglib import engine
from seglib.checkpoint import load_checkpoint, save_checkpoint
from seglib.data import SPECS, find_folder, load_dataset
from seglib.data.prepare import prepare
from seglib.data.splits import in_val
from seglib.engine import NonFiniteLoss, TrainConfig, fit
from seglib.errors import DataError, SeglibError
from seglib.models import create_model

SMALL = TrainConfig(dataset="synthetic", model="unet", model_options={"base_channels": 8, "depth": 2},
                    epochs=2, image_size=32, batch_size=4, max_samples=8, max_steps=2, lr=1e-2,
                    data_path="gpu", num_workers=0, log_freq=1)


def cli(*args, cwd):
    """``python -m seglib ARGS`` run in ``cwd`` (so that a default output folder lands there)."""
    return subprocess.run([sys.executable, "-m", "seglib", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def error_line(proc, *needles, status=2):
    """The last stderr line of a failed command: ``error: ...`` with every needle, no traceback."""
    assert proc.returncode == status, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert "error: " in line, proc.stderr
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def one_line_error(proc, *needles, status=2):
    """As :func:`error_line`, and stderr is that one line only, starting with ``error:``."""
    line = error_line(proc, *needles, status=status)
    assert proc.stderr.strip() == line and line.startswith("error: "), proc.stderr
    return line


def assert_one_line(proc):
    """stderr is exactly one line: no usage block, no notice before the error, no progress bar."""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def synthetic_copy(root: Path) -> Path:
    """A copy of the generated synthetic dataset, ``root/synthetic_shapes/{images,masks}``."""
    folder = root / SPECS["synthetic"].folder
    shutil.copytree(find_folder("synthetic"), folder)
    return folder


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ data, through the CLI


def test_prepare_lists_every_damaged_file_and_exits_1(tmp_path):
    folder = synthetic_copy(tmp_path / "data")
    images, masks = folder / "images", folder / "masks"
    (images / "shapes_0000.png").write_bytes(b"")                                     # zero bytes
    data = (images / "shapes_0001.png").read_bytes()
    (images / "shapes_0001.png").write_bytes(data[: len(data) // 2])                  # truncated
    (masks / "shapes_0002.png").write_bytes(b"not a png" * 40)                        # corrupt
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(masks / "shapes_0003.png")    # wrong size
    labels = np.array(Image.open(masks / "shapes_0004.png"))
    labels[:2, :3] = 9                                                               # 4 classes
    Image.fromarray(labels).save(masks / "shapes_0004.png")
    rgb = np.array(Image.open(images / "shapes_0005.png"))
    Image.fromarray(rgb).convert("L").save(images / "shapes_0005.png")              # grayscale
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(
        images / "shapes_0006.png")                                                  # RGBA
    before = snapshot(folder)

    proc = cli("prepare", "synthetic", "--root", str(tmp_path / "data"), cwd=tmp_path)

    line = one_line_error(proc, status=1)
    assert line.startswith("error: 5 samples failed the checks above. Fix: repair or replace each file"), line
    problems = [line.strip() for line in proc.stdout.splitlines() if "PROBLEM:" in line]
    expected = {images / "shapes_0000.png": "file is empty (0 bytes)",
                images / "shapes_0001.png": "cannot be decoded as an image",
                masks / "shapes_0002.png": "cannot be decoded as an image",
                masks / "shapes_0003.png": "mask is 10x12 but the image is 96x128 (HxW)",
                masks / "shapes_0004.png": "6 pixels have labels outside 0..3 and the ignore index 255: 9 (6 px)"}
    assert len(problems) == len(expected), proc.stdout
    for path, what in expected.items():
        line = next((p for p in problems if p.startswith(f"PROBLEM: {path}: ")), None)
        assert line is not None, f"{path} not listed in {problems}"
        assert what in line and ". Fix: " in line, line
    assert "shapes_0005" not in proc.stdout and "shapes_0006" not in proc.stdout  # read as RGB
    assert snapshot(folder) == before  # prepare never writes into the dataset


def test_prepare_image_without_mask_names_both(tmp_path):
    folder = synthetic_copy(tmp_path / "data")
    (folder / "masks" / "shapes_0007.png").unlink()
    proc = cli("prepare", "synthetic", "--root", str(tmp_path / "data"), cwd=tmp_path)
    one_line_error(proc, str(folder / "masks"), "1 images have no mask", "shapes_0007.png",
                   "Fix: restore the missing masks or remove those images")


def test_prepare_missing_and_empty_dataset_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = cli("prepare", "tiktok", "--root", str(empty), cwd=tmp_path)
    error_line(proc, str(empty / "tiktok_person"), "cannot be downloaded automatically", "Fix:",
               "images/<video>_<frame>.png")
    assert list(empty.iterdir()) == []  # nothing created in a folder that was only looked at

    (tmp_path / "layout" / "tiktok_person" / "images").mkdir(parents=True)
    (tmp_path / "layout" / "tiktok_person" / "masks").mkdir()
    proc_empty = cli("prepare", "tiktok", "--root", str(tmp_path / "layout"), cwd=tmp_path)
    one_line_error(proc_empty, str(tmp_path / "layout" / "tiktok_person"),
                   "no 'train' samples found for tiktok", "Fix:")
    assert_one_line(proc)


def test_prepare_never_creates_a_missing_root(tmp_path):
    missing = tmp_path / "no" / "such"
    proc = cli("prepare", "pennfudan", "--root", str(missing), cwd=tmp_path)
    one_line_error(proc, str(missing), "folder not found", "Fix: pass an existing folder with --root")
    assert not (tmp_path / "no").exists()


def test_prepare_refuses_an_archive_that_escapes_its_folder(tmp_path):
    archive = tmp_path / "PennFudanPed.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name in ("PennFudanPed/PedMasks/a.png", "../escaped.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tf.addfile(info, io.BytesIO(b"x"))
    root = tmp_path / "root"
    proc = cli("prepare", "pennfudan", "--root", str(root), "--source", str(archive), cwd=tmp_path)
    error_line(proc, "../escaped.txt", "'..'", "Fix:", "nothing was extracted")
    assert not (tmp_path / "escaped.txt").exists()
    assert not (root / "PennFudanPed").exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".seglib-extract-")]
    assert_one_line(proc)


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


# ------------------------------------------------------------------ command line


BAD_OPTIONS = {  # case: (extra train arguments, what the error line must hold)
    "epochs 0": (["--epochs", "0"], ["argument --epochs", "must be at least 1, not 0"]),
    "lr -1": (["--lr", "-1"], ["argument --lr", "must be positive, not -1.0"]),
    "amp fp8": (["--amp", "fp8"], ["argument --amp", "invalid choice: 'fp8'", "bf16"]),
    "model segformer": (["--model", "segformer"], ["argument --model", "invalid choice: 'segformer'", "unet"]),
}


@pytest.fixture(scope="module")
def cli_errors(tmp_path_factory):
    """The command-line error cases, run in parallel (each pays for importing torch): name -> result."""
    base = tmp_path_factory.mktemp("cli_errors")
    blocker = base / "a_file"
    blocker.write_text("keep me")
    smoke = ["train", "--smoke", "--dataset"]
    cases = {name: [*smoke, "synthetic", "--out", str(base / name / "out"), *args]
             for name, (args, _) in BAD_OPTIONS.items()}
    cases["unknown dataset"] = [*smoke, "pascal", "--out", str(base / "unknown dataset" / "out")]
    cases["unwritable out"] = [*smoke, "synthetic", "--out", str(blocker / "run")]
    cases["debug"] = ["--debug", *smoke, "pascal"]
    procs = {}
    for name, args in cases.items():
        (base / name).mkdir()
        procs[name] = subprocess.Popen([sys.executable, "-m", "seglib", *args], cwd=base / name,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return base, results


@pytest.mark.parametrize("case", BAD_OPTIONS)
def test_bad_train_options_exit_2_naming_the_value(cli_errors, case):
    base, results = cli_errors
    error_line(results[case], *BAD_OPTIONS[case][1])
    assert list((base / case).iterdir()) == []  # neither --out nor a default runs/ folder
    assert_one_line(results[case])


def test_unknown_dataset_is_one_line(cli_errors):
    base, results = cli_errors
    one_line_error(results["unknown dataset"], "unknown dataset 'pascal'", "choose one of:", "synthetic")
    assert list((base / "unknown dataset").iterdir()) == []


def test_unwritable_out_is_one_line(cli_errors):
    base, results = cli_errors
    blocker = base / "a_file"
    one_line_error(results["unwritable out"], f"cannot write to --out {blocker / 'run'}",
                   "choose a writable folder")
    assert blocker.read_text() == "keep me"
    assert list((base / "unwritable out").iterdir()) == []


def test_debug_shows_the_traceback(cli_errors):
    proc = cli_errors[1]["debug"]
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "seglib.errors.ConfigError: unknown dataset 'pascal'" in proc.stderr


class Payload:
    """Unpickling this runs a shell command: what a malicious checkpoint carries."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cli_refuses_a_pickle_payload_without_running_it(tmp_path):
    marker, evil = tmp_path / "pwned", tmp_path / "teacher.pt"
    torch.save({"model": {}, "meta": {"model": "unet"}, "extra": Payload(marker)}, evil)
    out = tmp_path / "out"
    proc = cli("train", "--smoke", "--dataset", "synthetic", "--out", str(out), "--init-from", str(evil),
               cwd=tmp_path)
    one_line_error(proc, f"error: {evil}: refused: the file holds pickled Python objects",
                   "Fix: only load checkpoints you trust")
    assert not marker.exists()
    assert not list(out.glob("*.pt"))


# ------------------------------------------------------------------ checkpoints that do not fit


def fit_quiet(cfg, **kw):
    return fit(cfg, device="cpu", verbose=False, **kw)


def test_checkpoints_that_do_not_fit_are_refused_by_name(tmp_path):
    bare = tmp_path / "bare.pt"
    torch.save(create_model("unet", 4, base_channels=8, depth=2).state_dict(), bare)
    with pytest.raises(DataError, match="not a seglib checkpoint: it lacks model.*Fix: pass best.pt"):
        fit_quiet(replace(SMALL, out=str(tmp_path / "a")), init_from=bare)

    wide = replace(SMALL, model_options={"base_channels": 16, "depth": 2}, epochs=1, out=str(tmp_path / "w"))
    fit_quiet(wide)
    with pytest.raises(DataError) as err:  # same model and classes, other widths
        fit_quiet(replace(SMALL, out=str(tmp_path / "b")), init_from=tmp_path / "w" / "best.pt")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'w' / 'best.pt'}: its weights do not fit this UNet (size mismatch")
    assert "Fix: train with the options it was made with (its model_options: {'base_channels': 16" in message

    shutil.copy(tmp_path / "w" / "last.pt", tmp_path / "b" / "last.pt")  # --resume with it
    with pytest.raises(DataError, match="its weights do not fit"):
        fit_quiet(replace(SMALL, out=str(tmp_path / "b")), resume=True)
    save_checkpoint({"model": {}, "meta": {"model": "unet", "num_classes": 4}}, tmp_path / "b" / "last.pt")
    with pytest.raises(DataError, match="it lacks optimizer, scheduler, epoch, rng, history, best"):
        fit_quiet(replace(SMALL, out=str(tmp_path / "b")), resume=True)


def test_resume_from_a_truncated_last_pt_is_refused(tmp_path):
    cfg = replace(SMALL, epochs=1, out=str(tmp_path))
    fit_quiet(cfg)
    last = tmp_path / "last.pt"
    last.write_bytes(last.read_bytes()[:4096])
    with pytest.raises(DataError, match=r"last.pt: truncated or corrupt checkpoint .*Fix: delete it"):
        fit_quiet(replace(cfg, epochs=2), resume=True)


# ------------------------------------------------------------------ training faults


def test_kill_9_mid_epoch_then_resume(tmp_path):
    out, epochs = tmp_path / "run", 6
    args = [sys.executable, "-m", "seglib", "train", "--smoke", "--dataset", "synthetic",
            "--epochs", str(epochs), "--image-size", "96", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path)
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
    before = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in before][:done] == list(range(1, done + 1))

    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {out / 'last.pt'} at epoch {done}" in resumed.stdout
    history = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in history] == list(range(1, epochs + 1))
    assert history[:done] == state["history"]  # the epochs before the kill are kept as they were
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == epochs
    for name in ("best.pt", "last.pt"):
        ckpt = load_checkpoint(out / name, expect={"model": "unet", "num_classes": 4})
        create_model("unet", 4, base_channels=8).load_state_dict(ckpt["model"])
    assert load_checkpoint(out / "last.pt")["epoch"] == epochs


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
    fit(replace(SMALL, epochs=1, out=str(out)), device="cpu", verbose=False)
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
        fit_quiet(replace(SMALL, epochs=3, out=str(tmp_path)))
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert [row["epoch"] for row in json.loads((tmp_path / "history.json").read_text())] == [1]
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1


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
        fit_quiet(replace(SMALL, batch_size=batch_size, out=str(tmp_path)))
    assert str(err.value) == f"CUDA out of memory at --batch-size {batch_size} and --image-size 32; {hint}"
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1  # the finished epoch is kept
