"""What each training lever buys: one base recipe per dataset, then one change at a time.

Every variant is trained with ``seglib.engine.fit`` from the same seed and scored twice: fit's own
validation mIoU (at the training size) and ``seglib.evaluation`` at each image's own resolution
(the number to report). The table gives each lever's change in native mIoU against the base, its
wall time and training speed (with ``--seeds N``, means over N seeds and the spread: a change
smaller than the spread is noise), so a recipe is assembled from levers that paid for themselves.
Multi-scale training is not a lever here: the random resized crop (``crop_scale``) already shows
objects at scales over a 2× range of area, and batches of varying size would defeat
``cudnn.benchmark`` and ``torch.compile``.

    python benchmarks/levers.py --dataset pennfudan                 # the base and every lever (GPU)
    python benchmarks/levers.py --dataset camvid --levers ce+dice ema
    python benchmarks/levers.py --smoke                             # tiny, on the CPU
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

if not __package__:  # run as python benchmarks/<script>.py: the repository root holds the benchmarks package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import parser, report, resolve
from seglib.data import load_dataset
from seglib.engine import fit
from seglib.train_config import TrainConfig
from seglib.evaluation import evaluate_dataset
from seglib.inference import Predictor

# base recipes: the plain recipe of the issue (GPU-resident data, crop + flip + brightness/contrast,
# AdamW with cosine decay, bf16, cross-entropy), sized for about a minute each on an H100
BASES = {
    "pennfudan": TrainConfig(dataset="pennfudan", model="unet", image_size=320, batch_size=16, epochs=100, lr=2e-3),
    "tiktok": TrainConfig(dataset="tiktok", model="unet", image_size=128, batch_size=32, epochs=40, lr=2e-3),
    "camvid": TrainConfig(dataset="camvid", model="unet", image_size=352, batch_size=12, epochs=100, lr=2e-3),
    "msrc": TrainConfig(dataset="msrc", model="unet", image_size=256, batch_size=16, epochs=200, lr=2e-3),
    "synthetic": TrainConfig.smoke(image_size=48, batch_size=8, epochs=3, lr=5e-3, max_steps=3, max_samples=24),
}


def levers(base: TrainConfig) -> dict[str, dict]:
    """One change each, relative to ``base``."""
    options = dict(base.model_options)
    return {
        "ce+dice": {"loss": "ce+dice"},
        "focal": {"loss": "focal"},
        "onecycle": {"schedule": "onecycle"},
        "lr x2": {"lr": base.lr * 2},
        "lr /2": {"lr": base.lr / 2},
        "ema": {"ema_decay": 0.999},
        "grad clip 1": {"grad_clip": 1.0},
        "crop 0.25": {"crop_scale": 0.25},
        "crop 0.8": {"crop_scale": 0.8},
        "rotate 10": {"rotate": 10.0},
        "jitter 0.4": {"jitter": 0.4},
        "blur 0.2": {"blur": 0.2},
        "epochs x2": {"epochs": base.epochs * 2},
        "size x1.5": {"image_size": int(round(base.image_size * 1.5 / 32) * 32)},
        "big unet": {"model_options": {**options, "big": True}},
        "deeplabv3+ r34": {"model": "deeplabv3plus", "model_options": {"backbone": "resnet34"}},
    }


FULL = dict(dataset="pennfudan", models=None, sizes=None, steps=None)
SMOKE = dict(dataset="synthetic", models=None, sizes=None, steps=None)
COLUMNS = [("lever", "lever", ""), ("native_miou", "mIoU (native)", ".4f"), ("native_std", "± std", ".4f"),
           ("delta", "Δ vs base", "+.4f"),
           ("val_miou", "mIoU (train size)", ".4f"), ("boundary_miou", "boundary mIoU", ".4f"),
           ("wall_s", "wall s", ".1f"), ("images_per_s", "train img/s", ".0f"), ("error", "error", "")]


def run_once(name: str, cfg: TrainConfig, device, out: Path) -> dict:
    """Train ``cfg`` into ``out/name`` and score its best checkpoint at native resolution."""
    cfg = replace(cfg, out=str(out / f"{name.replace(' ', '_').replace('/', 'div')}_seed{cfg.seed}"),
                  save_freq=cfg.epochs)  # only best.pt is used: last.pt once, at the end
    result = fit(cfg, device=device, verbose=False)
    val = load_dataset(cfg.dataset, "val", max_samples=cfg.max_samples)
    native = evaluate_dataset(Predictor.from_checkpoint(Path(cfg.out) / "best.pt", device=device), val,
                              progress=False)
    speeds = [row["images_per_s"] for row in result["history"][1:]] or [result["history"][0]["images_per_s"]]
    return {"native_miou": native["miou"], "val_miou": result["best"]["val_miou"],
            "boundary_miou": native["boundary_miou"], "wall_s": result["wall_seconds"],
            "images_per_s": statistics.median(speeds)}


def run_variant(name: str, cfg: TrainConfig, device, out: Path, seeds: int) -> dict:
    """Mean of :func:`run_once` over ``seeds`` seeds, with the spread of the native mIoU."""
    runs = [run_once(name, replace(cfg, seed=seed), device, out) for seed in range(seeds)]
    row = {"lever": name, "epochs": cfg.epochs, "image_size": cfg.image_size, "seeds": seeds,
           **{key: statistics.mean(r[key] for r in runs) for key in runs[0]},
           "native_miou_each": [r["native_miou"] for r in runs]}
    row["native_std"] = statistics.stdev(row["native_miou_each"]) if seeds > 1 else None
    return row


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0], "not used by this script")
    p.add_argument("--levers", nargs="*", help="levers to try (default: all); the base always runs")
    p.add_argument("--out", type=Path, help="where the runs go (default: a temporary folder)")
    p.add_argument("--seeds", type=int, default=1, help="train each variant with seeds 0..N-1; mean and spread")
    args = p.parse_args(argv)
    ignored = [f"--{name}" for name in ("models", "sizes", "steps") if getattr(args, name) is not None]
    if ignored:  # each lever sets its own: a flag that would change nothing is refused, not ignored
        p.error(f"{', '.join(ignored)}: the levers set the model, size and steps of each run; leave them out")
    args = resolve(args, FULL, SMOKE)
    base = BASES[args.dataset]
    if args.device.type != "cuda":
        base = replace(base, num_workers=0)
    chosen = levers(base)
    names = args.levers if args.levers is not None else list(chosen)
    unknown = sorted(set(names) - set(chosen))
    if unknown:
        raise SystemExit(f"unknown levers {unknown}; choose from {', '.join(chosen)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        for name in ["base", *names]:
            try:
                rows.append(run_variant(name, replace(base, **chosen.get(name, {})), args.device, out, args.seeds))
            except Exception as exc:  # one failing lever (out of memory, say) costs one row, not the sweep
                if name == "base":
                    raise
                rows.append({"lever": name, "error": f"{type(exc).__name__}: {exc}"[:200]})
            row = rows[-1]  # one line per variant as it ends, so a run cut short still shows what it measured
            print(f"{name} | " + (row["error"] if "error" in row else
                                  f"native_miou {row['native_miou']:.4g} | wall_s {row['wall_s']:.4g}"), flush=True)
    for row in rows[1:]:
        if "native_miou" in row:
            row["delta"] = row["native_miou"] - rows[0]["native_miou"]
    return report("levers", args, COLUMNS, rows, notes=[f"base: {base}"])


if __name__ == "__main__":
    main()
