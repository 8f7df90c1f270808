"""The training engine on CPU: it learns, resumes exactly, stops on NaN, and runs under DDP."""

import contextlib
import functools
import json
import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from seglib import engine
from seglib.batches import ResidentBatches, WorkerBatches, build_data
from seglib.checkpoint import plain_keys
from seglib.ema import WeightEMA
from seglib.history import History, lowest_loss_yet, validations_since_best
from seglib.optim import build_optimizer, param_groups
from seglib.checkpoint import load_checkpoint
from seglib.data import SPECS
from seglib.engine import TrainConfig, fit
from seglib.errors import ConfigError, DataError
from seglib.gpu_augment import resize_batch
from seglib.inference import load_model
from seglib.losses import build_loss
from seglib.metrics import ConfusionMatrix, logits_to_labels
from seglib.models import create_model
from seglib.synthetic import make_sample
from seglib.run_folder import unlock_folder

from helpers import TINY, free_port


def run(cfg, **kw):
    return fit(cfg, device="cpu", verbose=False, **kw)


@contextlib.contextmanager
def killed_at_validation(monkeypatch, n: int):
    """The block must end in a KeyboardInterrupt raised by ``engine.evaluate``'s ``n``-th call (a run killed during
    that epoch's validation); the real ``evaluate`` is back afterwards."""
    real, calls = engine.evaluate, {"n": 0}

    def evaluate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(engine, "evaluate", evaluate)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.setattr(engine, "evaluate", real)


def test_overfitting_one_batch_drives_the_loss_down_and_iou_up():
    torch.manual_seed(0)
    samples = [make_sample(i, (32, 32)) for i in range(4)]
    images = torch.from_numpy(__import__("numpy").stack([s[0] for s in samples]))
    masks = torch.from_numpy(__import__("numpy").stack([s[1] for s in samples]))
    x, y = resize_batch(images, masks, 32)
    model = create_model("unet", 4, base_channels=8, depth=2)
    loss_fn = build_loss("ce", 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    cm = ConfusionMatrix(4)
    cm.update(logits_to_labels(model(x)), y)
    assert losses[-1] < 0.1 * losses[0]
    assert cm.compute()["miou"] > 0.9


def test_fit_writes_checkpoints_history_and_metrics(tmp_path):
    result = run(replace(TINY, out=str(tmp_path)))
    for name in ("best.pt", "last.pt", "history.csv", "history.json", "metrics.json"):
        assert (tmp_path / name).is_file(), name
    history = json.loads((tmp_path / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2] == [row["epoch"] for row in result["history"]]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["best"]["val_miou"] == max(row["val_miou"] for row in history)
    assert len(metrics["best"]["val_iou"]) == 4
    assert metrics["env"]["torch"] == torch.__version__ and metrics["env"]["device"].startswith("CPU")
    last = load_checkpoint(tmp_path / "last.pt", expect={"model": "unet", "num_classes": 4})
    assert {"model", "optimizer", "scheduler", "epoch", "rng", "config", "history"} <= set(last)


def test_val_every_validates_every_nth_epoch_and_after_the_last(tmp_path, monkeypatch):
    calls = []
    real_evaluate = engine.evaluate

    def slow_evaluate(*a, **k):
        calls.append(1)
        time.sleep(0.3)
        return {**real_evaluate(*a, **k), "miou": (0.3, 0.6, 0.5)[len(calls) - 1]}  # the best: epoch 4's

    monkeypatch.setattr(engine, "evaluate", slow_evaluate)
    result = run(replace(TINY, epochs=5, val_every=2, save_freq=4, out=str(tmp_path)))
    assert len(calls) == 3
    assert [row["epoch"] for row in result["history"]] == [2, 4, 5] and result["epochs_run"] == 5
    # a row covers every epoch since the validation before it: its seconds include the validation,
    # its images/s count the training steps alone (TINY: 2 steps an epoch)
    for row, epochs in zip(result["history"], (2, 2, 1)):
        train_seconds = epochs * 2 * TINY.batch_size / row["images_per_s"]
        assert 0 < train_seconds <= row["seconds"] - 0.3
    last, best = load_checkpoint(tmp_path / "last.pt"), load_checkpoint(tmp_path / "best.pt")
    assert last["epoch"] == 5 and best["epoch"] == 4 and best["metrics"]["val_miou"] == 0.6
    assert any(not torch.equal(best["model"][k], v) for k, v in last["model"].items())  # epoch 4's weights


def test_last_pt_is_written_at_the_first_validation_after_each_multiple_of_save_freq(tmp_path, monkeypatch):
    saved = []
    real_save = engine.save_checkpoint
    monkeypatch.setattr(engine, "save_checkpoint",
                        lambda state, path: (saved.append(state["epoch"]) if path.name == "last.pt" else None)
                        or real_save(state, path))
    run(replace(TINY, epochs=9, val_every=2, save_freq=3, out=str(tmp_path)))
    assert saved == [4, 6, 9]  # validations at 2, 4, 6, 8, 9; multiples of 3 reached at 4, 6 and 9 (the last)


@pytest.mark.parametrize("model", ["unet", "deeplabv3plus"])  # DeepLabV3+'s dropout draws from the restored RNG
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, monkeypatch, model):
    cfg = TINY if model == "unet" else replace(TINY, model=model, model_options={"backbone": "resnet18"})
    straight = run(replace(cfg, out=str(tmp_path / "straight")))["model"].state_dict()
    with killed_at_validation(monkeypatch, 2):  # "killed" during the second epoch
        run(replace(cfg, out=str(tmp_path / "resumed")))
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 1
    resumed = run(replace(cfg, out=str(tmp_path / "resumed")), resume=True)
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    for key, value in straight.items():
        torch.testing.assert_close(resumed["model"].state_dict()[key], value, rtol=0, atol=0)


def test_a_resume_with_more_epochs_follows_the_longer_runs_schedule(tmp_path, monkeypatch):
    """Each optimizer step after the resume uses the rate a run planned for 8 epochs uses at that step (the first
    step used to keep the 4-epoch curve's rate, then jump)."""
    rates = []
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda opt, *a, **k: rates.append(opt.param_groups[-1]["lr"]))
    cfg = replace(TINY, schedule="cosine", warmup_epochs=1)
    run(replace(cfg, epochs=8, out=str(tmp_path / "planned")))
    planned, rates[:] = rates[:], []
    with killed_at_validation(monkeypatch, 3):
        run(replace(cfg, epochs=4, out=str(tmp_path / "extended")))
    assert load_checkpoint(tmp_path / "extended" / "last.pt")["epoch"] == 2 and len(rates) == 3 * 2
    rates[:] = []
    run(replace(cfg, epochs=8, out=str(tmp_path / "extended")), resume=True)
    assert rates == planned[2 * 2:]  # TINY: 2 steps an epoch; resumed after epoch 2


