"""Inference latency: one image (batch 1) through the model in eval mode, fp32 and bf16.

Precisions: ``fp32`` (TF32 off, contiguous), ``tf32`` (TF32 convs and matmuls; on request, CUDA
only: skipped on the CPU) and ``bf16`` (autocast and channels_last). The timing is
``seglib.inference.measure_latency`` (what ``python -m seglib latency`` prints): each call is timed
from the host, synchronized before and after, so a time includes the launches: it is the latency a
caller sees. The input is random (never zeros), as the time does not depend on the values.

    python benchmarks/latency.py            # full set (GPU), 512 px
    python benchmarks/latency.py --smoke    # tiny, on the CPU, in seconds
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

if not __package__:  # run as python benchmarks/<script>.py: the repository root holds the benchmarks package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import MODELS, backend_flags, build_model, parser, report, resolve
from seglib.data import load_dataset
from seglib.inference import measure_latency

PRECISIONS = ("fp32", "tf32", "bf16")
FULL = dict(dataset="pennfudan", models=list(MODELS), sizes=[512], steps=100, warmup=20, precisions=["fp32", "bf16"])
SMOKE = dict(dataset="synthetic", models=["unet", "hourglass"], sizes=[64], steps=5, warmup=2,
             precisions=["fp32", "bf16"])


def latency(name: str, num_classes: int, size: int, precision: str, args) -> dict:
    """Median, p90 and minimum milliseconds of one forward pass in ``precision``."""
    torch.manual_seed(0)
    model = build_model(name, num_classes, args.smoke)
    with backend_flags(benchmark=True, fp32_precision={"fp32": "ieee", "tf32": "tf32"}.get(precision)):
        r = measure_latency(model, size, device=args.device, amp="bf16" if precision == "bf16" else "off",
                            warmup=args.warmup, iters=args.steps, channels_last=precision == "bf16")
    return {"median_ms": r["ms_median"], "p90_ms": r["ms_p90"], "min_ms": r["ms_min"]}


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0], "timed forward passes (after --warmup untimed ones)")
    p.add_argument("--warmup", type=int, help="untimed forward passes first")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS)
    args = resolve(p.parse_args(argv), FULL, SMOKE)
    num_classes = load_dataset(args.dataset, "val", max_samples=1).num_classes
    rows = []
    for size in args.sizes:
        for name in args.models:
            for precision in args.precisions:
                row = {"model": name, "size": size, "batch": 1, "precision": precision}
                if precision == "tf32" and args.device.type != "cuda":
                    row.update(median_ms=None, p90_ms=None, min_ms=None, skipped=f"{precision} needs CUDA")
                else:
                    row.update(latency(name, num_classes, size, precision, args))
                rows.append(row)
    columns = [("model", "model", ""), ("size", "size", "d"), ("precision", "precision", ""),
               ("median_ms", "median ms", ".2f"), ("p90_ms", "p90 ms", ".2f"), ("min_ms", "min ms", ".2f"),
               ("skipped", "note", "")]
    return report("latency", args, columns, rows)


if __name__ == "__main__":
    main()
