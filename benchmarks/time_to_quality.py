"""Time to quality: wall seconds of training until the validation mIoU first reaches a target.

Runs ``seglib.engine.fit`` (GPU-resident data, bf16, channels_last, fused AdamW, cosine schedule,
validation after every epoch) and reads its history: the time to target is the sum of the epochs'
``seconds`` (training + validation, from the first step) up to the first epoch whose val mIoU
reaches the target. Never reached: ``null`` (not 0). One-time setup (building the caches, the model)
is not counted; fit's whole wall time, checkpoint writes included, is reported beside it.

mIoU is fit's: the val split at training resolution (square resize), one dataset-level confusion
matrix; not PERF.md's protocol of held-out images at native resolution.

    python benchmarks/time_to_quality.py            # Penn-Fudan to 0.90 and CamVid-11 to 0.60 (GPU)
    python benchmarks/time_to_quality.py --smoke    # tiny, on the CPU, in seconds
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

if not __package__:  # run as python benchmarks/<script>.py: the repository root holds the benchmarks package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import model_spec, parser, report, resolve
from seglib.engine import fit
from seglib.train_config import TrainConfig
from seglib.errors import SeglibError

# target and recipe per dataset (PERF.md's reference recipes, square instead of 352x480 for CamVid)
RECIPES = {"pennfudan": dict(target=0.90, size=384, batch_size=16, epochs=300),
           "camvid": dict(target=0.60, size=384, batch_size=12, epochs=200),
           "synthetic": dict(target=0.50, size=64, batch_size=4, epochs=2)}
OTHER = dict(target=None, size=256, batch_size=16, epochs=100)  # any other dataset needs --target
FULL = dict(dataset=["pennfudan", "camvid"], models=["unet"], sizes=None, epochs=None, batch_size=None, steps=None,
            max_samples=None)
SMOKE = dict(dataset=["synthetic"], models=["unet"], sizes=[64], epochs=2, batch_size=4, steps=3, max_samples=24)


def cumulative(history: list[dict]) -> list[tuple[int, float, float]]:
    """``(epoch, seconds since training began, val mIoU)`` for every row of fit's history."""
    elapsed, curve = 0.0, []
    for row in history:
        elapsed += row["seconds"]
        curve.append((row["epoch"], elapsed, row["val_miou"]))
    return curve


def first_crossing(curve: list[tuple[int, float, float]], target: float) -> tuple[int | None, float | None]:
    """``(epoch, seconds)`` of the first point of ``curve`` whose mIoU reaches ``target``, else ``(None, None)``."""
    return next(((epoch, seconds) for epoch, seconds, miou in curve if miou >= target), (None, None))


def recipe_for(dataset: str, args) -> dict:
    """Target, size, batch size and epochs for ``dataset``: the options given, else its recipe."""
    given = {"target": args.target, "batch_size": args.batch_size, "epochs": args.epochs}
    out = {**OTHER, **RECIPES.get(dataset, {}), **{k: v for k, v in given.items() if v is not None}}
    if out["target"] is None:
        raise SystemExit(f"no default target for {dataset!r}: pass --target")
    return out


def run(dataset: str, model: str, size: int, recipe: dict, args) -> dict:
    """Train ``model`` on ``dataset`` with fit and report when it first reached the target."""
    row = {"dataset": dataset, "model": model, "size": size, "batch": recipe["batch_size"], "target": recipe["target"]}
    base, options = model_spec(model, args.smoke)
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(dataset=dataset, model=base, model_options=options, epochs=recipe["epochs"],
                          image_size=size, batch_size=recipe["batch_size"], lr=args.lr, compile=args.compile,
                          loader="gpu", max_steps=args.steps, max_samples=args.max_samples,
                          save_freq=recipe["epochs"], log_freq=sys.maxsize, out=out)
        try:
            result = fit(cfg, device=args.device, verbose=False)
        except SeglibError as exc:  # a dataset that is not here, CUDA out of memory: say so in its row, go on
            return {**row, "error": str(exc)}
    history = result["history"]
    curve = cumulative(history)
    epoch, seconds = first_crossing(curve, recipe["target"])
    return {**row, "seconds_to_target": seconds, "epoch_reached": epoch, "epochs_run": len(history),
            "best_miou": max(h["val_miou"] for h in history), "train_seconds": curve[-1][1],
            "fit_wall_seconds": result["wall_seconds"],
            "img_s": statistics.median(h["images_per_s"] for h in history), "curve": curve}


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0], "cap on training steps per epoch (default: whole epochs)", datasets="+")
    p.add_argument("--target", type=float, help="val mIoU target (default per dataset: "
                   + ", ".join(f"{k} {v['target']}" for k, v in RECIPES.items()) + ")")
    p.add_argument("--epochs", type=int, help="epochs (the cosine schedule spans them all)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--compile", action="store_true", help="torch.compile the model (its compile time counts)")
    p.add_argument("--max-samples", type=int, help="cap on samples per split (smoke runs)")
    args = resolve(p.parse_args(argv), FULL, SMOKE)
    recipes = {dataset: recipe_for(dataset, args) for dataset in args.dataset}
    rows = [run(dataset, model, size, recipe, args) for dataset, recipe in recipes.items() for model in args.models
            for size in args.sizes or [recipe["size"]]]
    columns = [("dataset", "dataset", ""), ("model", "model", ""), ("size", "size", "d"), ("batch", "batch", "d"),
               ("target", "target mIoU", ".2f"), ("seconds_to_target", "s to target", ".1f"),
               ("epoch_reached", "epoch", "d"), ("best_miou", "best mIoU", ".3f"), ("epochs_run", "epochs", "d"),
               ("train_seconds", "train+val s", ".1f"), ("fit_wall_seconds", "fit wall s", ".1f"),
               ("img_s", "train img/s", ".0f"), ("error", "error", "")]
    return report("time_to_quality", args, columns, rows)


if __name__ == "__main__":
    main()