def test_a_last_pt_copied_in_from_another_run_is_not_resumed_over_that_folders_best(tmp_path, monkeypatch):
    with killed_at_validation(monkeypatch, 2):
        run(replace(TINY, out=str(tmp_path / "a")))
    run(replace(TINY, out=str(tmp_path / "b"), seed=1))
    best_b = (tmp_path / "b" / "best.pt").read_bytes()
    (tmp_path / "b" / "last.pt").write_bytes((tmp_path / "a" / "last.pt").read_bytes())
    with pytest.raises(DataError, match="another run than best.pt beside it.*move this last.pt"):
        run(replace(TINY, out=str(tmp_path / "b"), seed=1), resume=True)
    assert (tmp_path / "b" / "best.pt").read_bytes() == best_b
    a = load_checkpoint(tmp_path / "a" / "last.pt")["run_id"]  # its own folder resumes, and keeps its id
    run(replace(TINY, out=str(tmp_path / "a")), resume=True)
    assert load_checkpoint(tmp_path / "a" / "best.pt")["run_id"] == a
    assert load_checkpoint(tmp_path / "a" / "last.pt")["run_id"] == a


def test_early_stopping_survives_a_resume(tmp_path, monkeypatch):
    """Val mIoU 0.5, 0.4, 0.3, ... with patience 2 stops after epoch 3, interrupted or not."""
    real_evaluate = engine.evaluate
    scores = {"n": 0}

    def falling(*args, **kwargs):
        scores["n"] += 1
        if scores["n"] == kill_at:
            raise KeyboardInterrupt
        return {**real_evaluate(*args, **kwargs), "miou": 0.6 - 0.1 * scores["n"]}

    monkeypatch.setattr(engine, "evaluate", falling)
    cfg = replace(TINY, epochs=6, patience=2, save_freq=1)
    kill_at = None
    assert run(replace(cfg, out=str(tmp_path / "straight")))["epochs_run"] == 3
    scores["n"], kill_at = 0, 3  # killed in epoch 3, after last.pt of epoch 2
    with pytest.raises(KeyboardInterrupt):
        run(replace(cfg, out=str(tmp_path / "resumed")))
    scores["n"], kill_at = 2, None
    assert run(replace(cfg, out=str(tmp_path / "resumed")), resume=True)["epochs_run"] == 3
    assert run(replace(cfg, out=str(tmp_path / "resumed")), resume=True)["epochs_run"] == 3  # stopped stays stopped
    for folder in ("straight", "resumed"):  # best.pt keeps epoch 1's weights, the best scored
        best, last = (load_checkpoint(tmp_path / folder / name) for name in ("best.pt", "last.pt"))
        assert best["epoch"] == 1 and last["epoch"] == 3
        assert any(not torch.equal(best["model"][k], v) for k, v in last["model"].items())
    assert validations_since_best([]) == 0
    for scores in ((0.2, 0.5, 0.5, 0.4), (float("nan"), 0.3, 0.2), (0.3, float("nan"), 0.2), (0.1, 0.2)):
        live = History()  # the counter of a run that was never interrupted
        for epoch, score in enumerate(scores, 1):
            live.add_epoch(1.0, 1.0, 1.0)
            live.add_validation(epoch, {"loss": 1.0, "miou": score, "pixel_accuracy": 0.5, "mdice": 0.5,
                                        "iou": [], "dice": []}, 0.1, 8)
        assert History(live.rows, live.best).since_best == live.since_best  # what --resume rebuilds
    assert validations_since_best([{"val_miou": v} for v in (0.2, 0.5, 0.5, 0.4)]) == 2
    assert validations_since_best([{"val_miou": v} for v in (float("nan"), 0.3, 0.2)]) == 1


def test_an_early_stop_writes_last_pt_at_the_epoch_it_stops(tmp_path, monkeypatch):
    real_evaluate, calls = engine.evaluate, []
    monkeypatch.setattr(engine, "evaluate", lambda *a, **k: calls.append(1) or
                        {**real_evaluate(*a, **k), "miou": 0.6 - 0.1 * len(calls)})
    assert run(replace(TINY, epochs=6, patience=1, save_freq=10, out=str(tmp_path)))["epochs_run"] == 2
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2  # not due by save_freq: written because it stops


def test_keep_best_loss_keeps_the_lowest_val_loss_beside_the_best_miou_also_across_a_resume(tmp_path, monkeypatch):
    """The reference projects' SaveBestModel: val loss 0.9, 0.5, 0.7, 0.6 while the mIoU rises, so best_loss.pt
    holds epoch 2 and best.pt epoch 4, interrupted or not."""
    real_evaluate, calls = engine.evaluate, {"n": 0}
    losses = (0.9, 0.5, 0.7, 0.6)

    def scored(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise KeyboardInterrupt
        return {**real_evaluate(*args, **kwargs), "loss": losses[calls["n"] - 1], "miou": 0.1 * calls["n"]}

    monkeypatch.setattr(engine, "evaluate", scored)
    cfg = replace(TINY, epochs=4, keep_best_loss=True)
    kill_at = None
    run(replace(cfg, out=str(tmp_path / "straight")))
    calls["n"], kill_at = 0, 3  # killed at epoch 3's validation, after epoch 2's checkpoints
    with pytest.raises(KeyboardInterrupt):
        run(replace(cfg, out=str(tmp_path / "resumed")))
    calls["n"], kill_at = 2, None
    run(replace(cfg, out=str(tmp_path / "resumed")), resume=True)
    for folder in ("straight", "resumed"):
        best, best_loss = (load_checkpoint(tmp_path / folder / name) for name in ("best.pt", "best_loss.pt"))
        assert (best["epoch"], best_loss["epoch"], best_loss["metrics"]["val_loss"]) == (4, 2, 0.5)
        assert any(not torch.equal(best["model"][k], v) for k, v in best_loss["model"].items())
        assert load_model(tmp_path / folder / "best_loss.pt")[1]["num_classes"] == 4  # evaluate/predict take it
    with pytest.raises(DataError, match="keep_best_loss: True → False"):  # its file would tell half the story
        run(replace(cfg, keep_best_loss=False, out=str(tmp_path / "resumed")), resume=True)
    with pytest.raises(DataError, match="is --init-from and a checkpoint this run overwrites"):
        run(replace(cfg, out=str(tmp_path / "resumed")), init_from=tmp_path / "resumed" / "best_loss.pt")
    calls["n"] = 0
    (tmp_path / "straight" / "curves.png").write_bytes(b"the old run's")  # what train draws when a run ends
    run(replace(TINY, epochs=1, out=str(tmp_path / "straight")))  # a new run there, without the option
    for name in ("best_loss.pt", "curves.png"):  # the old run's best-loss weights and curves went with it
        assert not (tmp_path / "straight" / name).exists()
    nan = float("nan")
    assert [lowest_loss_yet([{"val_loss": v} for v in losses]) for losses in
            ((1.0,), (nan, 1.0), (1.0, nan), (1.0, 1.0), (2.0, 1.0), (1.0, 2.0))] == \
        [True, True, False, False, True, False]


def test_history_rows_cover_every_epoch_since_the_validation_before():
    history, val = History(), {"loss": 1.0, "miou": 0.0, "pixel_accuracy": 0.5, "mdice": 0.5, "iou": [], "dice": []}
    history.add_epoch(1.0, train_seconds=2.0, seconds=3.0)
    history.add_epoch(3.0, train_seconds=2.0, seconds=3.0)
    assert history.add_validation(2, val, 0.1, images_per_epoch=10)  # a first mIoU of 0 is the best yet
    history.add_epoch(5.0, train_seconds=1.0, seconds=1.5)
    history.add_validation(3, val, 0.1, images_per_epoch=10)
    rows = [(r["epoch"], r["train_loss"], r["seconds"], r["images_per_s"]) for r in history.rows]
    assert rows == [(2, 2.0, 6.0, 5.0), (3, 5.0, 1.5, 10.0)]
    assert validations_since_best(history.rows[:1]) == 0 == History(history.rows[:1]).since_best


def test_train_one_epoch_steps_the_schedule_and_the_average_and_returns_the_mean_loss():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 2, 1)
    batches = [(torch.randn(2, 3, 4, 4), torch.randint(0, 2, (2, 4, 4))) for _ in range(3)]
    losses, before = [], {k: v.clone() for k, v in model.state_dict().items()}

    def loss_fn(logits, y):
        loss = torch.nn.functional.cross_entropy(logits, y)
        losses.append(loss.item())
        return loss

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** step)
    ema = WeightEMA(model, 0.5)
    mean = engine.train_one_epoch(model, batches, loss_fn, optimizer, scheduler, device="cpu", progress=False,
                                  ema=ema)
    assert mean == pytest.approx(sum(losses) / 3)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 3)  # stepped once per batch
    for key, value in ema.model.state_dict().items():  # the average moved, toward the weights
        assert not torch.equal(value, before[key])


