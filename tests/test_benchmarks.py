"""The benchmark scripts run end to end (--smoke, CPU, synthetic data) and their JSON adds up."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is a folder of the repo, not installed
from benchmarks import common, data_path, latency, levers, seed_spread, time_to_quality, train_throughput  # noqa: E402
from seglib.errors import SeglibError  # noqa: E402


@pytest.fixture(scope="module")
def shared_work(tmp_path_factory):
    return tmp_path_factory.mktemp("work")


@pytest.fixture
def run(shared_work, tmp_path, monkeypatch):
    """``run(module, *args)``: the script's main() in smoke mode on the CPU; returns its JSON, read back."""
    monkeypatch.setenv("SEGLIB_WORK_DIR", str(shared_work))  # synthetic data and caches, built once

    def _run(module, *args):
        path = tmp_path / f"{module.__name__}.json"
        module.main(["--smoke", "--device", "cpu", "--json", str(path), *args])
        result = json.loads(path.read_text())
        assert {"script", "env", "args", "rows"} <= set(result) and result["rows"]
        assert {"device", "torch", "date"} <= set(result["env"])
        return result

    return _run


def test_a_script_runs_by_its_path(tmp_path):
    """``python benchmarks/<script>.py``, from any folder, as well as ``python -m benchmarks.<script>``."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--help"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "--smoke" in proc.stdout


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_flops_per_step_matches_a_hand_count():
    n, h, w = 2, 12, 10
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1))
    batch = torch.randn(n, 3, h, w), torch.randint(0, 5, (n, h, w))

    def conv(cin, cout):  # one 3×3 conv over the batch, a multiply-add counted as 2
        return 2 * cin * cout * 3 * 3 * h * w * n

    # forward, weight gradients, and an input gradient for the second conv only (the data needs none)
    expected = 2 * conv(3, 4) + 3 * conv(4, 5)
    counted = common.flops_per_step(model, batch, nn.CrossEntropyLoss())
    assert counted == pytest.approx(expected, rel=0.01)
    assert all(p.grad is None and p.device.type == "cpu" for p in model.parameters())  # model untouched


def test_train_throughput(run):
    result = run(train_throughput)
    assert positive(result["ceiling"]["tflops"])
    rows = {(r["model"], r["regime"]): r for r in result["rows"]}
    assert set(rows) == {(m, g) for m in ("unet", "hourglass") for g in ("tutorial", "seglib")}
    for (model, regime), row in rows.items():
        for key in ("model_img_s", "e2e_img_s", "flops_per_step", "tflops", "pct_ceiling"):
            assert positive(row[key]), (model, regime, key)
        tutorial = rows[model, "tutorial"]
        assert row["speedup"] == pytest.approx(row["e2e_img_s"] / tutorial["e2e_img_s"], rel=1e-9)
        assert row["e2e_over_model"] == pytest.approx(row["e2e_img_s"] / row["model_img_s"], rel=1e-9)
        assert row["tflops"] == pytest.approx(row["flops_per_step"] * row["e2e_img_s"] / row["batch"] / 1e12)
        assert row["flops_per_step"] == tutorial["flops_per_step"]
    assert rows["unet", "tutorial"]["speedup"] == 1.0


def test_data_path(run):
    result = run(data_path)
    speeds = result["model_img_s"]["64"]
    assert {r["path"] for r in result["rows"]} == {"png+albumentations", "cache+albumentations", "gpu-resident"}
    for row in result["rows"]:
        assert positive(row["img_s"]) and positive(speeds["unet"])
        assert row["feeds_unet"] == pytest.approx(row["img_s"] / speeds["unet"], rel=1e-9)


def test_time_to_quality_reports_when_the_target_is_reached(run):
    (row,) = run(time_to_quality, "--target", "0")["rows"]
    assert row["epoch_reached"] == 1
    assert positive(row["seconds_to_target"]) and row["seconds_to_target"] == row["curve"][0][1]
    assert positive(row["train_seconds"]) and 0 <= row["best_miou"] <= 1


def test_time_to_quality_is_null_when_the_target_is_never_reached(run):
    (row,) = run(time_to_quality, "--target", "1.01")["rows"]
    assert row["seconds_to_target"] is None and row["epoch_reached"] is None
    assert row["epochs_run"] == 2 and len(row["curve"]) == 2


def test_time_to_quality_keeps_going_past_a_run_that_fails(run, monkeypatch):
    def out_of_memory(cfg, **kwargs):  # fit turns CUDA out of memory into a SeglibError saying what to shrink
        raise SeglibError("CUDA out of memory at --batch-size 8 and --image-size 64; try --batch-size 4")
    monkeypatch.setattr(time_to_quality, "fit", out_of_memory)
    (row,) = run(time_to_quality, "--target", "0")["rows"]
    assert "out of memory" in row["error"] and "seconds_to_target" not in row


def test_first_crossing_sums_the_seconds_of_every_epoch_until_the_target():
    history = [{"epoch": e, "seconds": 2.0, "val_miou": m} for e, m in ((1, 0.3), (2, 0.7), (3, 0.6))]
    curve = time_to_quality.cumulative(history)
    assert time_to_quality.first_crossing(curve, 0.65) == (2, 4.0)
    assert time_to_quality.first_crossing(curve, 0.8) == (None, None)


def test_latency(run):
    rows = {r["precision"]: r for r in run(latency, "--precisions", "fp32", "tf32", "bf16")["rows"]
            if r["model"] == "unet"}
    for precision in ("fp32", "bf16"):  # CPU autocast runs bf16 too
        assert all(positive(rows[precision][k]) for k in ("median_ms", "p90_ms", "min_ms"))
        assert rows[precision]["min_ms"] <= rows[precision]["median_ms"] <= rows[precision]["p90_ms"]
    assert rows["tf32"]["median_ms"] is None and "CUDA" in rows["tf32"]["skipped"]  # CPU: skipped, not faked


def test_levers_table_is_relative_to_the_base(run, capsys):
    rows = run(levers, "--levers", "lr x2", "ema")["rows"]
    progress = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("base |", "lr x2 |"))]
    assert progress == [f"base | native_miou {rows[0]['native_miou']:.4g} | wall_s {rows[0]['wall_s']:.4g}",
                        f"lr x2 | native_miou {rows[1]['native_miou']:.4g} | wall_s {rows[1]['wall_s']:.4g}"]
    assert [r["lever"] for r in rows] == ["base", "lr x2", "ema"]
    base = rows[0]
    assert 0 <= base["native_miou"] <= 1 and positive(base["wall_s"]) and "delta" not in base
    for row in rows[1:]:
        assert row["delta"] == pytest.approx(row["native_miou"] - base["native_miou"])
    assert rows[1]["native_miou"] != base["native_miou"]  # the lever changed the run
    assert base["native_std"] is None and base["native_miou_each"] == [base["native_miou"]]


def test_levers_with_seeds_report_the_mean_and_spread(run):
    (row,) = run(levers, "--levers", "--seeds", "2")["rows"]
    each = row["native_miou_each"]
    assert len(each) == 2 and row["native_miou"] == pytest.approx(sum(each) / 2)
    assert row["native_std"] == pytest.approx(abs(each[0] - each[1]) / 2 ** 0.5)
    with pytest.raises(SystemExit, match="unknown levers"):
        levers.main(["--smoke", "--device", "cpu", "--levers", "magic"])


def test_levers_refuses_the_options_it_would_ignore(capsys):
    with pytest.raises(SystemExit):
        levers.main(["--smoke", "--device", "cpu", "--models", "unet-big", "--steps", "5"])
    assert "--models, --steps: the levers set the model, size and steps of each run" in capsys.readouterr().err


def test_seed_spread_retrains_beside_the_notebooks_run_and_reuses_both(run, shared_work):
    (row,) = run(seed_spread, "--runs", "person unet", "--seeds", "2")["rows"]
    each = row["miou_each"]
    assert row["miou"] == pytest.approx(sum(each) / 2) and (row["miou_min"], row["miou_max"]) == (min(each), max(each))
    assert row["miou_std"] == pytest.approx(abs(each[0] - each[1]) / 2 ** 0.5)
    folder = shared_work / "runs" / "smoke" / "synthetic_unet"  # seed 0: the notebooks' own run
    assert (folder / "best.pt").is_file() and (folder.parent / "synthetic_unet_seed1" / "best.pt").is_file()
    again = run(seed_spread, "--runs", "person unet", "--seeds", "2")["rows"][0]
    assert again["reused"] == [True, True] and again["miou_each"] == each  # nothing trained twice


@pytest.mark.parametrize("args, message", [(["--seeds", "1"], "at least 2 seeds"),
                                           (["--runs", "person magic"], "unknown runs ['person magic']"),
                                           (["--models", "unet"], "--models: the runs keep the notebooks' model")])
def test_seed_spread_refuses_what_it_cannot_measure(args, message, capsys):
    with pytest.raises(SystemExit):
        seed_spread.main(["--smoke", "--device", "cpu", *args])
    assert message in capsys.readouterr().err
