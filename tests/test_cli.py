"""The command line at work: ``python -m seglib`` datasets, prepare, train, evaluate, predict, export and latency,
each in a fresh interpreter, checked by what it prints and writes. Its refusals: test_cli_safety.py."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from seglib.checkpoint import load_checkpoint, save_checkpoint
from seglib.cli import build_parser, main, reference_argv
from seglib.data import SPECS, load_dataset
from seglib.errors import ConfigError, DataError
from seglib.evaluation import evaluate_dataset
from seglib.export import export_onnx
from seglib.inference import Predictor, load_model
from seglib.models import create_model
from seglib.synthetic import make_sample

from helpers import SEGLIB, cli


# ------------------------------------------------------------------ datasets and prepare


def test_cli_datasets_and_prepare():
    out = cli("datasets")
    assert out.returncode == 0
    for name in SPECS:
        assert name in out.stdout
    out = cli("prepare", "synthetic")
    assert out.returncode == 0 and "train" in out.stdout and "disc" in out.stdout
    out = cli("prepare", "pascal")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "unknown dataset 'pascal'" in out.stderr
    assert "Traceback" not in out.stderr


def test_output_cut_short_by_its_reader_is_no_error():
    """``seglib datasets | head -1``: the reader stops early; that is no failure to report."""
    proc = subprocess.Popen([*SEGLIB, "datasets"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 1 and first.startswith("data folder: ") and err == ""


# ------------------------------------------------------------------ train


def test_help_and_models_do_not_import_torchvision():
    """torchvision takes seconds to import: only building a DeepLabV3+ trunk (or finding its ImageNet weights)
    may load it, so ``--help`` and the UNets stay quick."""
    code = ("import sys; from seglib.cli import build_parser; from seglib.models import create_model; "
            "build_parser(); create_model('unet', num_classes=2); print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "False", out.stderr
    code = "import sys; from seglib.models import create_model; create_model('deeplabv3plus', num_classes=2); " \
           "print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "True", out.stderr


def test_cli_train_smoke(tmp_path):
    out = cli("train", "--smoke", "--out", str(tmp_path))  # without --dataset: the synthetic shapes, no download
    assert out.returncode == 0, out.stderr
    assert load_checkpoint(tmp_path / "best.pt")["meta"]["dataset"] == "synthetic"
    assert out.stdout.startswith("training unet on synthetic (")  # what runs, and where: defaults included
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert f"): 2 epochs at 32 px, batch 4, on {device}; outputs in {tmp_path}\n" in out.stdout
    assert "best val mIoU" in out.stdout and (tmp_path / "best.pt").is_file()
    assert "epoch   2/2 | train_loss" in out.stdout
    assert "it/s" not in out.stderr and "\r" not in out.stderr  # no progress bars in a log
    bad = cli("train", "--smoke", "--dataset", "synthetic", "--model", "segformer")
    assert bad.returncode == 2 and "invalid choice: 'segformer'" in bad.stderr
    default = cli("train", "--smoke", "--epochs", "1", cwd=tmp_path)  # named for what it trains on
    assert default.returncode == 0 and (tmp_path / "runs" / "synthetic_unet" / "best.pt").is_file(), default.stdout


def test_cli_trunk_lr_mult_and_grad_clip_reach_the_run(tmp_path):
    out = cli("train", "--smoke", "--dataset", "synthetic", "--model", "deeplabv3plus", "--trunk-lr-mult", "0.1",
              "--grad-clip", "1.5", "--epochs", "1", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    last = load_checkpoint(tmp_path / "last.pt")
    assert (last["config"]["trunk_lr_mult"], last["config"]["grad_clip"]) == (0.1, 1.5)
    groups = last["optimizer"]["param_groups"]
    assert [g["lr_mult"] for g in groups] == [0.1, 1.0]
    assert groups[0]["lr"] == pytest.approx(0.1 * groups[1]["lr"])
    history = json.loads((tmp_path / "history.json").read_text())
    assert history[0]["lr"] == pytest.approx(groups[1]["lr"])  # the logged rate is the head's
    bad = cli("train", "--smoke", "--dataset", "synthetic", "--trunk-lr-mult", "0.1", "--out", str(tmp_path / "u"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "deeplabv3plus" in bad.stderr


def test_the_reference_projects_sgd_and_step_decay_reach_the_run(tmp_path, capsys):
    # the CamVid project's SGD at momentum 0.99 without Nesterov, the Penn-Fudan project's step decay
    assert main(["train", "--smoke", "--epochs", "3", "--optimizer", "sgd", "--lr", "0.01", "--momentum", "0.99",
                 "--no-nesterov", "--schedule", "step", "--step-epochs", "1", "--gamma", "0.5",
                 "--warmup-epochs", "0", "--out", str(tmp_path / "run")]) == 0
    (group,) = load_checkpoint(tmp_path / "run" / "last.pt")["optimizer"]["param_groups"]
    assert (group["momentum"], group["nesterov"]) == (0.99, False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["lr"] for h in history] == pytest.approx([0.005, 0.0025, 0.00125])  # halved after every epoch
    assert main(["train", "--smoke", "--epochs", "2", "--lr", "0.01", "--min-lr", "0.001", "--warmup-epochs", "0",
                 "--out", str(tmp_path / "floor")]) == 0  # the cosine's end: eta_min, not 0
    (group,) = load_checkpoint(tmp_path / "floor" / "last.pt")["optimizer"]["param_groups"]
    assert group["lr"] == pytest.approx(0.001)
    capsys.readouterr()
    assert main(["train", "--smoke", "--schedule", "step", "--out", str(tmp_path / "x")]) == 2
    assert "--schedule step and --step-epochs N go together" in capsys.readouterr().err


# ------------------------------------------------------------------ quickstart


def test_cli_quickstart_smoke_writes_the_figure_and_the_pet_iou(tmp_path, capsys):
    """The README's first command, tiny (32 px, 2 steps): in this process, as it is the slow part of the file."""
    from seglib.cli import main

    out = tmp_path / "quickstart"
    assert main(["quickstart", "--smoke", "--out", str(out), "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert f"figure: {out / 'quickstart_pets.png'}" in said and "pets/val: " in said
    report = json.loads((out / "evaluation.json").read_text())
    pet = next(c for c in report["classes"] if c["name"] == "pet")
    assert report["split"] == "val" and 0 <= pet["iou"] <= 1 and pet["iou"] == report["foreground_iou"]
    with Image.open(out / "quickstart_pets.png") as figure:
        assert figure.format == "PNG" and figure.width > 3 * figure.height  # four panels in a row
    assert main(["quickstart", "--smoke", "--out", str(out)]) == 2  # never replaced unasked
    assert "already holds a run" in capsys.readouterr().err
    before = (out / "best.pt").stat().st_mtime_ns
    assert main(["quickstart", "--smoke", "--out", str(out), "--device", "cpu", "--overwrite"]) == 0, \
        capsys.readouterr().err  # its own figure is no dataset's image: it was refused as 'holds images'
    assert (out / "best.pt").stat().st_mtime_ns != before


# ------------------------------------------------------------------ evaluate, predict, export, latency


REPORT_SCHEMA = {"checkpoint": str, "split_file": type(None), "dataset": str, "split": str, "folder": str,
                 "images": int, "image_size": int, "tta": dict, "boundary_width": (int, str), "pixel_accuracy": float,
                 "miou": float, "mdice": float, "mean_class_accuracy": float, "boundary_miou": float,
                 "foreground_iou": type(None), "classes": list, "confusion_matrix": list,
                 "ignore_index": int, "seconds": float}
CLASS_SCHEMA = {"name": str, "iou": (float, type(None)), "dice": (float, type(None)),
                "accuracy": (float, type(None)), "boundary_iou": (float, type(None)), "pixels": int}


def test_cli_evaluate_writes_the_json_report(smoke_run, tmp_path):
    out = tmp_path / "reports" / "val.json"
    proc = cli("evaluate", "--checkpoint", smoke_run / "best.pt", "--split", "all", "--max-images", "6",
               "--tta", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())  # strict JSON: no NaN
    assert set(report) == set(REPORT_SCHEMA)
    for key, kind in REPORT_SCHEMA.items():
        assert isinstance(report[key], kind), (key, report[key])
    assert report["split"] == "all" and report["images"] == 6
    assert report["tta"] == {"flip": True, "scales": [0.75, 1.0, 1.25]}
    assert [c["name"] for c in report["classes"]] == ["background", "disc", "square", "triangle"]
    for row in report["classes"]:
        assert set(row) == set(CLASS_SCHEMA) and all(isinstance(row[k], t) for k, t in CLASS_SCHEMA.items())
    assert f"mIoU {report['miou']:.4f}" in proc.stdout
    assert np.array(report["confusion_matrix"]).sum() == sum(c["pixels"] for c in report["classes"])


def test_cli_predict_writes_input_sized_labels_and_keeps_going_past_bad_files(smoke_run, tmp_path):
    checkpoint = smoke_run / "best.pt"
    inputs = tmp_path / "in"
    inputs.mkdir()
    sizes = {"a.png": (45, 61), "b.jpg": (30, 30)}
    for name, size in sizes.items():
        Image.fromarray(make_sample(len(name), size)[0]).save(inputs / name)
    (inputs / "broken.png").write_bytes(b"not an image")
    (inputs / "notes.txt").write_text("not an input")
    out = tmp_path / "out"
    proc = cli("predict", "--checkpoint", str(checkpoint), "--input", str(inputs), "--output", str(out),
               "--overlay")
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert err[0].startswith(f"skipped: {inputs / 'broken.png'}: cannot be decoded")
    assert "re-download" not in err[0]  # the user's own photo: no dataset to download again
    assert err[-1].startswith("error: 1 of 3 inputs could not be read")
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "a_overlay.png", "b.png", "b_overlay.png"]
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    for name, size in sizes.items():
        label = np.array(Image.open(out / f"{name[0]}.png"))
        assert label.shape == size and label.dtype == np.uint8 and label.max() < 4
        image = np.array(Image.open(inputs / name).convert("RGB"))
        np.testing.assert_array_equal(label, predictor.labels([image])[0])
        assert np.array(Image.open(out / f"{name[0]}_overlay.png")).shape == (*size, 3)


def test_cli_predict_turns_phone_photos_upright(smoke_run, tmp_path):
    """A JPEG whose EXIF says "turn 90°" is shown upright by viewers: its mask must fit that picture."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the stored 20x36 pixels are shown turned, 36x20
    Image.fromarray(make_sample(0, (20, 36))[0]).save(inputs / "phone.jpg", exif=exif.tobytes())
    proc = cli("predict", "--checkpoint", str(smoke_run / "best.pt"), "--input", str(inputs),
               "--output", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert np.array(Image.open(tmp_path / "out" / "phone.png")).shape == (36, 20)


def test_cli_export_refuses_an_opset_its_onnx_cannot_write(smoke_run, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import onnx

    proc = cli("export", "--checkpoint", str(smoke_run / "best.pt"), "--onnx", str(tmp_path / "m.onnx"),
               "--opset", "99")
    assert proc.returncode == 2 and "opset 99 is newer than the installed onnx" in proc.stderr
    assert not (tmp_path / "m.onnx").exists()
    # an onnx that claims more than the exporter can convert to: the exporter falls back to its own opset
    newest = onnx.defs.onnx_opset_version()
    monkeypatch.setattr(onnx.defs, "onnx_opset_version", lambda: newest + 2)
    model, meta = load_model(smoke_run / "best.pt")
    with pytest.raises(ConfigError, match=f"the exporter wrote opset \\d+, not the {newest + 2} asked for"):
        export_onnx(model, tmp_path / "m.onnx", meta["image_size"], opset=newest + 2)
    assert not (tmp_path / "m.onnx").exists()


def test_export_gives_the_model_back_in_its_mode_and_check_names_a_bad_file(smoke_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from seglib.export import check_onnx

    model, meta = load_model(smoke_run / "best.pt")
    model.train()
    export_onnx(model, tmp_path / "m.onnx", meta["image_size"])
    assert model.training  # a notebook that exports mid-training goes on training, not in eval mode
    assert check_onnx(tmp_path / "m.onnx", model, meta["image_size"])["max_abs_diff"] < 1e-4
    assert model.training
    with pytest.raises(ConfigError, match="image_size 0"):
        export_onnx(model, tmp_path / "zero.onnx", 0)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    for path, problem in ((tmp_path / "junk.onnx", "is not an ONNX model"), (tmp_path / "none.onnx", "not found")):
        with pytest.raises(DataError, match=problem):
            check_onnx(path, model, meta["image_size"])


def test_cli_export_onnx_matches_pytorch(smoke_run, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime

    checkpoint = smoke_run / "best.pt"
    proc = cli("export", "--checkpoint", str(checkpoint), "--onnx", str(tmp_path / "m.onnx"))
    assert proc.returncode == 0, proc.stderr
    assert "max abs difference" in proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr  # torch's own exporter warnings are not the user's concern
    model, meta = load_model(checkpoint)
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, meta["image_size"], meta["image_size"])  # another batch size than the export's
    got = session.run(None, {"image": x.numpy()})[0]
    with torch.inference_mode():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4, rtol=1e-4)
    assert not list(tmp_path.glob(".*.tmp"))


def test_cli_latency(smoke_run):
    # on a CPU it timed bf16 too, emulated and 40x slower (hours for the README's example); and at 512 px
    proc = cli("latency", "--checkpoint", smoke_run / "best.pt", "--iters", "3", "--warmup", "1")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith(("fp32", "bf16"))]
    assert [r[0] for r in rows] == ["fp32"] and float(rows[0][1]) > 0
    assert " | 32x32 | batch 1 | CPU" in proc.stdout and "--precision bf16 times it" in proc.stdout  # training size
    proc = cli("latency", "--checkpoint", smoke_run / "best.pt", "--image-size", "32", "--iters", "3", "--warmup",
               "1", "--precision", "fp32", "--precision", "bf16")
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith(("fp32", "bf16"))]
    assert [r[0] for r in rows] == ["fp32", "bf16"] and all(float(r[1]) > 0 for r in rows)


@pytest.mark.parametrize("name", ["pennfudan", "tiktok", "camvid", "msrc", "bsds500"])
def test_evaluate_and_predict_on_each_real_dataset_in_its_original_layout(real_data, tmp_path, name):
    ds = load_dataset(name, "val", real_data, max_samples=2)
    model = create_model("unet", ds.num_classes, base_channels=8, depth=2)
    meta = {"model": "unet", "num_classes": ds.num_classes, "image_size": 32, "dataset": name,
            "class_names": list(ds.class_names), "model_options": {"base_channels": 8, "depth": 2}}
    save_checkpoint({"model": model.state_dict(), "meta": meta}, tmp_path / "best.pt")
    report = evaluate_dataset(Predictor.from_checkpoint(tmp_path / "best.pt", device="cpu"), ds, progress=False)
    labels = [ds.load(i)[1] for i in range(len(ds))]
    assert sum(c["pixels"] for c in report["classes"]) == sum(int((m != 255).sum()) for m in labels)
    proc = cli("predict", "--checkpoint", str(tmp_path / "best.pt"), "--input", str(ds.items[0].image),
               "--output", str(tmp_path / "pred"))
    assert proc.returncode == 0, proc.stderr
    written = np.array(Image.open(tmp_path / "pred" / f"{ds.items[0].image.stem}.png"))
    assert written.shape == labels[0].shape and written.max() < ds.num_classes


# ------------------------------------------------------------------ spellings from the reference projects


@pytest.mark.parametrize("argv, command, model, big, test, test_only", [
    (["--train", "--unet"], "train", "unet", False, False, False),
    (["--train", "--hourglass", "--big"], "train", "hourglass", True, False, False),
    (["--test", "--unet"], "train", "unet", False, False, True),
    (["--debug", "--train", "--test", "--hourglass"], "train", "hourglass", False, True, False),
    (["train", "--unet", "--big"], "train", "unet", True, False, False),
])
def test_person_mask_project_flags_parse_as_seglib_train(argv, command, model, big, test, test_only):
    args = build_parser().parse_args(reference_argv(argv))
    assert (args.command, args.model_flags, args.big, args.test, args.test_only) == (command, [model], big, test,
                                                                                     test_only)
    assert reference_argv(["evaluate", "--split", "train"]) == ["evaluate", "--split", "train"]  # commands as they are


def test_person_mask_project_nets_and_output_stride_8_train_from_the_command_line(tmp_path, capsys):
    # its nets were widths 8..64 and 32..256 over three poolings, and the MSRC project's DeepLabV3+ ran at stride 8
    for flags, model, options in (
            (["--unet", "--base-channels", "8", "--depth", "3"], "unet", {"base_channels": 8, "depth": 3}),
            (["--hourglass", "--base-channels", "32", "--depth", "3"], "hourglass", {"base_channels": 32, "depth": 3}),
            (["--model", "deeplabv3plus", "--output-stride", "8"], "deeplabv3plus", {"output_stride": 8})):
        out = tmp_path / model
        assert main(["--train", *flags, "--smoke", "--epochs", "1", "--max-steps", "1", "--out", str(out)]) == 0
        meta = load_checkpoint(out / "best.pt")["meta"]
        assert (meta["model"], meta["model_options"]) == (model, options)
        built, _ = load_model(out / "best.pt")
        if model == "deeplabv3plus":
            assert built.output_stride == 8 and built(torch.zeros(1, 3, 64, 64)).shape[-2:] == (64, 64)
        else:  # the widths 8..64 (32..256) over three poolings
            widths = [m.out_channels for m in built.modules() if isinstance(m, torch.nn.Conv2d)]
            assert built.depth == 3 and min(widths[:-1]) == options["base_channels"]
            assert max(widths) == options["base_channels"] * 8
    assert main(["train", "--smoke", "--big", "--epochs", "1", "--max-steps", "1", "--out", str(tmp_path / "big")]) == 0
    assert load_checkpoint(tmp_path / "big" / "best.pt")["meta"]["model_options"] == {"depth": 2, "big": True}
    capsys.readouterr()  # --big over --smoke's width 8 (it said "big=True means base_channels=64, not 8")
    assert main(["train", "--smoke", "--output-stride", "8", "--out", str(tmp_path / "x")]) == 2  # a UNet has none
    assert "unet has no option output_stride" in capsys.readouterr().err
    for flag, value in (("--depth", "7"), ("--base-channels", "0"), ("--output-stride", "4")):
        with pytest.raises(SystemExit):
            main(["train", "--smoke", flag, value, "--out", str(tmp_path / "x")])
        assert f"argument {flag}" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_camvid_projects_bilinear_unet_trains_and_loads_back(tmp_path, capsys):
    assert main(["train", "--smoke", "--upsample", "bilinear", "--out", str(tmp_path / "run")]) == 0
    model, meta = load_model(tmp_path / "run" / "best.pt")
    assert meta["model_options"]["upsample"] == "bilinear"
    assert any(isinstance(m, torch.nn.Upsample) for m in model.modules())
    if importlib.util.find_spec("onnxruntime"):  # bilinear with aligned corners, exported as ONNX's Resize
        from seglib.export import check_onnx

        onnx = export_onnx(model, tmp_path / "bilinear.onnx", meta["image_size"])
        assert check_onnx(onnx, model, meta["image_size"])["max_abs_diff"] < 1e-4
    capsys.readouterr()
    assert main(["train", "--smoke", "--model", "deeplabv3plus", "--upsample", "bilinear", "--out",
                 str(tmp_path / "dl")]) == 2
    assert "deeplabv3plus has no option upsample" in capsys.readouterr().err


def test_train_draws_its_curves_and_the_curves_command_draws_any_runs(tmp_path, capsys):
    # the Penn-Fudan project's loss.png, miou.png and accuracy.png, as one figure of three panels
    assert main(["train", "--smoke", "--epochs", "2", "--out", str(tmp_path / "run")]) == 0
    png = tmp_path / "run" / "curves.png"
    assert f"curves: {png}" in capsys.readouterr().out
    assert Image.open(png).size == (1200, 300)  # viz.plot_history's three panels at 100 dpi
    png.unlink()
    assert main(["curves", str(tmp_path / "run"), "--output", str(tmp_path / "again.png")]) == 0
    assert Image.open(tmp_path / "again.png").size == (1200, 300) and not png.exists()
    assert main(["curves", str(tmp_path)]) == 2  # not a run folder
    assert f"{tmp_path / 'history.json'}: not found: no validation" in capsys.readouterr().err
    (tmp_path / "run" / "history.json").write_text('[{"epoch": 1, "train_')  # half copied from a cluster
    assert main(["curves", str(tmp_path / "run")]) == 2
    assert "history.json: is not a readable history" in capsys.readouterr().err


def test_a_figure_that_cannot_be_drawn_does_not_fail_a_finished_training(tmp_path, capsys, monkeypatch):
    from seglib.cli import train as cli_train

    def no_figure(run, output=None):
        raise DataError(run / "curves.png", "cannot write it (No space left on device)", "free space")

    monkeypatch.setattr(cli_train, "write_curves", no_figure)
    assert main(["train", "--smoke", "--test", "--out", str(tmp_path / "run")]) == 0  # and --test still ran
    captured = capsys.readouterr()
    assert "note: no curves.png" in captured.err and "pixel accuracy" in captured.out  # --test's report
    assert (tmp_path / "run" / "best.pt").is_file()


def test_a_split_file_trains_validates_tests_and_evaluates_and_is_kept_by_resume(tmp_path, capsys, monkeypatch):
    # one's own split (the Penn-Fudan project's, a k-fold): the file's lists, wherever the run is scored later
    from seglib.batches import _datasets
    from seglib.train_config import TrainConfig

    monkeypatch.chdir(tmp_path)
    ids = load_dataset("synthetic", "all").ids
    lists = {"train": ids[-8:], "val": ids[:5]}  # not the built-in split: its val is a hash of the ids
    (tmp_path / "split.json").write_text(json.dumps(lists))
    assert main(["train", "--smoke", "--epochs", "1", "--split-file", "split.json", "--out", "run"]) == 0
    config = load_checkpoint(tmp_path / "run" / "best.pt")["config"]
    assert config["split_file"] == str(tmp_path / "split.json")  # absolute: the run is found from anywhere
    train, val = _datasets(TrainConfig.from_dict(config))
    assert (sorted(train.ids), sorted(val.ids)) == (sorted(lists["train"]), sorted(lists["val"]))
    capsys.readouterr()
    monkeypatch.chdir(tmp_path / "run")
    assert main(["evaluate", "--checkpoint", "best.pt", "--json", "report.json"]) == 0  # the run's own split
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert (report["images"], report["split_file"]) == (5, str(tmp_path / "split.json"))
    assert "the split file the run trained with" in capsys.readouterr().err
    assert main(["train", "--test-only", "--out", "."]) == 0  # no "test" list: val, said to be optimistic
    assert f"{tmp_path / 'split.json'} has no test split here" in capsys.readouterr().err
    (tmp_path / "other.json").write_text(json.dumps({"train": ids[-8:], "val": ids[:4]}))
    assert main(["train", "--smoke", "--resume", "--split-file", "../other.json", "--out", "."]) == 2
    assert "split_file" in capsys.readouterr().err  # another split is another run
    (tmp_path / "leaky.json").write_text(json.dumps({"train": ids[-8:], "val": ids[-2:]}))
    assert main(["train", "--smoke", "--split-file", "../leaky.json", "--out", "../leaky"]) == 2
    assert "2 ids are in both 'train' and 'val'" in capsys.readouterr().err
    assert not (tmp_path / "leaky" / "best.pt").exists()
    assert main(["evaluate", "--checkpoint", "best.pt", "--split-file", "../other.json", "--json", "o.json"]) == 0
    report = json.loads((tmp_path / "run" / "o.json").read_text())  # a file given beats the run's own
    assert (report["images"], report["split_file"]) == (4, "../other.json")
    assert "the split file the run trained with" not in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", "best.pt", "--split", "all", "--json", "all.json"]) == 0
    assert json.loads((tmp_path / "run" / "all.json").read_text())["images"] == len(ids)  # all is every sample
    (tmp_path / "split.json").write_text("{not json")  # damaged after the run
    capsys.readouterr()
    assert main(["train", "--test-only", "--out", "."]) == 2
    assert f"{tmp_path / 'split.json'}: the run's split file cannot be read" in capsys.readouterr().err


def test_a_split_files_test_list_is_the_held_out_set_even_where_the_dataset_publishes_none(tmp_path, capsys):
    ids = load_dataset("synthetic", "all").ids  # synthetic has train and val only
    lists = {"train": ids[-8:], "val": ids[:5], "test": ids[5:10]}
    (tmp_path / "split.json").write_text(json.dumps(lists))
    assert main(["train", "--smoke", "--epochs", "1", "--split-file", str(tmp_path / "split.json"), "--test",
                 "--out", str(tmp_path / "run")]) == 0
    out, err = capsys.readouterr()
    assert "synthetic/test: 5 images at native resolution" in out
    assert "has no test split here" not in err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--split", "test", "--json",
                 str(tmp_path / "test.json")]) == 0
    assert json.loads((tmp_path / "test.json").read_text())["images"] == 5


def test_a_config_file_sets_options_under_the_flags_and_a_runs_metrics_json_trains_it_again(tmp_path, capsys,
                                                                                              monkeypatch):
    # the person-mask project's config.yaml, the MSRC and CamVid projects' config.py: options in a file
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text("dataset: synthetic\nimage_size: 32\nbatch_size: 4\nepochs: 1\n"
                                        "max_samples: 8\nmax_steps: 2\nnum_workers: 0\n"
                                        "model_options: {base_channels: 8, depth: 2}\n")
    assert main(["train", "--config", "tiny.yaml", "--epochs", "2", "--out", "run"]) == 0  # the flag wins
    config = load_checkpoint(tmp_path / "run" / "best.pt")["config"]
    assert (config["epochs"], config["image_size"], config["max_steps"]) == (2, 32, 2)
    assert config["model_options"] == {"base_channels": 8, "depth": 2}
    assert main(["train", "--config", "run/metrics.json", "--out", "again"]) == 0  # the same run, trained again
    first, again = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("run", "again"))
    assert {k for k in first["config"] if first["config"][k] != again["config"][k]} == {"out"}
    histories = [json.loads((tmp_path / d / "history.json").read_text()) for d in ("run", "again")]
    assert [h["val_miou"] for h in histories[0]] == [h["val_miou"] for h in histories[1]] and len(histories[0]) == 2
    older = {**first, "config": {**first["config"], "data_path": "workers", "an_option_since_removed": 1}}
    (tmp_path / "older.json").write_text(json.dumps(older))  # a metrics.json of an older version: renamed, trimmed
    assert main(["train", "--config", "older.json", "--out", "older"]) == 0
    assert json.loads((tmp_path / "older" / "metrics.json").read_text())["config"]["loader"] == "workers"
    capsys.readouterr()
    (tmp_path / "typo.json").write_text(json.dumps({"imgsz_": 64, "epoch": 3}))
    assert main(["train", "--config", "typo.json", "--out", "typo"]) == 2  # not trained with the defaults
    err = capsys.readouterr().err
    assert "error: typo.json: no training option epoch, imgsz_. Fix: did you mean epoch → epochs" in err
    assert not (tmp_path / "typo").exists()
    (tmp_path / "list.yaml").write_text("- epochs: 3\n")
    assert main(["train", "--config", "list.yaml"]) == 2
    assert "list.yaml: holds a list, not a mapping of training options" in capsys.readouterr().err
    for name, text, message in (("tab.yml", "epochs: 1\n\timage_size: 32\n", "tab.yml: cannot be read as YAML"),
                                ("path.yaml", "split_file: 5\n", "path.yaml: split_file must be a string or None"),
                                ("opts.yaml", "model_options: [1]\n", "opts.yaml: model_options must be a dict")):
        (tmp_path / name).write_text(text)
        assert main(["train", "--smoke", "--config", name, "--out", "never"]) == 2  # one line, no traceback
        assert message in capsys.readouterr().err
    (tmp_path / "bom.json").write_text("\ufeff" + json.dumps({"epochs": 1, "max_steps": 1, "data_path": "workers"}))
    assert main(["train", "--smoke", "--config", "bom.json", "--out", "bom"]) == 0  # a BOM, as Notepad saves
    assert json.loads((tmp_path / "bom" / "metrics.json").read_text())["config"]["loader"] == "workers"  # renamed
    assert not (tmp_path / "never").exists()


def test_penn_fudan_project_spellings_parse():
    args = build_parser().parse_args(["train", "--imgsz", "96", "--batch", "4"])
    assert (args.image_size, args.batch_size) == (96, 4)
    args = build_parser().parse_args(["predict", "--checkpoint", "best.pt", "-i", "photos", "--output", "out"])
    assert args.input == "photos"


def test_person_mask_project_train_then_test_in_process(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--dataset", "synthetic", "--out", str(out)]
    assert main(["--test", *common]) == 2  # nothing trained yet
    assert f"error: {out / 'best.pt'}: not found: there is no trained run to test here" in capsys.readouterr().err
    assert main(["--train", "--unet", "--smoke", "--epochs", "1", *common]) == 0
    assert "best val mIoU" in capsys.readouterr().out and (out / "best.pt").is_file()
    assert main(["--test", *common]) == 0  # the reference's --test: evaluate the saved model on held-out data
    printed = capsys.readouterr()  # synthetic has none: val, said to be optimistic
    assert "mIoU" in printed.out
    assert "synthetic has no test split here: testing on val, the split that chose best.pt" in printed.err
    assert load_checkpoint(out / "best.pt")["meta"]["model"] == "unet"
    assert main(["--test", "--out", str(out)]) == 0  # without --dataset: the run's own, not the default
    assert "synthetic/val" in capsys.readouterr().out
    assert main(["--test", "--dataset", "pennfudan", "--out", str(out)]) == 2
    assert f"{out / 'best.pt'} was trained on synthetic, not pennfudan" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--train", "--unet", "--hourglass"], "--hourglass and --unet name different models: keep one"),
    (["train", "--hourglass", "--model", "unet"], "--hourglass and --model unet name different models"),
    (["train", "--no-train-trunk"], "--no-train-trunk freezes DeepLabV3+'s ResNet trunk; unet has none"),
    (["train", "--epochs", "1", "--warmup-epochs", "5"], "warmup_epochs 5 is longer than the run (1 epochs)"),
])
def test_conflicting_or_abbreviated_train_flags_are_refused_not_resolved_silently(tmp_path, capsys, argv, message):
    # each was quietly resolved: the last model flag won, the trunk flag or the warm-up was ignored
    assert main([*argv, "--root", str(tmp_path / "absent"), "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # abbreviations: --ov was taken for --overwrite
        main(["train", "--ov", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "unrecognized arguments: --ov" in err
    assert "see 'seglib train --help'" in err  # the command's own help, which lists its flags
    assert not (tmp_path / "run").exists()


def test_test_only_refuses_options_it_would_ignore(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--smoke", "--dataset", "synthetic", "--epochs", "1", "--out", str(out)]) == 0
    for extra, message in ((["--epochs", "5"], "--test-only scores the run in"),
                           (["--resume"], "--test-only trains nothing, so --resume and --overwrite do not apply"),
                           (["--hourglass"], "model: 'unet' → 'hourglass'")):
        assert main(["train", "--test-only", "--out", str(out), *extra]) == 2
        assert message in capsys.readouterr().err, extra
    assert main(["--test", "--unet", "--out", str(out)]) == 0  # the reference's spelling, naming the run's model


def test_pretrained_with_unet_is_refused_before_any_data_is_read(tmp_path, capsys):
    assert main(["--train", "--unet", "--pretrained", "imagenet", "--root", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: unet has no ImageNet trunk: it always trains from scratch" in err


def test_train_takes_device_and_refuses_one_this_machine_lacks(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(["train", "--smoke", "--epochs", "1", "--device", "cpu", "--out", str(out), "--test"]) == 0
    assert json.loads((out / "metrics.json").read_text())["env"]["device"].startswith("CPU")
    capsys.readouterr()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device, message in (("cuda:1", "--device cuda:1: this machine has no CUDA GPUs"),
                            ("tpu", "--device 'tpu' is not a device: use cpu, cuda or cuda:N")):
        assert main(["train", "--smoke", "--device", device, "--out", str(tmp_path / device)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
        assert not (tmp_path / device).exists()


@pytest.mark.parametrize("argv, hint", [
    (["train", "--scheduler"], "Fix: --scheduler is --schedule here (cosine, poly, onecycle, constant, or step"),
    (["train", "--multiGPU"], "Fix: for several GPUs run torchrun --nproc_per_node N -m seglib train"),
    (["--train", "--unet", "--gpu"], "Fix: --gpu is --device cuda here; see 'seglib train --help'"),
    (["predict", "--model", "final_model.pth", "--input", "x"], "Fix: --checkpoint PATH is the trained model here"),
    (["predict", "--checkpoint", "b.pt", "--input", "x", "--output", "o", "--imgsz", "512"],
     "Fix: leave out --imgsz: the checkpoint's own image size is used"),
])
def test_a_reference_projects_flag_says_what_seglib_takes_instead(capsys, argv, hint):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and hint in err
    with pytest.raises(SystemExit):
        main([*argv, "--epochs", "0"] if argv[0] == "train" else [*argv, "--batch-size", "0"])
    err = capsys.readouterr().err  # another flag's bad value: its own error, without the hint
    assert ("argument --epochs" in err or "argument --batch-size" in err) and hint not in err