def test_an_infinite_loss_stops_training_even_when_the_weights_stay_finite():
    model = torch.nn.Conv2d(3, 2, 1)
    constant_inf = lambda logits, y: (logits * 0).sum() + float("inf")  # noqa: E731  (zero gradient)
    with pytest.raises(engine.NonFiniteLoss, match="the training loss became inf"):
        engine.train_one_epoch(model, [(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))],
                               constant_inf, torch.optim.SGD(model.parameters(), lr=0.1), device="cpu", progress=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_with_ema_the_scores_are_the_averages(tmp_path):
    result = run(replace(TINY, ema_decay=0.8, out=str(tmp_path)))
    cfg = TrainConfig.from_dict(result["config"])
    _, val, spec = build_data(cfg, "cpu")
    scores = engine.evaluate(result["ema_model"], val, build_loss(cfg.loss, spec.num_classes), spec.num_classes,
                             device="cpu")
    assert result["history"][-1]["val_miou"] == pytest.approx(scores["miou"], abs=1e-9)
    plain = engine.evaluate(result["model"], val, build_loss(cfg.loss, spec.num_classes), spec.num_classes,
                            device="cpu")
    assert plain["loss"] != pytest.approx(scores["loss"], rel=1e-6)  # the two models do differ


def test_bce_is_refused_for_more_than_two_classes(tmp_path):
    with pytest.raises(ConfigError, match="bce is for two classes, and synthetic has 4"):
        run(replace(TINY, loss="bce", out=str(tmp_path)))


def test_checkpoint_of_another_model_is_refused(tmp_path):
    run(replace(TINY, out=str(tmp_path / "a")))
    with pytest.raises(DataError, match="model='unet', not 'hourglass'"):
        run(replace(TINY, model="hourglass", out=str(tmp_path / "b")), init_from=tmp_path / "a" / "best.pt")


def test_bad_options_and_unwritable_out(tmp_path):
    with pytest.raises(ConfigError, match="amp must be one of bf16, fp16, off"):
        replace(TINY, amp="fp8")
    with pytest.raises(ConfigError, match="batch_size must be at least 1"):
        replace(TINY, batch_size=0)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot write to --out"):
        run(replace(TINY, out=str(blocker / "sub")))


def test_worker_path_trains_too(tmp_path):
    result = run(replace(TINY, loader="workers", epochs=1, out=str(tmp_path)))
    assert result["history"][0]["train_loss"] > 0


def test_two_process_ddp_on_cpu(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("this torch is built without torch.distributed")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(free_port()), "-m", "seglib", "train", "--smoke", "--dataset",
                          "synthetic", "--data-path", "gpu", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("epoch   1/2") == out.stdout.count("best val mIoU") == 1  # only rank 0 prints
    assert out.stdout.count("curves: ") == 1 and (tmp_path / "curves.png").is_file()  # and draws
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs_run"] == 2


@pytest.mark.parametrize("path", ["gpu", "workers"])
def test_ddp_with_an_odd_number_of_images_finishes(tmp_path, path):
    """7 images on 2 ranks at batch 2: unless both ranks take the same number of steps, one waits
    forever in the gradient all-reduce."""
    script = tmp_path / "train.py"
    script.write_text(f"""
from seglib.engine import TrainConfig, fit
fit(TrainConfig.smoke(batch_size=2, max_samples=7, max_steps=None, loader="{path}", out=r"{tmp_path / 'out'}"),
    device="cpu")
""")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(free_port()), str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]


