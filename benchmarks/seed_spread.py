"""How far one seed's model comparison can be trusted: notebooks 06-07's runs retrained with several seeds.

Each run of ``seglib.recipes.comparison_configs`` is trained with seeds 0..N-1 on the plan of this machine
(``gpu``, ``cpu`` or, with ``--smoke``, ``smoke``). Seed 0 is the notebooks' own run, reused where it is
already trained (``train_or_reuse``); seed k trains beside it, in ``<run>_seed<k>``. Every run is scored as
notebook 07 scores it: the validation split, every image at its own resolution, void excluded. The table
gives each run's mean over the seeds, the spread (sample standard deviation) and every seed's mIoU: a gap
between two models that is not well beyond their spreads is noise.

    python -m benchmarks.seed_spread                                      # the three person models, 3 seeds
    python -m benchmarks.seed_spread --runs "camvid unet" "camvid deeplabv3+" --seeds 5
    python -m benchmarks.seed_spread --smoke                              # tiny, on the CPU
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import replace
from pathlib import Path

if not __package__:  # run as python benchmarks/<script>.py: the repository root holds the benchmarks package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import parser, report, resolve
from seglib.data import load_dataset, person_dataset
from seglib.evaluation import evaluate_dataset
from seglib.inference import Predictor
from seglib.recipes import comparison_configs, plan_name, train_or_reuse
from seglib.settings import settings_from_env

PERSON_RUNS = ["person hourglass", "person unet", "person wide unet"]
SCORES = ("miou", "foreground_iou", "boundary_miou")
COLUMNS = [("run", "run", ""), ("dataset", "data", ""), ("seeds", "seeds", "d"),
           ("miou", "mIoU", ".4f"), ("miou_std", "± std", ".4f"), ("miou_min", "min", ".4f"),
           ("miou_max", "max", ".4f"), ("foreground_iou", "fg IoU", ".4f"), ("boundary_miou", "boundary mIoU", ".4f"),
           ("boundary_miou_std", "± std", ".4f"), ("train_s", "train s (mean)", ".0f")]


def score(run: dict, val, device) -> dict:
    """Notebook 07's scores of ``run``'s best checkpoint on ``val``, the validation images it validated on."""
    scores = evaluate_dataset(Predictor.from_checkpoint(Path(run["out"]) / "best.pt", device=device), val,
                              progress=False)
    return {key: scores[key] for key in SCORES} | {"train_s": run["wall_seconds"], "reused": run["reused"]}


def spread(label: str, cfg, seeds: int, device) -> dict:
    """``label``'s row: its scores for seeds 0..``seeds``-1, their means, spreads and extremes."""
    val, runs = load_dataset(cfg.dataset, "val", max_samples=cfg.max_samples), []
    for seed in range(seeds):
        seeded = cfg if seed == 0 else replace(cfg, seed=cfg.seed + seed, out=f"{cfg.out}_seed{seed}")
        runs.append(score(train_or_reuse(seeded, device=device, verbose=False), val, device))
        print(f"{label} | seed {seeded.seed} | mIoU {runs[-1]['miou']:.4f}"
              f"{' (reused)' if runs[-1]['reused'] else ''}", flush=True)
    each = [r["miou"] for r in runs]
    row = {"run": label, "dataset": cfg.dataset, "seeds": seeds, "miou_each": each,
           "miou_min": min(each), "miou_max": max(each), "reused": [r["reused"] for r in runs]}
    for key in (*SCORES, "train_s"):
        values = [r[key] for r in runs]
        row[key] = None if None in values else statistics.mean(values)
        if key in ("miou", "boundary_miou"):
            row[f"{key}_std"] = statistics.stdev(values)  # seeds >= 2: main refuses fewer
    return row


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0], "not used by this script")
    p.add_argument("--runs", nargs="+", default=PERSON_RUNS, metavar="RUN",
                   help=f"comparison runs by their notebook label (default: {', '.join(PERSON_RUNS)})")
    p.add_argument("--seeds", type=int, default=3, help="seeds per run, at least 2 (default 3)")
    args = p.parse_args(argv)
    ignored = [f"--{name}" for name in ("models", "sizes", "steps") if getattr(args, name) is not None]
    if ignored:  # each run keeps the notebooks' model, size and epochs: a flag that changes nothing is refused
        p.error(f"{', '.join(ignored)}: the runs keep the notebooks' model, size and epochs; leave them out")
    if args.seeds < 2:
        p.error(f"--seeds {args.seeds}: a spread needs at least 2 seeds")
    args = resolve(args, dict(dataset=None), dict(dataset="synthetic"))
    settings = settings_from_env()
    plan = plan_name(args.smoke, args.device)
    person = args.dataset or person_dataset().name
    configs = comparison_configs(plan, person, seed=settings.seed, num_workers=settings.num_workers)
    unknown = [label for label in args.runs if label not in configs]
    if unknown:
        p.error(f"unknown runs {unknown}; choose from {', '.join(configs)}")
    rows = [spread(label, configs[label], args.seeds, args.device) for label in args.runs]
    return report("seed_spread", args, COLUMNS, rows, plan=plan,
                  notes=[f"plan {plan} (seglib.recipes.PLANS); seeds {settings.seed}.."
                         f"{settings.seed + args.seeds - 1}, the first the notebooks' own runs"])


if __name__ == "__main__":
    main()
