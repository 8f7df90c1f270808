"""The command line loses no data and says what is wrong: outputs never replace what is already
there (a run, ground-truth masks, the checkpoint being read), odd inputs are refused by name.

The commands run in this process through ``seglib.cli.main`` (exit status and stderr as a user
sees them, without paying for a fresh interpreter each time).
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglib.checkpoint import load_checkpoint
from seglib.cli import main
from seglib.data import load_dataset
from seglib.data.io import read_image
from seglib.engine import TrainConfig, fit
from seglib.errors import ConfigError, DataError
from seglib.masks import binarize
from seglib.synthetic import make_sample
from seglib.utils import write_atomic

TINY = TrainConfig(dataset="synthetic", model="unet", model_options={"base_channels": 8, "depth": 2},
                   epochs=1, image_size=32, batch_size=4, max_samples=8, max_steps=2, lr=1e-2,
                   data_path="gpu", num_workers=0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    fit(TrainConfig(**{**TINY.__dict__, "out": str(out)}), device="cpu", verbose=False)
    return out


def seglib(capsys, *args) -> tuple[int, str]:
    """Exit status and the last stderr line of ``python -m seglib ARGS``."""
    status = main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    return status, err[-1] if err else ""


def checksums(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_train_refuses_to_replace_a_run_unless_asked(run_dir, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    before = checksums(out)
    status, line = seglib(capsys, "train", "--smoke", "--dataset", "synthetic", "--epochs", "1", "--out", out)
    assert status == 2 and f"{out} already holds a run (best.pt, last.pt, metrics.json)" in line
    assert "--resume" in line and "--overwrite" in line
    assert checksums(out) == before


def test_resume_without_last_pt_says_it_starts_afresh(tmp_path, capsys, monkeypatch):
    def stop(*args):
        raise ConfigError("stopped here by the test")

    monkeypatch.setattr("seglib.cli.ensure_dataset", stop)
    assert main(["train", "--smoke", "--dataset", "synthetic", "--resume", "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert f"note: {tmp_path / 'new' / 'last.pt'} does not exist: starting a new run" in err


def test_resume_refuses_a_run_of_another_dataset_or_size(run_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    cfg = TrainConfig(**{**TINY.__dict__, "epochs": 2, "out": str(out)})
    with pytest.raises(DataError, match="checkpoint is for image_size=32, not 48"):
        fit(TrainConfig(**{**cfg.__dict__, "image_size": 48}), device="cpu", verbose=False, resume=True)
    state = load_checkpoint(out / "last.pt")
    state["meta"]["dataset"] = "pennfudan"  # same model and classes would have passed before
    torch.save(state, out / "last.pt")
    with pytest.raises(DataError, match="checkpoint is for dataset='pennfudan', not 'synthetic'"):
        fit(cfg, device="cpu", verbose=False, resume=True)


def test_predict_never_replaces_existing_files_unless_asked(run_dir, tmp_path, capsys):
    inputs, truth = tmp_path / "images", tmp_path / "masks"
    inputs.mkdir()
    truth.mkdir()
    for i in range(2):
        image, mask = make_sample(i, (24, 30))
        Image.fromarray(image).save(inputs / f"{i}.png")
        Image.fromarray(mask).save(truth / f"{i}.png")  # ground truth the user pointed --output at by mistake
    before = checksums(truth)
    status, line = seglib(capsys, "predict", "--checkpoint", run_dir / "best.pt", "--input", inputs,
                          "--output", truth)
    assert status == 2 and "exists (2 of the outputs already do)" in line and "--overwrite" in line
    assert checksums(truth) == before
    assert seglib(capsys, "predict", "--checkpoint", run_dir / "best.pt", "--input", inputs, "--output", truth,
                  "--overwrite")[0] == 0
    assert checksums(truth) != before


def test_predict_refuses_an_overlay_name_that_is_another_inputs_label(run_dir, tmp_path, capsys):
    inputs = tmp_path / "images"
    inputs.mkdir()
    for name in ("a.png", "a_overlay.png"):
        Image.fromarray(make_sample(0, (24, 30))[0]).save(inputs / name)
    status, line = seglib(capsys, "predict", "--checkpoint", run_dir / "best.pt", "--input", inputs,
                          "--output", tmp_path / "out", "--overlay")
    assert status == 2 and "overwrite each other" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, flag", [("evaluate", "--json"), ("export", "--onnx")])
def test_outputs_never_replace_the_checkpoint_being_read(run_dir, tmp_path, capsys, command, flag):
    checkpoint = tmp_path / "best.pt"
    shutil.copy(run_dir / "best.pt", checkpoint)
    before = checkpoint.read_bytes()
    status, line = seglib(capsys, command, "--checkpoint", checkpoint, flag, checkpoint)
    assert status == 2 and f"is the checkpoint being read: {flag} would overwrite it" in line
    assert checkpoint.read_bytes() == before
    status, line = seglib(capsys, command, "--checkpoint", checkpoint, flag, tmp_path)
    assert status == 2 and f"{tmp_path}: is a folder" in line


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
        TrainConfig(**{**TINY.__dict__, option: value})


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


def test_datasets_names_a_missing_root(tmp_path, capsys):
    status, line = seglib(capsys, "datasets", "--root", tmp_path / "nowhere")
    assert status == 2 and line == f"error: {tmp_path / 'nowhere'}: folder not found. Fix: pass the folder " \
                                   "that holds the datasets"


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
