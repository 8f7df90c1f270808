"""The command line loses no data and says what is wrong: outputs never replace what is already
there (a run, ground-truth masks, the checkpoint being read), odd inputs and options are refused by
name, each with one ``error:`` line on stderr and a non-zero exit status.

Most commands run in this process through ``seglib.cli.main`` (exit status and stderr as a user
sees them, without paying for a fresh interpreter each time); the cases that check all a user sees
(stderr is that one line, no traceback, nothing written, the process's exit status) run
``python -m seglib`` in a subprocess. The commands at work: test_cli.py.
"""

import errno
import io
import os
import shutil
import subprocess
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglib.checkpoint import load_checkpoint
from seglib.cli import main
from seglib.data import find_folder, load_dataset
from seglib.data.io import read_image
from seglib.engine import fit
from seglib.errors import ConfigError, DataError
from seglib.masks import binarize
from seglib.synthetic import make_sample
from seglib.utils import write_atomic

from helpers import SEGLIB, TINY, cli, groups_in_both_splits, synthetic_copy, write_png_pairs

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


def seglib(capsys, *args) -> tuple[int, str]:
    """Exit status and the last stderr line of ``python -m seglib ARGS``."""
    status = main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    return status, err[-1] if err else ""


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


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


# ------------------------------------------------------------------ train


