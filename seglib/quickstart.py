"""A first result with nothing downloaded: ``python -m seglib quickstart``.

Trains a small UNet on the training photos of the Oxford-IIIT Pet sample shipped with seglib (pet vs
background), scores the final weights on the sample's validation photos at their own resolution, and draws
image | truth | prediction | overlay for the validation photo of median pet IoU, the scores in the title.

>>> result = run_quickstart("runs/quickstart")   # a few minutes on two CPU cores
>>> result["report"]["foreground_iou"]           # pet IoU on the validation split
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from seglib.data import get_spec, load_dataset, shipped_sample
from seglib.engine import fit
from seglib.evaluation import evaluate_dataset
from seglib.inference import Predictor
from seglib.metrics import ConfusionMatrix
from seglib.train_config import TrainConfig
from seglib.utils import write_atomic

ATTRIBUTION = get_spec("pets").attribution  # notebooks take it from SPECS["pets"] (a lighter import)
FIGURE, REPORT = "quickstart_pets.png", "evaluation.json"

# Sized for two CPU cores (about 4.5 CPU-minutes): 40 epochs of the 48 training photos at 128 px, 12 steps each.
# Measured on the sample's val split: pet IoU 0.67 here, 0.66 at 96 px and batch 8 (half the time), 0.64 at 96 px
# for 70 epochs of batch 4
QUICKSTART = TrainConfig(dataset="pets", model="unet", model_options={"base_channels": 16}, epochs=40, image_size=128,
                         batch_size=4, lr=3e-3, loss="ce+dice", loader="gpu", num_workers=0, val_every=10,
                         out="runs/quickstart")

__all__ = ["ATTRIBUTION", "QUICKSTART", "median_photo", "pet_iou", "quickstart_config", "quickstart_figure",
           "run_quickstart"]


def quickstart_config(out: str | Path, *, smoke: bool = False) -> TrainConfig:
    """:data:`QUICKSTART` on the shipped sample, writing into ``out``; ``smoke``: the tests' tiny version."""
    cfg = replace(QUICKSTART, root=str(shipped_sample("pets")), out=str(out))
    if smoke:
        tiny = TrainConfig.smoke()
        cfg = replace(cfg, **{k: getattr(tiny, k) for k in ("model_options", "image_size", "batch_size", "max_steps",
                                                           "max_samples")}, epochs=1, val_every=1)
    return cfg


def pet_iou(pred: np.ndarray, target: np.ndarray) -> float:
    """IoU of the pet class (1) in one image, ignored pixels excluded; NaN when neither holds a pet."""
    cm = ConfusionMatrix(2)
    cm.update(torch.as_tensor(pred), torch.as_tensor(target))
    return float(cm.compute()["iou"][1])


def median_photo(predictor: Predictor, ds) -> tuple[int, float, np.ndarray]:
    """``(index, pet IoU, pet probability HxW)`` of the middle photo of ``ds`` by pet IoU (the lower of the
    two middle ones for an even count; photos where neither truth nor prediction holds a pet are left out)."""
    scored = []
    for i in range(len(ds)):
        image, labels = ds.load(i)
        p = predictor.probabilities([image])[0][1].cpu().numpy()
        scored.append((pet_iou(p > 0.5, labels), i, p))
    scored = sorted((s for s in scored if not np.isnan(s[0])), key=lambda s: s[0])
    iou, i, p = scored[(len(scored) - 1) // 2]
    return i, iou, p


def quickstart_figure(predictor: Predictor, ds, report: dict, headline: str):
    """image | truth | prediction | overlay of the median photo, ``headline`` and its score above, the credit below."""
    from seglib.viz import four_panel

    i, iou, p = median_photo(predictor, ds)
    image, labels = ds.load(i)
    fig = four_panel(image, labels, p, palette=ds.palette, last="overlay",
                     titles=(f"{ds.ids[i]} (median photo)", "truth (white: border, ignored)",
                             f"prediction: pet IoU {iou:.2f}", "prediction over the image"))
    fig.suptitle(f"{headline}\n{ds.split} split, {len(ds)} photos at their own resolution: "
                 f"pet IoU {report['foreground_iou']:.3f}, mIoU {report['miou']:.3f}", fontsize=10)
    fig.supxlabel(ATTRIBUTION + " (resized)", fontsize=7)
    return fig


def run_quickstart(out: str | Path, *, smoke: bool = False, device=None, progress: bool = True) -> dict:
    """Train, evaluate and draw (see the module docstring); writes the run, evaluation.json and the figure
    into ``out``. Returns ``{"report", "figure", "seconds"}``."""
    cfg = quickstart_config(out, smoke=smoke)
    run = fit(cfg, device=device, progress=progress)
    predictor = Predictor.from_checkpoint(Path(cfg.out) / "last.pt", device=device)  # final weights, not picked on val
    val = load_dataset(cfg.dataset, "val", cfg.root, max_samples=cfg.max_samples)
    report = evaluate_dataset(predictor, val, progress=progress)
    write_atomic(run["out"] / REPORT, lambda tmp: tmp.write_text(json.dumps(report, indent=1)))
    train = load_dataset(cfg.dataset, "train", cfg.root, max_samples=cfg.max_samples)
    headline = (f"UNet (base width {cfg.model_options['base_channels']}, {cfg.image_size} px) trained from scratch "
                f"for {run['wall_seconds']:.0f} s on the {len(train)} training photos of the pets sample shipped "
                "with seglib")
    import matplotlib.pyplot as plt

    fig = quickstart_figure(predictor, val, report, headline)
    figure = run["out"] / FIGURE
    write_atomic(figure, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)  # written: a notebook calling run_quickstart does not show it a second time
    return {"report": report, "figure": figure, "seconds": run["wall_seconds"]}
