"""The README's GPU tables and the time-to-quality figure, from what scripts/gpu_run.py returned.

    python scripts/gpu_report.py benchmarks/results/2026-11-28_H200     # prints Markdown, writes the figure

Reads ``<prefix>_recipes.json`` and ``<prefix>_speed.json``; writes ``figures/gpu_time_to_quality.png``
(validation mIoU at training size against training seconds, one line per dataset, targets marked).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TITLES = {"pennfudan": "Penn-Fudan", "tiktok": "TikTok person", "camvid": "CamVid-11", "msrc": "MSRC-v2"}


def fmt(value, spec=".3f") -> str:
    return "–" if value is None else format(value, spec)


def recipes_table(recipes: dict) -> str:
    lines = ["| data (val images) | input | mIoU | person IoU | boundary mIoU | mIoU, flip TTA | target | "
             "s to best | epochs | train img/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in recipes.items():
        if "native" not in r:
            lines.append(f"| {TITLES.get(name, name)} | {r.get('error', 'not run')} |" + " |" * 8)
            continue
        n, cfg, target = r["native"], r["config"], r.get("target")
        reached = target and (n[target["metric"]] or 0) >= target["value"] and r["seconds_to_best"] <= target["seconds"]
        goal = "–" if not target else (f"{'person IoU' if target['metric'] == 'foreground_iou' else 'mIoU'} "
                                       f"≥ {target['value']} in {target['seconds'] // 60} min: "
                                       f"{'**met**' if reached else 'not met'}")
        lines.append(f"| {TITLES.get(name, name)} ({n['images']}) | {cfg['image_size']}², batch {cfg['batch_size']} | "
                     f"{fmt(n['miou'])} | {fmt(n['foreground_iou'])} | {fmt(n['boundary_miou'])} | "
                     f"{fmt(r['native_flip']['miou'])} | {goal} | {r['seconds_to_best']:.0f} of "
                     f"{r['wall_seconds']:.0f} | {r['epochs']} | {r['images_per_s']:.0f} |")
    return "\n".join(lines)


def speed_table(speed: dict) -> str:
    lines = ["| regime | img/s model-only | img/s end-to-end | end-to-end ÷ model-only | TFLOP/s end-to-end | "
             "share of the bf16 ceiling | peak GiB | speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    for row in speed["rows"]:
        if row.get("error"):  # CUDA out of memory: no numbers
            lines.append(f"| {row['regime']} | {row['error']} |" + " |" * 6)
            continue
        lines.append(f"| {row['regime']} | {row['model_img_s']:.0f} | {row['e2e_img_s']:.0f} | "
                     f"{row['e2e_over_model']:.2f} | {row['tflops']:.0f} | {row['pct_ceiling']:.1%} | "
                     f"{row['peak_gib']:.1f} | {fmt(row['speedup'], '.1f')}× |")
    return "\n".join(lines)


def plot_curves(recipes: dict, device: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in recipes.items():
        if "curve" not in r:
            continue
        line, = ax.plot([p["seconds"] for p in r["curve"]], [p["val_miou_train_size"] for p in r["curve"]],
                        marker=".", label=TITLES.get(name, name))
        target = r.get("target")
        if target and target["metric"] == "miou":
            ax.axhline(target["value"], color=line.get_color(), linestyle=":", linewidth=1)
    ax.set(xlabel="training seconds (validation included)", ylabel="val mIoU (training size)",
           title=f"Time to quality, from scratch, one {device}", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=100, bbox_inches="tight")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix", type=Path, help="e.g. benchmarks/results/2026-11-28_H200")
    parser.add_argument("--figure", type=Path, default=REPO / "figures" / "gpu_time_to_quality.png")
    args = parser.parse_args(argv)
    recipes = json.loads(Path(f"{args.prefix}_recipes.json").read_text())
    speed = json.loads(Path(f"{args.prefix}_speed.json").read_text())
    env = recipes["env"]
    print(f"Recipes ({env['device']}, torch {env['torch']}, {env['date'][:10]}):\n")
    print(recipes_table(recipes["recipes"]))
    print(f"\nSpeed (classic UNet, 256², batch 32; bf16 matmul ceiling {speed['ceiling']['tflops']:.0f} TFLOP/s "
          "in the same run):\n")
    print(speed_table(speed))
    plot_curves(recipes["recipes"], env["device"], args.figure)
    print(f"\nwrote {args.figure}")


if __name__ == "__main__":
    main()
