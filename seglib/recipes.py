"""The training runs that notebooks 06 and 07 share, sized for the machine at hand.

>>> plan_label = plan_name(settings.smoke, device)           # "gpu", "cpu" or "smoke"
>>> plan = PLANS[plan_label]                                # its sizes
>>> configs = comparison_configs(plan_label, person="tiktok")  # label -> TrainConfig
>>> run = train_or_reuse(configs["person unet"])             # trains once, then reuses the result

Three plans: ``gpu`` (UNet widths 32 and 64 at 128 or 352 px, a minute or less per model on one GPU),
``cpu`` (smaller images and widths, few epochs: a laptop finishes in minutes) and ``smoke`` (the
automated tests). Each plan's runs live in their own folder,
``<work dir>/runs/<plan>/<dataset>_<model>``, so a smoke test never overwrites a real run.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from seglib.batches import data_fingerprint
from seglib.engine import fit
from seglib.train_config import TrainConfig
from seglib.paths import display_path, work_dir

_SMOKE = TrainConfig.smoke()
# UNet base widths: "wide" is twice "width" (four times the parameters); on the GPU plan it is 64,
# the paper's widths, the big UNet of notebook 03
PLANS = {
    "smoke": dict(person_size=_SMOKE.image_size, person_epochs=1, scene_size=_SMOKE.image_size, scene_epochs=1,
                  width=_SMOKE.model_options["base_channels"] // 2, wide=_SMOKE.model_options["base_channels"],
                  batch=_SMOKE.batch_size, max_samples=_SMOKE.max_samples, max_steps=_SMOKE.max_steps),
    "cpu": dict(person_size=64, person_epochs=6, scene_size=96, scene_epochs=6, width=8, wide=16, batch=32,
                max_samples=800, max_steps=None),
    "gpu": dict(person_size=128, person_epochs=30, scene_size=352, scene_epochs=80, width=32, wide=64, batch=32,
                max_samples=None, max_steps=None),
}

# Small training sets get more epochs. In the copies behind the committed outputs MSRC has 74
# training images to CamVid's 184 (five times the epochs: about twice CamVid's steps) and the
# synthetic shapes 80 to TikTok's 729 (ten times: about as many steps as TikTok)
EPOCH_FACTOR = {"msrc": 5, "synthetic": 10}

# What a proper run reaches where no GPU recipe of ours measured it: the published number to read a
# CPU-plan score against (docs in the README's Results; sources in ../shared/docs/ANCHORS.md)
PUBLISHED = {
    "camvid": "from-scratch CamVid-11 models published 0.66-0.70 mIoU (FC-DenseNet103, ICNet)",
    "pets": "an ImageNet-pretrained FPN-ResNet34 (segmentation_models_pytorch) reaches pet IoU 0.91 on the 37 "
            "breeds' official test split, scoring the trimap's border band as pet (seglib's pets dataset ignores it)",
    "pennfudan": "the Penn-Fudan reference project's 31M UNet, from scratch for 200 epochs, plotted val mIoU "
                 "0.70-0.72 on its own 24-photo split, with a metric that scales mIoU by 6/7 (about 0.84 undone)",
}
GPU_RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"

# The CPU plan reads at most ``max_samples`` images of each split, spread evenly over it (every TikTok video,
# every pets breed), so that its minutes hold for a full release too (the pets release has 7,390 photos). The
# copies behind the committed outputs are smaller (729 TikTok training frames, 177 pets photos): there the caps
# change nothing.

# The pets UNet whose pictures notebooks 06-08 show (Oxford-IIIT Pet: its photos may appear in committed
# outputs). cpu: about 2 minutes on two idle cores for 177 training photos (5 on an older CPU)
SHOWCASE = {
    "smoke": dict(image_size=_SMOKE.image_size, width=_SMOKE.model_options["base_channels"], epochs=1,
                  batch=_SMOKE.batch_size, max_samples=_SMOKE.max_samples, max_steps=_SMOKE.max_steps),
    "cpu": dict(image_size=128, width=16, epochs=25, batch=8, max_samples=240, max_steps=None),
    "gpu": dict(image_size=256, width=32, epochs=60, batch=16, max_samples=None, max_steps=None),
}

__all__ = ["EPOCH_FACTOR", "PLANS", "PUBLISHED", "SHOWCASE", "comparison_configs", "how_good", "plan_name",
           "runs_dir", "showcase_configs", "train_or_reuse"]


def plan_name(smoke: bool, device) -> str:
    return "smoke" if smoke else "gpu" if torch.device(device).type == "cuda" else "cpu"


def runs_dir(plan_label: str) -> Path:
    return work_dir() / "runs" / plan_label


def comparison_configs(plan_label: str, person: str, *, seed: int = 0, num_workers: int = 2,
                       scenes=("camvid", "msrc")) -> dict[str, TrainConfig]:
    """The model comparisons: Hourglass / UNet / wide UNet on ``person`` data, UNet / DeepLabV3+ on scenes."""
    p, out = PLANS[plan_label], runs_dir(plan_label)

    def epochs(dataset: str, base: int) -> int:
        return base if plan_label == "smoke" else base * EPOCH_FACTOR.get(dataset, 1)

    person_unet = TrainConfig(dataset=person, model="unet", model_options={"base_channels": p["width"]},
                              epochs=epochs(person, p["person_epochs"]), image_size=p["person_size"],
                              batch_size=p["batch"],
                              lr=2e-3, max_samples=p["max_samples"], max_steps=p["max_steps"],
                              num_workers=num_workers, seed=seed, out=str(out / f"{person}_unet"))
    configs = {
        "person hourglass": replace(person_unet, model="hourglass", out=str(out / f"{person}_hourglass")),
        "person unet": person_unet,
        "person wide unet": replace(person_unet, model_options={"base_channels": p["wide"]},
                                   out=str(out / f"{person}_wide_unet")),
    }
    for scene in scenes:
        base = replace(person_unet, dataset=scene, image_size=p["scene_size"],
                       epochs=epochs(scene, p["scene_epochs"]), batch_size=min(p["batch"], 16))
        configs[f"{scene} unet"] = replace(base, out=str(out / f"{scene}_unet"))
        configs[f"{scene} deeplabv3+"] = replace(base, model="deeplabv3plus", model_options={"backbone": "resnet18"},
                                                 out=str(out / f"{scene}_deeplabv3plus"))
    # last.pt about ten times per run: the GPU plan's 400 short MSRC epochs would otherwise spend
    # minutes writing a 190 MiB resume checkpoint after each one
    return {label: replace(cfg, save_freq=max(1, cfg.epochs // 10)) for label, cfg in configs.items()}


def showcase_configs(plan_label: str, *, seed: int = 0, num_workers: int = 2) -> dict[str, TrainConfig]:
    """The pets UNet (pet vs background, the border band ignored) trained for the plan's epochs, and the
    same recipe stopped after one epoch: a well-trained model and a weak one to show side by side."""
    p = SHOWCASE[plan_label]
    trained = TrainConfig(dataset="pets", model="unet", model_options={"base_channels": p["width"]},
                          epochs=p["epochs"], image_size=p["image_size"], batch_size=p["batch"], lr=3e-3,
                          loss="ce+dice", loader="gpu", val_every=max(1, p["epochs"] // 5),
                          save_freq=p["epochs"], max_samples=p["max_samples"], max_steps=p["max_steps"],
                          num_workers=num_workers, seed=seed, out=str(runs_dir(plan_label) / "pets_unet"))
    weak = replace(trained, epochs=1, val_every=1, save_freq=1, out=str(runs_dir(plan_label) / "pets_unet_1_epoch"))
    return {"pets unet": trained, "pets unet, 1 epoch": weak}


def _same_run(a: TrainConfig, b: TrainConfig) -> bool:
    """Equal in everything that shapes the weights (how often files are written or bars move does not, nor
    the path the folder was reached by: a worktree's ``data/runs`` may be a link to another's)."""
    def key(cfg: TrainConfig) -> TrainConfig:
        return replace(cfg, save_freq=1, log_freq=1, snapshot_every=None, tensorboard=False, keep_best_loss=False,
                       out="")

    return key(a) == key(b)


def train_or_reuse(cfg: TrainConfig, *, device=None, verbose: bool = True) -> dict:
    """``fit(cfg)`` (a line per validation when ``verbose``, no progress bars), unless ``cfg.out`` already holds a
    finished run of exactly this configuration on the same files (:func:`~seglib.batches.data_fingerprint`).

    Returns ``{"best", "history", "out", "wall_seconds", "reused"}``; ``out/best.pt`` holds the model.
    """
    out = Path(cfg.out)
    try:
        done = json.loads((out / "metrics.json").read_text())
        history = json.loads((out / "history.json").read_text())
        # options added to TrainConfig since that run take their defaults, which change nothing
        reusable = (_same_run(TrainConfig.from_dict(done["config"]), cfg) and (out / "best.pt").is_file()
                    and done.get("data") == data_fingerprint(cfg))  # and the same files: not the pets sample
    except (OSError, ValueError, KeyError, TypeError):  # ValueError: a ConfigError too (an option refused now)
        reusable = False
    if reusable:
        if verbose:
            print(f"reusing {display_path(out)} (same configuration; delete the folder to train again)")
        return {"best": done["best"], "history": history, "out": out, "wall_seconds": done["wall_seconds"],
                "reused": True}
    result = fit(cfg, device=device, verbose=verbose, progress=False)  # a line a validation; no bars in a notebook
    return {**{k: result[k] for k in ("best", "history", "out", "wall_seconds")}, "reused": False}


def _gpu_recipe(dataset: str) -> str | None:
    """The README's GPU-recipe result on ``dataset`` (the newest ``benchmarks/results/*_recipes.json``)."""
    for path in sorted(GPU_RESULTS.glob("*_recipes.json"), reverse=True):
        try:
            saved = json.loads(path.read_text())
            r, env = saved["recipes"][dataset], saved["env"]
            n, cfg = r["native_last"], r["config"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        person = f", person IoU {n['foreground_iou']:.3f}" if n.get("foreground_iou") is not None else ""
        return (f"The GPU recipe (31M UNet, {cfg['image_size']} px, {r['wall_seconds']:.0f} s on one "
                f"{env['device']}) reaches mIoU {n['miou']:.3f}{person} on the same split (last epoch's weights)")
    return None


def how_good(plan_label: str, dataset: str) -> str:
    """One line to print beside a score: which plan made it and what a proper run reaches on ``dataset``."""
    made = {"smoke": "the smoke plan: a few steps on tiny images, to test the code; the scores mean nothing",
            "cpu": "the CPU plan: narrow models on small images, a few minutes each on two CPU cores",
            "gpu": "the notebooks' GPU plan: a minute or less per model on one GPU, one seed, untuned"}[plan_label]
    known = "; ".join(line for line in (_gpu_recipe(dataset), PUBLISHED.get(dataset)) if line)
    return f"How good is this: {made}. " + (known[0].upper() + known[1:] + "." if known else
                                             "No proper run of this dataset is measured yet.")