def test_train_refuses_to_replace_a_run_unless_asked(smoke_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(smoke_run, out)
    before = snapshot(out)
    status, line = seglib(capsys, "train", "--smoke", "--dataset", "synthetic", "--epochs", "1", "--out", out)
    assert status == 2 and f"{out} already holds a run (best.pt, last.pt, metrics.json)" in line
    assert "--resume" in line and "--overwrite" in line
    assert snapshot(out) == before


def test_resume_without_last_pt_says_it_starts_afresh(tmp_path, capsys, monkeypatch):
    def stop(*args):
        raise ConfigError("stopped here by the test")

    monkeypatch.setattr("seglib.cli.train.ensure_dataset", stop)
    assert main(["train", "--smoke", "--dataset", "synthetic", "--resume", "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert f"note: {tmp_path / 'new' / 'last.pt'} does not exist: starting a new run" in err


def test_resume_refuses_a_run_of_another_dataset_or_size(smoke_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(smoke_run, out)
    cfg = replace(TINY, epochs=2, out=str(out))
    with pytest.raises(DataError, match="checkpoint is for image_size=32, not 48"):
        fit(replace(cfg, image_size=48), device="cpu", verbose=False, resume=True)
    state = load_checkpoint(out / "last.pt")
    state["meta"]["dataset"] = "pennfudan"  # same model and classes would have passed before
    torch.save(state, out / "last.pt")
    with pytest.raises(DataError, match="checkpoint is for dataset='pennfudan', not 'synthetic'"):
        fit(cfg, device="cpu", verbose=False, resume=True)


SMOKE = ["train", "--smoke", "--dataset", "synthetic"]


@pytest.mark.skipif(fcntl is None, reason="no fcntl: runs are not locked here")
def test_a_second_training_into_a_locked_folder_stops_at_once(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "w") as held:  # what the first training holds until it ends
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242")
        held.flush()
        status, line = seglib(capsys, *SMOKE, "--epochs", "1", "--out", out)
    assert status == 2 and line == (f"error: {out}: another training is writing this folder (pid 4242). "
                                    "Fix: wait for it, or pass another --out")
    assert [p.name for p in out.iterdir()] == [".lock"]
    fit(replace(TINY, epochs=1, out=str(out)), device="cpu", verbose=False)  # takes the lock, then removes it
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "history.csv", "history.json", "last.pt",
                                                     "metrics.json"]


def test_resume_without_last_pt_never_starts_over_a_finished_run(smoke_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(smoke_run, out)
    (out / "last.pt").unlink()
    before = snapshot(out)
    status, line = seglib(capsys, *SMOKE, "--resume", "--out", out)
    assert status == 2 and line == (f"error: {out}: holds a run (best.pt, metrics.json, history.json, history.csv) "
                                    "but no last.pt to resume from. Fix: pass another --out for a new run, or drop "
                                    "--resume and pass --overwrite to replace it")
    assert snapshot(out) == before


def test_resume_refuses_changed_options_and_goes_on_with_the_runs_own(smoke_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(smoke_run, out)
    before = snapshot(out)
    status, line = seglib(capsys, *SMOKE, "--resume", "--out", out, "--epochs", "2", "--lr", "0.5", "--loss",
                          "dice", "--seed", "3", "--num-workers", "1")
    assert status == 2 and line.startswith(f"error: {out / 'last.pt'}: --resume with other training options "
                                           "(lr: 0.01 → 0.5; loss: 'ce' → 'dice'; seed: 0 → 3). Fix: drop them")
    assert snapshot(out) == before
    assert seglib(capsys, "train", "--resume", "--out", out, "--epochs", "2")[0] == 0  # options from last.pt
    state = load_checkpoint(out / "last.pt")
    config = {key: state["config"][key] for key in ("lr", "loss", "seed", "loader", "model_options")}
    assert state["epoch"] == 2 and config == {"lr": 0.01, "loss": "ce", "seed": 0, "loader": "gpu",
                                              "model_options": {"base_channels": 8, "depth": 2}}


def test_a_deeplab_run_resumes_with_its_own_model_options_unless_one_is_changed(tmp_path, capsys):
    out = tmp_path / "dl"
    args = [*SMOKE, "--model", "deeplabv3plus", "--backbone", "resnet18", "--max-steps", "1", "--out", out]
    assert seglib(capsys, *args, "--epochs", "1")[0] == 0
    saved = load_checkpoint(out / "last.pt")["config"]["model_options"]
    assert saved == {"backbone": "resnet18"}  # the flags given, no default added
    status, line = seglib(capsys, *args, "--epochs", "2", "--resume", "--overwrite")
    assert status == 2 and line == f"error: --resume goes on with the run in {out} and --overwrite replaces it: " \
                                   "keep one"
    status, line = seglib(capsys, "train", "--resume", "--out", out, "--epochs", "2", "--no-train-trunk")
    assert status == 2 and "(model_options: {'backbone': 'resnet18'} → {'backbone': 'resnet18', 'train_trunk': " \
                           "False})" in line, line
    status, line = seglib(capsys, "train", "--resume", "--out", out, "--epochs", "2", "--model", "unet")
    assert status == 2 and "(model: 'deeplabv3plus' → 'unet'; model_options: {'backbone'" in line, line
    # --backbone left out, with or without --model: the run's own (it used to be dropped, and the resume refused)
    assert seglib(capsys, "train", "--model", "deeplabv3plus", "--resume", "--out", out, "--epochs", "2")[0] == 0
    assert seglib(capsys, "train", "--resume", "--out", out, "--epochs", "3", "--train-trunk")[0] == 0  # the default
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 3 and state["config"]["model_options"] == {"backbone": "resnet18"}


def test_a_full_disk_while_writing_last_pt_is_one_line_and_keeps_the_previous_one(smoke_run, tmp_path,
                                                                                   capsys, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(smoke_run, out)
    before, real_save = (out / "last.pt").read_bytes(), torch.save

    def save(state, file):
        if ".last.pt." in file.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(state, file)

    monkeypatch.setattr(torch, "save", save)
    status, line = seglib(capsys, *SMOKE, "--resume", "--out", out, "--epochs", "2")
    assert status == 2 and line.startswith(f"error: {out / 'last.pt'}: no space left on the disk: ")
    assert (out / "last.pt").read_bytes() == before and not list(out.glob(".*.tmp"))


def test_out_inside_a_dataset_or_holding_images_is_refused(tmp_path):
    inside = find_folder("synthetic") / "masks" / "run"
    with pytest.raises(DataError, match=f"{inside}: is inside the dataset folder .*Fix: write --out outside"):
        fit(replace(TINY, out=str(inside)), device="cpu", verbose=False)
    assert not inside.exists()
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    Image.fromarray(make_sample(0, (20, 20))[0]).save(pictures / "holiday.png")
    with pytest.raises(DataError, match=f"{pictures}: holds images"):
        fit(replace(TINY, out=str(pictures)), device="cpu", verbose=False)
    assert [p.name for p in pictures.iterdir()] == ["holiday.png"]


def test_out_is_checked_for_pictures_of_any_case_its_own_figures_and_the_init_from_it_would_overwrite(tmp_path):
    from seglib.run_folder import check_out

    shouting = tmp_path / "camera"
    shouting.mkdir()
    (shouting / "IMG_0001.JPG").write_bytes(b"photo")
    with pytest.raises(DataError, match=f"{shouting}: holds images"):
        check_out(replace(TINY, out=str(shouting)), init_from=None)
    run = tmp_path / "run"  # a finished run keeps its own figures beside its checkpoints: trained into again
    run.mkdir()
    (run / "metrics.json").write_text("{}")
    (run / "curves.png").write_bytes(b"figure")
    check_out(replace(TINY, out=str(run)), init_from=None)
    with pytest.raises(DataError, match="is --init-from and a checkpoint this run overwrites"):
        check_out(replace(TINY, out=str(run)), init_from=run / "best.pt")


def test_a_failed_run_removes_only_the_folders_it_made(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.touch()
    made, there = tmp_path / "new" / "run", tmp_path / "there"
    there.mkdir()
    for out in (made, there):
        with pytest.raises(DataError, match="checkpoint is empty"):
            fit(replace(TINY, out=str(out)), device="cpu", verbose=False, init_from=empty)
    assert not (tmp_path / "new").exists() and there.is_dir()


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
        procs[name] = subprocess.Popen([*SEGLIB, *args], cwd=base / name, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
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


# ------------------------------------------------------------------ predict, evaluate, export


def test_predict_never_replaces_existing_files_unless_asked(smoke_run, tmp_path, capsys):
    inputs, truth = tmp_path / "images", tmp_path / "masks"
    inputs.mkdir()
    truth.mkdir()
    for i in range(2):
        image, mask = make_sample(i, (24, 30))
        Image.fromarray(image).save(inputs / f"{i}.png")
        Image.fromarray(mask).save(truth / f"{i}.png")  # ground truth the user pointed --output at by mistake
    before = snapshot(truth)
    status, line = seglib(capsys, "predict", "--checkpoint", smoke_run / "best.pt", "--input", inputs,
                          "--output", truth)
    assert status == 2 and "exists (2 of the outputs already do)" in line and "--overwrite" in line
    assert snapshot(truth) == before
    assert seglib(capsys, "predict", "--checkpoint", smoke_run / "best.pt", "--input", inputs, "--output", truth,
                  "--overwrite")[0] == 0
    assert snapshot(truth) != before


def test_predict_refuses_an_overlay_name_that_is_another_inputs_label(smoke_run, tmp_path, capsys):
    inputs = tmp_path / "images"
    inputs.mkdir()
    for name in ("a.png", "a_overlay.png"):
        Image.fromarray(make_sample(0, (24, 30))[0]).save(inputs / name)
    status, line = seglib(capsys, "predict", "--checkpoint", smoke_run / "best.pt", "--input", inputs,
                          "--output", tmp_path / "out", "--overlay")
    assert status == 2 and line.startswith(f"error: {inputs / 'a_overlay.png'}: and {inputs / 'a.png'} would both "
                                           f"be written to {tmp_path / 'out' / 'a_overlay.png'}. Fix: rename one")
    assert not (tmp_path / "out").exists()
    (inputs / "a_overlay.png").rename(inputs / "a.jpg")  # the same name, another extension
    status, line = seglib(capsys, "predict", "--checkpoint", smoke_run / "best.pt", "--input", inputs,
                          "--output", tmp_path / "out")
    assert status == 2 and f"{inputs / 'a.jpg'}: and {inputs / 'a.png'} would both be written to" in line


@pytest.mark.parametrize("command, flag", [("evaluate", "--json"), ("export", "--onnx")])
def test_outputs_never_replace_the_checkpoint_being_read(smoke_run, tmp_path, capsys, command, flag):
    checkpoint = tmp_path / "best.pt"
    shutil.copy(smoke_run / "best.pt", checkpoint)
    before = checkpoint.read_bytes()
    status, line = seglib(capsys, command, "--checkpoint", checkpoint, flag, checkpoint, "--overwrite")
    assert status == 2 and (f"is the checkpoint being read: {flag} would overwrite it" if command == "evaluate"
                            else "an ONNX file's name ends in .onnx") in line
    assert checkpoint.read_bytes() == before
    folder = tmp_path / "folder.onnx"
    folder.mkdir()
    status, line = seglib(capsys, command, "--checkpoint", checkpoint, flag, folder)
    assert status == 2 and f"{folder}: is a folder" in line


@pytest.mark.parametrize("command, flag", [("evaluate", "--json"), ("export", "--onnx")])
def test_outputs_never_replace_a_file_unless_asked(smoke_run, tmp_path, capsys, command, flag):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    earlier = run / ("report.json" if command == "evaluate" else "model.onnx")
    earlier.write_text("old")
    before = snapshot(run)
    status, line = seglib(capsys, command, "--checkpoint", run / "best.pt", flag, earlier)
    assert status == 2 and line == (f"error: {earlier}: exists. Fix: pass --overwrite to replace it, "
                                    "or choose another name")
    assert snapshot(run) == before


def test_evaluate_json_replaces_only_with_overwrite_and_never_in_the_dataset(smoke_run, tmp_path, capsys):
    report = tmp_path / "report.json"
    report.write_text("old")
    assert seglib(capsys, "evaluate", "--checkpoint", smoke_run / "best.pt", "--json", report, "--overwrite",
                  "--max-images", "2")[0] == 0
    assert report.read_text().startswith("{")
    inside = find_folder("synthetic") / "report.json"
    status, line = seglib(capsys, "evaluate", "--checkpoint", smoke_run / "best.pt", "--json", inside, "--overwrite")
    assert status == 2 and f"{inside}: is inside the dataset folder" in line and not inside.exists()


def test_predict_and_export_never_write_into_a_dataset_even_with_overwrite(smoke_run, tmp_path, capsys):
    # predict --overwrite replaced a dataset's ground-truth masks; export --overwrite a dataset image or last.pt
    peds = tmp_path / "data" / "PennFudanPed"
    for sub in ("PNGImages", "PedMasks"):
        (peds / sub).mkdir(parents=True)
    mask = peds / "PedMasks" / "FudanPed00001_mask.png"
    mask.write_bytes(b"truth")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(photos / "FudanPed00001_mask.png")
    before = snapshot(tmp_path / "data")
    for output in (peds / "PedMasks", peds, peds / "PedMasks" / "new"):
        status, line = seglib(capsys, "predict", "--checkpoint", smoke_run / "best.pt", "-i", photos,
                              "--output", output, "--overwrite")
        assert status == 2 and f"{output}: is inside the dataset folder {peds}" in line, line
    status, line = seglib(capsys, "export", "--checkpoint", smoke_run / "best.pt", "--onnx",
                          peds / "PNGImages" / "model.onnx", "--overwrite")
    assert status == 2 and "is inside the dataset folder" in line, line
    assert snapshot(tmp_path / "data") == before and mask.read_bytes() == b"truth"
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    before = snapshot(run)
    status, line = seglib(capsys, "export", "--checkpoint", run / "best.pt", "--onnx", run / "last.pt", "--overwrite")
    assert status == 2 and "an ONNX file's name ends in .onnx" in line, line
    assert snapshot(run) == before


def test_cli_predict_never_overwrites_inputs(smoke_run, tmp_path):
    Image.fromarray(make_sample(0, (20, 20))[0]).save(tmp_path / "x.png")
    before = (tmp_path / "x.png").read_bytes()
    proc = cli("predict", "--checkpoint", smoke_run / "best.pt", "--input", str(tmp_path), "--output", str(tmp_path))
    assert proc.returncode == 2 and "overwrite the input images" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (tmp_path / "x.png").read_bytes() == before


def test_cli_evaluate_refuses_a_split_the_dataset_does_not_have(smoke_run):
    proc = cli("evaluate", "--checkpoint", smoke_run / "best.pt", "--split", "test")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: dataset 'synthetic' has no split 'test'; "
                                   "choose one of: train, val, all")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("device, message", [("cuda", "this machine has no CUDA GPUs; use --device cpu"),
                                             ("banana", "--device 'banana' is not a device")])
def test_a_device_this_machine_lacks_is_one_line(smoke_run, tmp_path, device, message):
    proc = cli("evaluate", "--checkpoint", smoke_run / "best.pt", "--device", device, "--json", tmp_path / "r.json")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
    assert not (tmp_path / "r.json").exists()


# ------------------------------------------------------------------ option values, checkpoint and output files


@pytest.mark.parametrize("args, needle", [
    (["predict", "--threshold", "2"], "argument --threshold: must be between 0 and 1, not 2.0"),
    (["predict", "--threshold", "nan"], "argument --threshold: must be between 0 and 1, not nan"),
    (["export", "--onnx", "m.onnx", "--opset", "11"], "argument --opset: 11 is older than"),
    (["prepare", "--max-samples", "0"], "argument --max-samples: must be at least 1, not 0"),
])
def test_nonsense_values_are_refused_before_any_work(tmp_path, capsys, args, needle):
    extra = ["--checkpoint", tmp_path / "x.pt"] if args[0] in ("predict", "export") else []
    extra += ["--input", tmp_path, "--output", tmp_path / "o"] if args[0] == "predict" else []
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in [*args, *extra]])
    assert exit_.value.code == 2 and needle in capsys.readouterr().err


@pytest.mark.parametrize("option, value", [("weight_decay", -1.0), ("warmup_epochs", -5.0), ("image_size", 7)])
def test_train_options_out_of_range_are_refused(option, value):
    with pytest.raises(ConfigError, match=f"{option} must be"):
        replace(TINY, **{option: value})


@pytest.mark.parametrize("content, problem", [(b"", "checkpoint is empty (0 bytes)"),
                                              (b"hello\n", "not a PyTorch checkpoint"),
                                              (None, "is a folder, not a checkpoint file")])
def test_files_that_are_not_checkpoints_are_named(tmp_path, capsys, content, problem):
    path = tmp_path / "model.pt"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    status, line = seglib(capsys, "export", "--checkpoint", path, "--onnx", tmp_path / "m.onnx")
    assert status == 2 and line.startswith(f"error: {path}: {problem}") and "Fix: " in line


def test_write_failures_name_the_target_not_a_temporary_file(tmp_path):
    (tmp_path / "a_file").write_text("keep me")
    for target, problem in ((tmp_path, "is a folder"), (tmp_path / "a_file" / "report.json", "cannot write it")):
        with pytest.raises(DataError) as err:
            write_atomic(target, lambda tmp: tmp.write_text("{}"))
        assert str(err.value).startswith(f"{target}: {problem}") and ".tmp" not in str(err.value)
    assert (tmp_path / "a_file").read_text() == "keep me"


# ------------------------------------------------------------------ prepare and datasets


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
    assert not root.exists()  # made for --source, removed with the rest: no dataset folder, no copy, no staging
    assert_one_line(proc)


def test_datasets_names_a_missing_root(tmp_path, capsys):
    status, line = seglib(capsys, "datasets", "--root", tmp_path / "nowhere")
    assert status == 2 and line == f"error: {tmp_path / 'nowhere'}: folder not found. Fix: pass the folder " \
                                   "that holds the datasets"


def test_datasets_lists_the_synthetic_set_without_generating_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SEGLIB_WORK_DIR", str(tmp_path / "work"))
    assert main(["datasets", "--root", str(tmp_path)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("synthetic "))
    assert line.endswith(" generated on first use") and not (tmp_path / "work").exists()
    assert main(["prepare", "synthetic", "--root", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["datasets", "--root", str(tmp_path)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("synthetic "))
    assert " train " in line and line.endswith(str(tmp_path / "work" / "synthetic_shapes")), line


# ------------------------------------------------------------------ masks and images


def camvid_copy(root: Path, mask: np.ndarray) -> Path:
    for split in ("train", "val"):
        (root / "CamVid" / split).mkdir(parents=True)
        (root / "CamVid" / f"{split}annot").mkdir()
        Image.fromarray(np.zeros((*mask.shape, 3), np.uint8)).save(root / "CamVid" / split / "0001.png")
        Image.fromarray(mask).save(root / "CamVid" / f"{split}annot" / "0001.png")
    return root / "CamVid" / "trainannot" / "0001.png"


def test_a_0_255_camvid_mask_is_refused_by_name(tmp_path):
    mask = np.zeros((12, 16), np.uint8)
    mask[4:, :] = 255
    path = camvid_copy(tmp_path, mask)
    with pytest.raises(DataError, match="holds values up to 255, but CamVid's masks hold 0-10") as err:
        load_dataset("camvid", "train", tmp_path).load(0)
    assert str(err.value).startswith(str(path))


def test_person_masks_stored_as_0_1_are_kept():
    mask = np.array([[0, 1, 1], [0, 0, 1]], np.uint8)
    assert binarize(mask).tolist() == mask.tolist()  # > 127 would make every pixel background
    assert binarize(mask * 255).tolist() == mask.tolist()


def test_colour_person_mask_error_names_the_file(tmp_path):
    folder = tmp_path / "PennFudanPed"
    (folder / "PNGImages").mkdir(parents=True)
    (folder / "PedMasks").mkdir()
    for i in range(5):
        Image.fromarray(make_sample(i, (20, 24))[0]).save(folder / "PNGImages" / f"P{i}.png")
        Image.fromarray(make_sample(i, (20, 24))[0]).save(folder / "PedMasks" / f"P{i}_mask.png")  # RGB
    ds = load_dataset("pennfudan", "all", tmp_path)
    with pytest.raises(DataError) as err:
        ds.load(0)
    assert str(err.value).startswith(str(folder / "PedMasks" / f"{ds.ids[0]}_mask.png"))


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    values = (np.arange(16 * 16).reshape(16, 16) * 256).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    image = read_image(tmp_path / "deep.png")
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 1], (values >> 8).astype(np.uint8))  # PIL alone: 255 almost everywhere


def test_a_run_with_a_relative_root_is_tested_evaluated_and_resumed_from_any_folder(tmp_path, monkeypatch, capsys):
    # the run recorded --root as given (relative): --test-only from another folder went to download the dataset,
    # evaluate looked in the default data folder, and a --resume that changed the dataset downloaded it first
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    videos = groups_in_both_splits("tiktok", [f"{i:05d}" for i in range(40)])
    write_png_pairs(project / "data" / "tiktok_person" / "images", project / "data" / "tiktok_person" / "masks",
                    [f"{v}_0001" for v in videos], size=32)
    elsewhere.mkdir()
    monkeypatch.chdir(project)
    assert main(["train", "--smoke", "--dataset", "tiktok", "--root", "data", "--out", "run", "--epochs", "1"]) == 0
    run = project / "run"
    assert load_checkpoint(run / "last.pt")["config"]["root"] == str(project / "data" / "tiktok_person")
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr("seglib.download.download_dataset", lambda *a, **k: pytest.fail("downloaded"))
    capsys.readouterr()
    assert main(["train", "--test-only", "--out", str(run)]) == 0
    assert main(["evaluate", "--checkpoint", str(run / "best.pt")]) == 0
    assert "downloading" not in capsys.readouterr().out
    status, line = seglib(capsys, "train", "--out", run, "--resume", "--dataset", "pets")
    assert status == 2 and "--resume with other training options (dataset: 'tiktok' → 'pets')" in line, line
    shutil.move(project / "data", tmp_path / "moved")
    status, line = seglib(capsys, "train", "--test-only", "--out", run)
    assert status == 2 and f"(the data of {run / 'best.pt'}, recorded as --root" in line, line


def test_cli_messages_say_what_is_wrong_and_what_to_do(smoke_run, tmp_path, capsys):
    status, line = seglib(capsys, "train", "--dataset", "pennfudann", "--out", tmp_path / "run")
    assert status == 2 and "unknown dataset 'pennfudann'; did you mean 'pennfudan'?" in line  # no suggestion
    status, line = seglib(capsys, "train", "--dataset", "PennFudanPed", "--out", tmp_path / "run")
    assert "did you mean 'pennfudan'?" in line  # the folder's name
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    status, line = seglib(capsys, "predict", "--checkpoint", smoke_run / "best.pt", "-i", a_file, "--output", a_file)
    assert status == 2 and f"{a_file}: is a file, not a folder" in line  # was "File exists ... check the disk"
    status, line = seglib(capsys, "train", "--smoke", "--dataset", "synthetic", "--out", a_file)
    assert status == 2 and f"--out {a_file} is a file, not a folder" in line and a_file.read_text() == "mine"
    with pytest.raises(DataError):  # --debug after the command: the traceback, not "unrecognized arguments"
        main(["predict", "--checkpoint", str(tmp_path / "absent.pt"), "-i", str(a_file), "--output",
              str(tmp_path / "out"), "--debug"])