def test_train_or_reuse_trains_once_per_configuration(tmp_path, monkeypatch):
    from seglib.recipes import train_or_reuse

    cfg = replace(TINY, epochs=1, out=str(tmp_path / "run"))
    asked = []
    with monkeypatch.context() as spy:  # (undo() would also undo the autouse private SEGLIB_WORK_DIR)
        spy.setattr("seglib.recipes.fit", lambda *a, **k: asked.append(k) or fit(*a, **k))
        first = train_or_reuse(cfg, device="cpu", verbose=False)
    assert not first["reused"] and asked == [{"device": "cpu", "verbose": False, "progress": False}]  # no bars
    metrics = tmp_path / "run" / "metrics.json"
    with monkeypatch.context() as no_training:
        no_training.setattr("seglib.recipes.fit", lambda *a, **k: pytest.fail("retrained"))
        again = train_or_reuse(cfg, device="cpu", verbose=False)
        assert again["reused"] and again["best"]["val_miou"] == first["best"]["val_miou"]
        assert again["history"] == json.loads(json.dumps(first["history"]))
        older = json.loads(metrics.read_text())
        del older["config"]["ema_decay"]  # a run from before an option existed: its default changes nothing
        metrics.write_text(json.dumps(older))
        assert train_or_reuse(cfg, device="cpu", verbose=False)["reused"]
        assert train_or_reuse(replace(cfg, save_freq=5, log_freq=7, keep_best_loss=True), device="cpu",
                              verbose=False)["reused"]  # options that change no weight
        (tmp_path / "link").symlink_to(tmp_path, target_is_directory=True)  # the same folder by another path
        assert train_or_reuse(replace(cfg, out=str(tmp_path / "link" / "run")), device="cpu", verbose=False)["reused"]
    invalid = json.loads(metrics.read_text())
    invalid["config"]["batch_size"] = 0  # a config this version refuses: train again, no crash
    metrics.write_text(json.dumps(invalid))
    assert not train_or_reuse(cfg, device="cpu", verbose=False)["reused"]
    (tmp_path / "run" / "best.pt").unlink()  # scores without their weights: train again
    assert not train_or_reuse(cfg, device="cpu", verbose=False)["reused"]
    changed = train_or_reuse(replace(cfg, lr=5e-3), device="cpu", verbose=False)  # another recipe: train
    assert not changed["reused"]
    (tmp_path / "run" / "metrics.json").write_text("{half a fi")  # damaged: train again, no crash
    assert not train_or_reuse(replace(cfg, lr=5e-3), device="cpu", verbose=False)["reused"]


def test_train_or_reuse_never_pairs_a_finished_runs_scores_with_another_runs_weights(tmp_path, monkeypatch):
    """Run A finishes; run B (another recipe) starts in the same folder and dies after writing best.pt: A's
    metrics.json must not make B's weights pass for A's."""
    from seglib.recipes import train_or_reuse

    a = replace(TINY, epochs=1, out=str(tmp_path / "run"))
    train_or_reuse(a, device="cpu", verbose=False)
    with monkeypatch.context() as dies, pytest.raises(ZeroDivisionError):  # (not undo(): the private work dir stays)
        dies.setattr(engine, "finish", lambda *args: 1 / 0)
        fit(replace(a, lr=0.5), device="cpu", verbose=False)
    assert load_checkpoint(tmp_path / "run" / "best.pt")["config"]["lr"] == 0.5  # B's weights are there
    again = train_or_reuse(a, device="cpu", verbose=False)
    assert not again["reused"]
    assert load_checkpoint(tmp_path / "run" / "best.pt")["config"]["lr"] == a.lr


def test_train_or_reuse_trains_again_when_the_data_changed(tmp_path):
    from seglib.data import find_folder
    from seglib.recipes import train_or_reuse

    cfg = replace(TINY, epochs=1, out=str(tmp_path / "run"))
    train_or_reuse(cfg, device="cpu", verbose=False)
    assert train_or_reuse(cfg, device="cpu", verbose=False)["reused"]
    image = sorted((find_folder(cfg.dataset) / "images").iterdir())[0]
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))  # edited (or replaced)
    assert not train_or_reuse(cfg, device="cpu", verbose=False)["reused"]


