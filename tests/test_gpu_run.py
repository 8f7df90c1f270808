"""scripts/gpu_run.py rehearsed on the CPU: every stage runs end to end in its smoke form, and what
it leaves under --out is what the device tool can bring back (at most 8 files, 16 MiB each, 64 MiB
in all, no deeper than two folders, plain names)."""

import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import nbformat
import pytest

from seglib.data import load_dataset

from test_gpu_pack import gpu_pack, gpu_run

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """One smoke run of all three stages, from a bundle, as the GPU machine runs it (a child process).

    Stage b runs one small notebook: its mechanics are what is rehearsed here (nbval runs every notebook)."""
    tmp = tmp_path_factory.mktemp("rehearsal")
    gpu_pack.pack(["synthetic"], tmp / "bundle")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGLIB_")}
    proc = subprocess.run([sys.executable, "scripts/gpu_run.py", "--smoke", "--bundle", str(tmp / "bundle"),
                           "--out", str(tmp / "out"), "--work", str(tmp / "work"), "--notebooks", "03"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp / "out"


def test_what_comes_back_fits_the_device_tools_limits(rehearsal):
    files = [p for p in rehearsal.rglob("*") if p.is_file()]
    assert 0 < len(files) <= 8
    assert all(p.stat().st_size <= 16 * 2**20 for p in files)
    assert sum(p.stat().st_size for p in files) <= 64 * 2**20
    assert all(len(p.relative_to(rehearsal).parts) <= 3 for p in files)  # $OUT/a/b/file at most
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for p in files for part in p.relative_to(rehearsal).parts)


def test_every_stage_ran_and_says_so(rehearsal):
    summary = json.loads((rehearsal / "summary.json").read_text())
    assert {key: stage["status"] for key, stage in summary["stages"].items()} == {"a": "done", "c": "done",
                                                                                 "b": "done"}
    assert summary["bundle"]["quality"] == 95 and summary["bundle"]["photos_reencoded"] > 0
    assert summary["env"]["torch"]
    log = (rehearsal / "log.txt").read_text()
    assert "stage a: done" in log and "stage c: done" in log and "stage b: done" in log


def test_the_recipes_are_scored_at_native_resolution_with_their_curve(rehearsal):
    recipe = json.loads((rehearsal / "recipes.json").read_text())["recipes"]["synthetic"]
    for key in ("native", "native_flip", "native_last"):
        assert 0 <= recipe[key]["miou"] <= 1 and 0 <= recipe[key]["boundary_miou"] <= 1
        assert recipe[key]["images"] == len(load_dataset("synthetic", "val", max_samples=12))
    assert recipe["epochs"] == recipe["config"]["epochs"] >= 1
    assert [point["epoch"] for point in recipe["curve"]][-1] == recipe["epochs"]
    seconds = [point["seconds"] for point in recipe["curve"]]
    assert seconds == sorted(seconds) and recipe["seconds_to_best"] in seconds
    assert recipe["probe"]["epoch_s"] > 0 and recipe["images_per_s"] > 0


def test_the_speed_table_compares_the_tutorial_loop_with_seglib(rehearsal):
    rows = json.loads((rehearsal / "speed.json").read_text())["rows"]
    assert {row["regime"] for row in rows} == {"tutorial", "seglib"}
    assert all(row["e2e_img_s"] > 0 and row["tflops"] > 0 for row in rows)


def test_the_notebooks_come_back_executed_without_errors(rehearsal):
    with tarfile.open(rehearsal / "notebooks.tgz") as tar:
        names = tar.getnames()
        assert names == ["notebooks/03_unet_from_scratch.ipynb"]
        for name in names:
            nb = nbformat.reads(tar.extractfile(name).read().decode(), as_version=4)
            code = [c for c in nb.cells if c.cell_type == "code"]
            assert all(c.get("execution_count") for c in code)
            assert not [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]


def test_the_schedule_fills_the_time_with_about_25_validations():
    for seconds, epoch_s, val_s in [(110, 0.24, 0.04), (70, 0.21, 0.02), (35, 0.08, 0.01), (5, 2.0, 0.5)]:
        epochs, val_every = gpu_run.schedule(seconds, epoch_s, val_s)
        validations = -(-epochs // val_every)
        spent = epochs * epoch_s + validations * (val_s + 0.3)
        assert epochs % val_every == 0 and spent <= seconds
        if epochs > 1:
            assert spent >= 0.75 * seconds and 2 <= validations <= 2 * gpu_run.VALIDATIONS


def test_a_recipe_cut_off_keeps_its_history(tmp_path):
    assert "before its first validation" in gpu_run.partial_recipe("camvid", tmp_path)["error"]
    folder = tmp_path / "runs" / "camvid"
    folder.mkdir(parents=True)
    (folder / "history.json").write_text(json.dumps([{"epoch": 4, "seconds": 2.0, "val_miou": 0.3},
                                                     {"epoch": 8, "seconds": 2.5, "val_miou": 0.4}]))
    assert gpu_run.partial_recipe("camvid", tmp_path)["curve"] == [
        {"epoch": 4, "seconds": 2.0, "val_miou_train_size": 0.3},
        {"epoch": 8, "seconds": 4.5, "val_miou_train_size": 0.4}]


def test_a_recipe_that_fails_after_training_keeps_its_curve(tmp_path, monkeypatch):
    run = gpu_run.Run(tmp_path / "out", tmp_path / "work", budget=600)

    def trained_then_failed(args, timeout):  # e.g. native scoring raised after fit wrote its history
        folder = tmp_path / "work" / "runs" / "synthetic"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "history.json").write_text(json.dumps([{"epoch": 2, "seconds": 1.5, "val_miou": 0.4}]))
        return 1
    monkeypatch.setattr(run, "child", trained_then_failed)
    gpu_run.stage_a(run, smoke=True, keep_for_c=False)
    saved = json.loads((tmp_path / "out" / "recipes.json").read_text())["recipes"]["synthetic"]
    assert saved["error"].startswith("exit code 1")
    assert saved["curve"] == [{"epoch": 2, "seconds": 1.5, "val_miou_train_size": 0.4}]


def alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "\tZ" not in next(line for line in status.read_text().splitlines() if line.startswith("State:"))
    except (OSError, StopIteration):
        return False


def test_a_stage_past_its_time_is_stopped_with_what_it_started(tmp_path):
    run = gpu_run.Run(tmp_path, tmp_path, budget=60)
    start = time.monotonic()
    child = (f"import subprocess, time; p = subprocess.Popen(['sleep', '30']); "  # a kernel, a loader worker
             f"open({str(tmp_path / 'pid')!r}, 'w').write(str(p.pid)); print('started', flush=True); time.sleep(30)")
    assert run.child(["-c", child], timeout=2) is None
    assert time.monotonic() - start < 25  # stopped, not waited for: the child sleeps 30 s
    assert "started" in (tmp_path / "log.txt").read_text()
    time.sleep(0.2)
    assert not alive(int((tmp_path / "pid").read_text()))


@pytest.mark.skipif(any(__import__("importlib").util.find_spec(m) is None for m in ("nbclient", "ipykernel",
                                                                                     "nbstripout")),
                    reason="stage b needs nbclient, ipykernel and nbstripout (pip install -e '.[test]')")
def test_stage_b_gets_all_the_time_left_and_returns_only_this_calls_notebooks(tmp_path, monkeypatch):
    run = gpu_run.Run(tmp_path / "out", tmp_path / "work", budget=560)
    (tmp_path / "work" / "notebooks").mkdir(parents=True)
    (tmp_path / "work" / "notebooks" / "06_training.ipynb").write_text("{}")  # an earlier call's
    timeouts = []
    monkeypatch.setattr(run, "child", lambda args, timeout: timeouts.append(timeout) or 0)
    gpu_run.stage_b(run, smoke=False, notebooks=["06"])
    assert 530 < timeouts[0] <= 545  # not a fixed cap below the budget: 06-08 need 5-8 minutes
    with tarfile.open(tmp_path / "out" / "notebooks.tgz") as tar:
        assert tar.getnames() == []  # neither the stale notebook nor the committed CPU-plan figures