def test_comparison_configs_keep_each_plan_in_its_own_folder():
    from seglib.recipes import PLANS, comparison_configs

    for plan in PLANS:
        configs = comparison_configs(plan, "tiktok")
        assert set(configs) == {"person hourglass", "person unet", "person wide unet", "camvid unet",
                                "camvid deeplabv3+", "msrc unet", "msrc deeplabv3+"}
        outs = [c.out for c in configs.values()]
        assert len(set(outs)) == len(outs) and all(f"/runs/{plan}/" in o for o in outs)
        factor = 1 if plan == "smoke" else 5  # MSRC: fewer images, more epochs
        assert configs["camvid unet"].batch_size == min(PLANS[plan]["batch"], 16)  # scenes: larger images
        assert configs["msrc unet"].epochs == factor * configs["camvid unet"].epochs
        for cfg in configs.values():  # last.pt about ten times a run, and at its end
            assert cfg.save_freq == max(1, cfg.epochs // 10) and cfg.epochs // cfg.save_freq <= 19
            assert plan == "gpu" or cfg.max_samples  # the CPU plan's minutes hold for a full release too
    shapes = comparison_configs("cpu", "synthetic", scenes=())
    assert set(shapes) == {"person hourglass", "person unet", "person wide unet"}
    assert shapes["person unet"].epochs == 10 * comparison_configs("cpu", "tiktok")["person unet"].epochs


def test_showcase_configs_differ_only_in_epochs_and_folder():
    from seglib.recipes import SHOWCASE, showcase_configs

    for plan in SHOWCASE:
        trained, weak = showcase_configs(plan).values()
        assert trained.dataset == "pets" and weak.epochs == 1 and f"/runs/{plan}/" in trained.out
        assert trained.out != weak.out
        assert plan == "gpu" or trained.max_samples  # not the 7,390 photos of a full pets release on a CPU
        assert replace(weak, epochs=trained.epochs, val_every=trained.val_every, save_freq=trained.save_freq,
                       out=trained.out) == trained


def test_how_good_names_the_plan_and_what_a_proper_run_reaches(tmp_path, monkeypatch):
    import json

    from seglib import recipes

    monkeypatch.setattr(recipes, "GPU_RESULTS", tmp_path)
    assert "No proper run" in recipes.how_good("cpu", "msrc")  # no GPU result, nothing published
    assert "0.91" in recipes.how_good("cpu", "pets") and "CPU plan" in recipes.how_good("cpu", "pets")
    assert "mean nothing" in recipes.how_good("smoke", "pets")
    gpu_line = recipes.how_good("gpu", "camvid")  # the GPU plan is not the recipe: both are quoted beside it
    assert "GPU plan" in gpu_line and "0.66-0.70" in gpu_line
    native = {"miou": 0.7654, "foreground_iou": None}
    saved = {"env": {"device": "NVIDIA H200"},
             "recipes": {"msrc": {"native_last": native, "config": {"image_size": 256}, "wall_seconds": 29.4}}}
    (tmp_path / "2026-11-28_H200_recipes.json").write_text(json.dumps(saved))
    (tmp_path / "2026-11-29_H200_recipes.json").write_text("{half a fi")  # a damaged newer file is skipped
    older = {**saved, "env": {"device": "NVIDIA H100"}}
    (tmp_path / "2026-11-20_H100_recipes.json").write_text(json.dumps(older))  # the newest valid one is quoted
    line = recipes.how_good("cpu", "msrc")
    assert "mIoU 0.765" in line and "NVIDIA H200" in line and "29 s" in line and "person IoU" not in line
    assert [recipes.plan_name(smoke, device) for smoke, device in ((True, "cuda"), (False, "cuda"), (False, "cpu"))] \
        == ["smoke", "gpu", "cpu"]


def test_weight_ema_follows_the_documented_recursion():
    torch.manual_seed(0)
    model = create_model("unet", 4, base_channels=4, depth=2)
    ema = WeightEMA(model, decay=0.9)
    expected = {k: v.detach().clone().double() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 4, (2, 16, 16))
    for t in range(5):
        model.train()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()  # the BatchNorm running statistics move in the forward pass too
        ema.update(model)
        d = min(0.9, (1 + t) / (10 + t))
        for k, v in model.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v.double() if v.is_floating_point() else v.double()
    for k, v in ema.model.state_dict().items():
        torch.testing.assert_close(v.double(), expected[k], rtol=1e-5, atol=1e-6)
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_fit_with_ema_saves_the_average_and_resumes_exactly(tmp_path, monkeypatch):
    cfg = replace(TINY, ema_decay=0.8)
    one = run(replace(cfg, epochs=1, out=str(tmp_path / "one")))  # one epoch: best.pt is this epoch's
    best = load_checkpoint(tmp_path / "one" / "best.pt")["model"]
    for key, value in one["ema_model"].state_dict().items():  # best.pt holds the average, not the weights
        torch.testing.assert_close(best[key], value, rtol=0, atol=0)
    last_key = list(best)[-1]
    assert not torch.equal(best[last_key], one["model"].state_dict()[last_key])
    from_last, _ = load_model(tmp_path / "one" / "last.pt")  # predicting with last.pt runs the average too
    for key, value in from_last.state_dict().items():
        torch.testing.assert_close(value, best[key], rtol=0, atol=0)

    straight = run(replace(cfg, out=str(tmp_path / "straight")))
    averaged = straight["ema_model"].state_dict()
    with killed_at_validation(monkeypatch, 2):
        run(replace(cfg, out=str(tmp_path / "resumed")))
    resumed = run(replace(cfg, out=str(tmp_path / "resumed")), resume=True)
    for key, value in averaged.items():
        torch.testing.assert_close(resumed["ema_model"].state_dict()[key], value, rtol=0, atol=0)
    run(replace(TINY, epochs=1, out=str(tmp_path / "plain")))
    with pytest.raises(DataError, match=r"other training options \(ema_decay: None → 0.8\)"):  # a run without EMA
        run(replace(cfg, out=str(tmp_path / "plain")), resume=True)


@pytest.mark.parametrize("loader", ["gpu", "workers"])
def test_augmentation_options_reach_both_loaders(loader):
    cfg = replace(TINY, crop_scale=0.25, rotate=10, jitter=0.4, blur=0.2, loader=loader)
    train, _, _ = build_data(cfg, "cpu")
    if loader == "gpu":
        a = train.augment
        assert (a.scale, a.rotate, a.jitter, a.blur) == ((0.25, 1.0), 10, 0.4, 0.2)
    else:
        steps = {type(t).__name__: t for t in train.transform.transforms}
        assert tuple(steps["RandomResizedCrop"].scale) == (0.25, 1.0)
        assert tuple(steps["Rotate"].limit) == (-10, 10) and steps["Rotate"].fill_mask == 255
        assert tuple(steps["ColorJitter"].saturation) == (0.6, 1.4) and tuple(steps["ColorJitter"].hue) == (-0.1, 0.1)
        assert steps["GaussianBlur"].p == 0.2 and tuple(steps["GaussianBlur"].sigma_limit) == (0.1, 2.0)
    plain, _, _ = build_data(replace(cfg, jitter=0, blur=0), "cpu")
    if loader == "workers":
        assert not {"ColorJitter", "GaussianBlur"} & {type(t).__name__ for t in plain.transform.transforms}
    with pytest.raises(ConfigError, match="crop_scale must be in"):
        replace(TINY, crop_scale=0.0)
    with pytest.raises(ConfigError, match="rotate must be between 0 and 180"):
        replace(TINY, rotate=-5)
    with pytest.raises(ConfigError, match="jitter must be between 0 and 1, not 1.5"):
        replace(TINY, jitter=1.5)


def test_fit_under_torch_compile_saves_plain_weights(tmp_path, monkeypatch):
    """--compile trains the compiled wrapper but checkpoints the module itself (no ``_orig_mod.`` keys).

    Dynamo traces the real graphs; the aot_eager backend skips inductor's C++ build (a minute on CPU)."""
    from seglib.inference import load_model

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    result = run(replace(TINY, out=str(tmp_path), compile=True))
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in result["history"])
    for name in ("best.pt", "last.pt"):
        keys = load_checkpoint(tmp_path / name, expect={"model": "unet", "num_classes": 4})["model"]
        assert not any(key.startswith("_orig_mod.") for key in keys), name
    model, _ = load_model(tmp_path / "last.pt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), result["model"].eval()(x))


def test_trunk_lr_mult_puts_the_trunk_in_its_own_group_and_keeps_the_ratio():
    from seglib.lr_finder import lr_find
    from seglib.schedules import build_scheduler

    torch.manual_seed(0)
    model = create_model("deeplabv3plus", 3)
    optimizer = build_optimizer(TrainConfig(model="deeplabv3plus", lr=1e-3, trunk_lr_mult=0.1), model, "cpu")
    trunk, rest = optimizer.param_groups
    assert {id(p) for p in trunk["params"]} == {id(p) for p in model.backbone.parameters()}
    assert {id(p) for p in trunk["params"] + rest["params"]} == {id(p) for p in model.parameters()}
    assert len(trunk["params"]) + len(rest["params"]) == len(list(model.parameters()))
    assert (trunk["lr"], rest["lr"]) == (pytest.approx(1e-4), 1e-3)

    seen = []
    optimizer.register_step_pre_hook(lambda opt, *_: seen.append([g["lr"] for g in opt.param_groups]))
    scheduler = build_scheduler(optimizer, "cosine", total_steps=6, warmup_steps=2)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    for _ in range(5):
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        scheduler.step()
    lr_find(model, [(x, y)], torch.nn.functional.cross_entropy, optimizer, steps=4)
    assert len(seen) == 9 and len({round(head, 12) for _, head in seen}) > 3  # the rate moved ...
    assert all(t == pytest.approx(0.1 * h) for t, h in seen)                    # ... the trunk at 0.1 of it

    frozen = create_model("deeplabv3plus", 3, train_trunk=False)
    (only,) = param_groups(frozen, 1e-3, 0.1)
    assert only["lr"] == 1e-3 and {id(p) for p in only["params"]}.isdisjoint(map(id, frozen.backbone.parameters()))
    assert len(param_groups(model, 1e-3)) == 1
    with pytest.raises(ConfigError, match="deeplabv3plus"):
        param_groups(create_model("unet", 3, base_channels=4, depth=2), 1e-3, 0.1)
    with pytest.raises(ConfigError, match="deeplabv3plus"):
        TrainConfig(model="unet", trunk_lr_mult=0.1)
    with pytest.raises(ConfigError, match="no-train-trunk"):
        TrainConfig(model="deeplabv3plus", trunk_lr_mult=0)


@pytest.mark.parametrize("scaled", [False, True])
def test_grad_clip_bounds_the_step_by_the_true_gradient_norm(scaled):
    torch.manual_seed(0)
    model = create_model("unet", 4, base_channels=4, depth=2)
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 4, (2, 16, 16))
    loss_fn = build_loss("ce", 4)

    def step_size(clip):
        trial = create_model("unet", 4, base_channels=4, depth=2)
        trial.load_state_dict(model.state_dict())
        before = torch.cat([p.detach().flatten().clone() for p in trial.parameters()])
        optimizer = torch.optim.SGD(trial.parameters(), lr=1.0)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16) if scaled else None
        engine.train_one_epoch(trial, [(x, y)], loss_fn, optimizer, device=torch.device("cpu"), scaler=scaler,
                               progress=False, grad_clip=clip)
        return float((torch.cat([p.detach().flatten() for p in trial.parameters()]) - before).norm())

    free = step_size(None)  # plain SGD at lr 1: the step is the gradient
    assert free > 0.05
    assert step_size(0.05) == pytest.approx(0.05, rel=1e-3)  # the true gradient clipped, not the scaled one
    assert step_size(10 * free) == pytest.approx(free, rel=1e-4)  # a loose bound changes nothing
    with pytest.raises(ConfigError, match="grad_clip"):
        TrainConfig(grad_clip=0)


def test_weights_saved_from_a_wrapped_model_load_into_the_bare_one(tmp_path):
    """A state_dict taken from DataParallel/DDP (``module.``) or torch.compile (``_orig_mod.``) loads."""
    from seglib.inference import load_model

    torch.manual_seed(0)
    model = create_model("unet", 4, base_channels=4, depth=2)
    meta = {"model": "unet", "num_classes": 4, "image_size": 32, "model_options": {"base_channels": 4, "depth": 2}}
    x = torch.randn(1, 3, 32, 32)
    for prefix in ("module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module."):
        path = tmp_path / f"{prefix.replace('.', '_')}.pt"
        torch.save({"model": {prefix + k: v for k, v in model.state_dict().items()}, "meta": meta}, path)
        loaded, _ = load_model(path)
        with torch.no_grad():
            torch.testing.assert_close(loaded.eval()(x), model.eval()(x))
    assert set(plain_keys({"module.a": 1, "b": 2})) == {"module.a", "b"}  # only a prefix on every key
    assert plain_keys({}) == {}


def host_reads(fn) -> int:
    """How many times ``fn`` copies a tensor value to the host (``.item()``, ``if tensor``...)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key in ("aten::_local_scalar_dense", "aten::nonzero"))


@pytest.mark.parametrize("loss", ["ce", "ce+dice", "focal"])
def test_host_reads_do_not_grow_with_the_number_of_batches(loss):
    """On a GPU every host read stalls the step: a training epoch may read once (its mean loss) and
    an evaluation a fixed number of times at the end, however many batches they run."""
    import numpy as np

    from seglib.gpu_augment import GpuAugment

    samples = [make_sample(i, (32, 32)) for i in range(12)]
    images, masks = np.stack([s[0] for s in samples]), np.stack([s[1] for s in samples])
    model = create_model("unet", 4, base_channels=8, depth=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)  # AdamW's CPU step counter reads
    loss_fn, cpu = build_loss(loss, 4), torch.device("cpu")

    def epoch(n):
        batches = ResidentBatches(images[:4 * n], masks[:4 * n], 4, cpu, augment=GpuAugment(32), seed=0,
                                         shuffle=True, drop_last=True)
        return lambda: engine.train_one_epoch(model, batches, loss_fn, optimizer, device=cpu, progress=False,
                                              log_freq=1, ema=WeightEMA(model, 0.9), grad_clip=1.0)  # no bar, no read

    def evaluation(n):
        batches = ResidentBatches(images[:4 * n], masks[:4 * n], 4, cpu, augment=None, seed=0,
                                         shuffle=False, drop_last=False)
        return lambda: engine.evaluate(model, batches, loss_fn, 4, device=cpu)

    assert host_reads(epoch(1)) == host_reads(epoch(3)) == 1
    assert host_reads(evaluation(1)) == host_reads(evaluation(3))


def test_max_steps_makes_no_batch_beyond_the_ones_it_trains_on():
    made = []

    class Counted(list):
        def __iter__(self):
            for batch in super().__iter__():
                made.append(1)  # augmenting or collating a batch costs as much as a step's data
                yield batch

    model = create_model("unet", 4, base_channels=8, depth=2)
    x, y = torch.rand(2, 3, 32, 32), torch.zeros(2, 32, 32, dtype=torch.long)
    engine.train_one_epoch(model, Counted([(x, y)] * 5), build_loss("ce", 4), torch.optim.SGD(model.parameters(), 0.1),
                           device=torch.device("cpu"), max_steps=2, progress=False)
    assert len(made) == 2


class Numbered:
    """n blank images whose masks hold their own index: a batch tells which samples it holds."""

    def __init__(self, n, size=8):
        import numpy as np

        self.images = np.zeros((n, size, size, 3), np.uint8)
        self.masks = np.stack([np.full((size, size), i, np.uint8) for i in range(n)])

    def __len__(self):
        return len(self.masks)

    def load(self, i):
        return self.images[i], self.masks[i]


def seen(batches, epoch=0):
    batches.set_epoch(epoch)
    return [int(i) for _, y in batches for i in y[:, 0, 0]]


@pytest.mark.parametrize("path", ["gpu", "workers"])
def test_ddp_shards_are_disjoint_and_training_shards_equal(path):
    from seglib import transforms

    data, cpu = Numbered(7), torch.device("cpu")

    def batches(rank, train):
        common = dict(seed=3, shuffle=train, drop_last=False, rank=rank, world=2, even=train)
        if path == "gpu":
            return ResidentBatches(data.images, data.masks, 2, cpu, augment=None, **common)
        return WorkerBatches(data, transforms.eval_transform(8), 2, cpu, num_workers=0, **common)

    for epoch in (0, 1):
        train = [seen(batches(rank, True), epoch) for rank in (0, 1)]
        assert len(train[0]) == len(train[1]) == 3  # 7 samples: one left out, so no rank waits for the other
        assert len(set(train[0] + train[1])) == 6
    assert seen(batches(0, True), 0) != seen(batches(0, True), 1)  # reshuffled every epoch
    val = [seen(batches(rank, False)) for rank in (0, 1)]
    assert sorted(val[0] + val[1]) == list(range(7))  # validation: every image once, none twice


def test_ddp_ranks_draw_their_own_augmentations():
    from seglib.gpu_augment import GpuAugment

    data, cpu = Numbered(8, size=16), torch.device("cpu")
    data.images[:] = torch.randint(0, 255, data.images.shape, generator=torch.Generator().manual_seed(0)).numpy()
    data.images[1::2] = data.images[::2]  # rank 0 and rank 1 get the same pictures in each step
    data.masks[:] = 0
    ranks = [ResidentBatches(data.images, data.masks, 4, cpu, augment=GpuAugment(16), seed=0,
                                    shuffle=False, drop_last=True, rank=rank, world=2) for rank in (0, 1)]
    (x0, _), (x1, _) = next(iter(ranks[0])), next(iter(ranks[1]))
    assert not torch.allclose(x0, x1)


def test_the_workers_path_gives_each_rank_its_own_augmentations():
    from seglib import transforms

    data, cpu = Numbered(8, size=16), torch.device("cpu")
    data.images[:] = torch.randint(0, 255, data.images.shape, generator=torch.Generator().manual_seed(0)).numpy()
    data.images[1::2] = data.images[::2]  # rank 0 and rank 1 get the same pictures in each step
    ranks = [WorkerBatches(data, transforms.train_transform(16, seed=0), 4, cpu, seed=0, shuffle=False,
                           drop_last=True, num_workers=0, rank=rank, world=2) for rank in (0, 1)]
    (x0, _), (x1, _) = next(iter(ranks[0])), next(iter(ranks[1]))
    assert not torch.allclose(x0, x1)


@pytest.fixture
def fake_splits(monkeypatch):
    """``build_data`` over ``Numbered`` caches of the sizes in the returned dict; records each load_dataset call."""
    import seglib.cache
    import seglib.data

    sizes, asked = {"train": 10, "val": 5}, []

    def load_dataset(name, split, root=None, **kw):
        asked.append((split, kw.get("max_samples")))
        return type("Split", (), {"split": split, "spec": SPECS[name]})()

    monkeypatch.setattr(seglib.data, "load_dataset", load_dataset)
    monkeypatch.setattr(seglib.cache, "load_or_build_cache", lambda ds, size: Numbered(sizes[ds.split], size))
    return sizes, asked


@pytest.mark.parametrize("loader", ["gpu", "workers"])
def test_build_data_under_two_ranks_keeps_every_step_of_a_small_set_and_the_ranks_in_step(loader, fake_splits):
    sizes, _ = fake_splits
    sizes["train"] = 6  # 3 a rank: fewer than a batch of 4, so no batch may be dropped
    cfg = replace(TINY, loader=loader, num_workers=0, batch_size=4)
    assert [len(build_data(cfg, "cpu", rank=rank, world=2)[0]) for rank in (0, 1)] == [1, 1]
    sizes["train"] = 7  # odd: both ranks take the same number of steps (one image left out), or one would wait
    cfg = replace(cfg, batch_size=2)
    assert [len(build_data(cfg, "cpu", rank=rank, world=2)[0]) for rank in (0, 1)] == [1, 1]


def test_build_data_validates_on_val_images_and_uses_workers_on_a_cpu(fake_splits):
    _, asked = fake_splits
    train, val, _ = build_data(replace(TINY, loader="auto", num_workers=0, max_samples=9, val_images=3), "cpu")
    assert asked == [("train", 9), ("val", 3)]
    assert isinstance(train, WorkerBatches) and isinstance(val, WorkerBatches)


@pytest.mark.parametrize("loader", ["gpu", "workers"])
def test_build_data_trains_on_train_reshuffled_and_validates_on_all_of_val_in_order(loader, fake_splits):
    """The reference projects validated on the test split (MSRC) and never shuffled (Penn-Fudan): here the
    training batches come from ``train`` in a new order each epoch, the validation batches from ``val``,
    every image once, in order; ``test`` is never read."""
    _, asked = fake_splits
    train, val, _ = build_data(replace(TINY, loader=loader, num_workers=0, batch_size=2), "cpu")
    assert [split for split, _ in asked] == ["train", "val"]
    orders = [seen(train, epoch) for epoch in (0, 1)]
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1]) == list(range(10))
    assert orders[0] != list(range(10))
    assert seen(val, 0) == seen(val, 1) == list(range(5))  # no drop_last: the odd image is scored too


@pytest.mark.parametrize("loader", ["gpu", "workers"])
def test_training_batches_are_full_yet_a_small_set_still_trains(loader, fake_splits):
    """10 images at batch 4: two full batches (a last one of 2 is noisy; of 1, BatchNorm fails on it); 3 images
    at batch 4: one batch of 3, never an epoch of 0 steps."""
    cfg = replace(TINY, loader=loader, num_workers=0, batch_size=4)
    sizes, _ = fake_splits
    for n, batches in [(10, [4, 4]), (3, [3])]:
        sizes["train"] = n
        train, _, _ = build_data(cfg, "cpu")
        assert len(train) == len(batches) and [len(y) for _, y in train] == batches


def test_evaluate_averages_the_loss_over_every_image_and_builds_no_graph():
    """The person-mask project reported the last batch's loss as the validation loss, computed with
    autograd on: ``evaluate`` averages every image's own loss, under inference mode, however the images are batched."""
    torch.manual_seed(0)
    x, y = torch.randn(5, 3, 8, 8), torch.randint(0, 3, (5, 8, 8))
    modes = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 1)

        def forward(self, images):
            modes.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled(), self.training))
            return self.conv(images)

    model, loss_fn = Spy(), torch.nn.CrossEntropyLoss(ignore_index=255)
    y[2:4, :7] = 255  # two images mostly void: a batch's mean loss would weigh them by their few pixels
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]  # uneven: 4 images, then 1
    result = engine.evaluate(model, batches, loss_fn, 3, device="cpu")  # a device name works too
    with torch.no_grad():
        per_image = [loss_fn(model.conv(x[i:i + 1]), y[i:i + 1]).item() for i in range(5)]
    assert result["loss"] == pytest.approx(sum(per_image) / 5, rel=1e-6)
    assert result["loss"] != pytest.approx(per_image[4], rel=1e-3)  # not the last batch's
    assert modes == [(True, False, False)] * 2
    one_by_one = engine.evaluate(model, [(x[i:i + 1], y[i:i + 1]) for i in range(5)], loss_fn, 3, device="cpu")
    assert one_by_one["loss"] == pytest.approx(result["loss"], rel=1e-6)  # batching changes nothing


def test_deterministic_is_set_for_each_run_both_ways(tmp_path):
    """A deterministic run must not leave the process deterministic (and cuDNN autotuning off) for the
    runs after it, in a notebook say."""
    try:
        for deterministic in (True, False):
            run_ = engine.setup_run(replace(TINY, out=str(tmp_path / str(deterministic)),
                                            deterministic=deterministic), "cpu")
            unlock_folder(run_.out, run_.lock)
            assert torch.are_deterministic_algorithms_enabled() is deterministic
            assert torch.is_deterministic_algorithms_warn_only_enabled() or not deterministic  # warns, never raises
            assert torch.backends.cudnn.benchmark is not deterministic
    finally:
        torch.use_deterministic_algorithms(False)


def test_a_bare_cuda_under_torchrun_is_each_process_own_gpu(monkeypatch):
    """``fit(cfg, device="cuda")`` under torchrun would otherwise put every rank on the first GPU."""
    if not torch.cuda.is_available():  # a machine with two GPUs, as far as the device check sees
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert engine.process_device("cuda", 1, 2) == torch.device("cuda", 1)
    assert engine.process_device("cuda", 0, 1) == torch.device("cuda")  # one process: the current GPU
    assert engine.process_device("cuda:0", 1, 2) == torch.device("cuda", 0)  # asked for by index: kept
    assert engine.process_device("cpu", 1, 2) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert engine.process_device(None, 1, 2) == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device cuda:1: this machine has no CUDA GPUs"):
        engine.process_device("cuda:1", 1, 2)


def test_snapshots_draw_the_same_validation_images_every_n_epochs_and_at_the_end(tmp_path, monkeypatch):
    """The reference projects' per-epoch prediction images: ``snapshot_every=2`` over 5 epochs draws after
    epochs 2, 4 and 5, each time the first four validation images with the weights of that moment."""
    from seglib import snapshots

    drawn = []
    real_save = snapshots.Snapshots.save

    def save(self, model, epoch, miou):
        drawn.append((epoch, self.images.clone(), {k: v.clone() for k, v in model.state_dict().items()}))
        return real_save(self, model, epoch, miou)

    monkeypatch.setattr(snapshots.Snapshots, "save", save)
    result = run(replace(TINY, epochs=5, snapshot_every=2, out=str(tmp_path)))
    assert [epoch for epoch, _, _ in drawn] == [2, 4, 5]
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == [
        "epoch_0002.png", "epoch_0004.png", "epoch_0005.png"]
    assert all(torch.equal(images, drawn[0][1]) for _, images, _ in drawn) and len(drawn[0][1]) == 4
    final = result["model"].state_dict()
    assert all(torch.equal(drawn[-1][2][k], final[k]) for k in final)  # the weights of that epoch
    assert not all(torch.equal(drawn[0][2][k], final[k]) for k in final)
    from PIL import Image
    assert Image.open(tmp_path / "snapshots" / "epoch_0005.png").size[0] > 200
    with pytest.raises(ConfigError, match="snapshot_every draws at a validation: make it a multiple of val_every"):
        replace(TINY, snapshot_every=3, val_every=2)
    run(replace(TINY, epochs=1, out=str(tmp_path)))  # a new run in the folder (--overwrite): old pictures go
    assert list((tmp_path / "snapshots").iterdir()) == []


def test_snapshot_truths_are_those_of_the_images_shown_with_batches_above_four(tmp_path):
    """A validation batch of 8: the truth column must be the first 4 masks, as the images are (not the last 4)."""
    from seglib.snapshots import Snapshots

    data = Numbered(10)
    data.images[:] = data.masks[..., None] * 20  # each image tells its index too
    val = ResidentBatches(data.images, data.masks, 8, torch.device("cpu"), augment=None, seed=0, shuffle=False,
                          drop_last=False)
    shown = Snapshots(val, tmp_path, "synthetic")
    x, y = next(iter(val))
    assert torch.equal(shown.images, x[:4]) and torch.equal(shown.targets, y[:4])
    assert shown.targets[:, 0, 0].tolist() == [0, 1, 2, 3]


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag in a TensorBoard folder as (step, value) pairs, as TensorBoard shows them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_logs_each_validation_once_even_across_a_resume(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed (pip install tensorboard)")
    cfg = replace(TINY, epochs=4, save_freq=2, tensorboard=True, out=str(tmp_path / "run"))
    with killed_at_validation(monkeypatch, 4):
        run(cfg)  # epochs 1-3 logged, last.pt holds epoch 2
    assert [s for s, _ in tensorboard_scalars(tmp_path / "run" / "tensorboard")["loss/val"]] == [1, 2, 3]
    rows = run(cfg, resume=True)["history"]
    scalars = tensorboard_scalars(tmp_path / "run" / "tensorboard")
    for column, tag in (("val_loss", "loss/val"), ("val_miou", "val/mIoU"), ("train_loss", "loss/train"),
                        ("lr", "lr")):  # the first run's epoch 3 is dropped: the resumed run trained it again
        assert scalars[tag] == [(r["epoch"], pytest.approx(r[column], rel=1e-6)) for r in rows], tag
    best = json.loads((tmp_path / "run" / "metrics.json").read_text())["best"]
    names = SPECS["synthetic"].class_names
    at_best = {name: dict(scalars[f"val_iou/{name}"])[best["epoch"]] for name in names
               if f"val_iou/{name}" in scalars}
    assert at_best and all(at_best[n] == pytest.approx(best["val_iou"][i], rel=1e-6)
                           for i, n in enumerate(names) if n in at_best)
    run(replace(cfg, epochs=2))  # a new run in the folder (not resumed): the old run's events go
    assert len(list((tmp_path / "run" / "tensorboard").iterdir())) == 1
    assert [s for s, _ in tensorboard_scalars(tmp_path / "run" / "tensorboard")["loss/val"]] == [1, 2]


def test_tensorboard_without_the_package_is_a_config_error_before_anything_is_replaced(tmp_path, monkeypatch):
    run(replace(TINY, epochs=1, snapshot_every=1, out=str(tmp_path / "run")))
    before = sorted(p.name for p in (tmp_path / "run").rglob("*"))
    assert "epoch_0001.png" in before
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        run(replace(TINY, tensorboard=True, out=str(tmp_path / "run")))
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == before  # the earlier run's pictures too
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        run(replace(TINY, tensorboard=True, out=str(tmp_path / "new")))
    assert not (tmp_path / "new").exists()  # no folder made


def test_remove_snapshots_deletes_the_runs_pictures_only(tmp_path):
    from seglib.snapshots import remove_snapshots

    folder = tmp_path / "snapshots"
    (folder / "epoch_0002.png").mkdir(parents=True)  # not a picture: someone's folder
    (folder / "epoch_0001.png").write_bytes(b"png")
    (folder / "notes.txt").write_text("mine")
    remove_snapshots(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["epoch_0002.png", "notes.txt"]
