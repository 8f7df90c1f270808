"""Training throughput: the plain tutorial loop against the seglib fast path, in one process, on real data.

For each model and size, three regimes (the third only for models named in ``--compile``):

* ``tutorial``: a DataLoader whose workers decode the PNG/JPG files (``ds.load(i)``) and run
  albumentations every epoch; fp32 (TF32 off), eager, contiguous tensors, ``torch.optim.Adam``,
  ``loss.item()`` every step, PyTorch's default ``cudnn.benchmark=False``.
* ``seglib``: ``seglib.engine.train_one_epoch`` on GPU-resident uint8 batches from the cache,
  augmented by ``GpuAugment``; bf16 autocast, channels_last, fused AdamW (``build_optimizer``),
  ``cudnn.benchmark=True``, as ``seglib.engine.fit`` runs on CUDA.
* ``seglib+compile``: the same with ``torch.compile(model)``.

Each regime is timed twice: *model-only* (the same step on one fixed batch already on the device)
and *end-to-end* (with its real data path). Their ratio says how much the data path costs.

    python benchmarks/train_throughput.py            # full set (GPU, Penn-Fudan)
    python benchmarks/train_throughput.py --smoke    # tiny, on the CPU, in seconds
"""

from __future__ import annotations

import itertools
import statistics
import sys
from functools import partial
from pathlib import Path

import torch
from torch import nn

if not __package__:  # run as python benchmarks/<script>.py: the repository root holds the benchmarks package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (MODELS, backend_flags, build_model, epochs, flops_per_step, matmul_ceiling, parser,
                               report, resolve, time_region)
from seglib.cache import load_or_build_cache
from seglib.data import load_dataset
from seglib.batches import ResidentBatches
from seglib.engine import train_one_epoch
from seglib.optim import build_optimizer
from seglib.train_config import TrainConfig
from seglib.gpu_augment import GpuAugment
from seglib.losses import build_loss
from seglib.transforms import make_loader, train_transform

FULL = dict(dataset="pennfudan", models=list(MODELS), sizes=[256, 512], steps=10, repeats=3, batch_size=None,
            workers=4, compile=["unet-big"])
SMOKE = dict(dataset="synthetic", models=["unet", "hourglass"], sizes=[64], steps=3, repeats=3, batch_size=4,
             workers=0, compile=[])
BATCH = {256: 32, 512: 16}  # PERF.md's reference batch sizes; 16 for any other size

COLUMNS = [("model", "model", ""), ("size", "size", "d"), ("batch", "batch", "d"), ("regime", "regime", ""),
           ("model_img_s", "img/s model-only", ".1f"), ("e2e_img_s", "img/s end-to-end", ".1f"),
           ("e2e_over_model", "e2e ÷ model", ".2f"), ("tflops", "TFLOP/s e2e", ".3g"),
           ("pct_ceiling", "% of ceiling", ".1%"), ("speedup", "speed-up e2e", ".2f")]


class Take:
    """The next ``n`` batches of ``stream``, with a length (``train_one_epoch`` asks for one)."""

    def __init__(self, stream, n: int):
        self.stream, self.n = stream, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return itertools.islice(self.stream, self.n)


def tutorial_steps(model, loss_fn, optimizer, device, stream, steps: int) -> list[float]:
    """``steps`` iterations of the plain tutorial loop: to the device, fp32 step, Adam, ``.item()``."""
    model.train()
    losses = []
    for x, y in itertools.islice(stream, steps):
        x, y = x.to(device), y.to(device)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def seglib_steps(model, loss_fn, optimizer, device, stream, steps: int) -> float:
    """``steps`` iterations of ``seglib.engine.train_one_epoch`` (bf16 and channels_last on CUDA)."""
    cuda = device.type == "cuda"
    return train_one_epoch(model, Take(stream, steps), loss_fn, optimizer, device=device,
                           amp="bf16" if cuda else "off", channels_last=cuda, log_freq=sys.maxsize,
                           progress=False)


def measure(run_steps, sources: dict, batch: int, args) -> dict:
    """``<key>_img_s`` and ``<key>_ms_step`` of ``run_steps`` on each stream of ``sources``.

    Each is the median of ``args.repeats`` timed windows of ``args.steps`` steps after one warm-up
    window; a window's time includes every wait for data inside it.
    """
    out = {}
    for key, source in sources.items():
        times = time_region(lambda s=source: run_steps(s, args.steps), args.device, repeats=args.repeats)
        window = statistics.median(times)
        out[f"{key}_img_s"] = args.steps * batch / window
        out[f"{key}_ms_step"] = window * 1e3 / args.steps
    return out


def prepare(regime: str, name: str, data: dict, args):
    """``(step, stream, flags)`` for ``regime``: a fresh model (same seed) and its optimizer bound into
    ``step(stream, n)``, the regime's data stream, and its backend flags (a context manager)."""
    device, num_classes = args.device, data["spec"].num_classes
    torch.manual_seed(0)
    model = build_model(name, num_classes, args.smoke).to(device)
    if regime == "tutorial":
        step = partial(tutorial_steps, model, nn.CrossEntropyLoss(ignore_index=255),
                       torch.optim.Adam(model.parameters()), device)
        return step, epochs(data["loader"]), backend_flags(benchmark=False, fp32_precision="ieee")
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(TrainConfig(), model, device)
    if regime == "seglib+compile":
        model = torch.compile(model, dynamic=False)
    step = partial(seglib_steps, model, build_loss("ce", num_classes).to(device), optimizer, device)
    return step, epochs(data["resident"]), backend_flags(benchmark=True)


def run_regime(regime: str, name: str, data: dict, batch: int, args) -> dict:
    """Model-only and end-to-end speed of ``name`` under ``regime``."""
    step, stream, flags = prepare(regime, name, data, args)
    with flags:
        return measure(step, {"model": itertools.repeat(data["fixed"]), "e2e": stream}, batch, args)


def bench_model(name: str, size: int, batch: int, data: dict, args, ceiling: dict) -> list[dict]:
    """The rows of one model at one size: tutorial, seglib and (if asked) seglib+compile."""
    device, cuda = args.device, args.device.type == "cuda"
    model = build_model(name, data["spec"].num_classes, args.smoke)
    flops = flops_per_step(model, data["fixed"], nn.CrossEntropyLoss(ignore_index=255))
    params = sum(p.numel() for p in model.parameters())
    del model
    rows = []
    for regime in ["tutorial", "seglib"] + (["seglib+compile"] if name in args.compile else []):
        row = {"model": name, "size": size, "batch": batch, "regime": regime, "params": params,
               "flops_per_step": flops}
        rows.append(row)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        try:
            row.update(run_regime(regime, name, data, batch, args))
        except torch.cuda.OutOfMemoryError:
            row["error"] = "CUDA out of memory"
            continue
        row.update(e2e_over_model=row["e2e_img_s"] / row["model_img_s"],
                   tflops=flops * row["e2e_img_s"] / batch / 1e12,
                   tflops_model_only=flops * row["model_img_s"] / batch / 1e12,
                   peak_gib=torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None)
        row["pct_ceiling"] = row["tflops"] / ceiling["tflops"]
    base = rows[0].get("e2e_img_s")
    for row in rows:
        row["speedup"] = row["e2e_img_s"] / base if base and "e2e_img_s" in row else None
    return rows


def load_data(args, size: int, batch: int) -> dict:
    """The tutorial's DataLoader over the raw files and seglib's GPU-resident batches from the cache."""
    ds = load_dataset(args.dataset, "train")
    cache = load_or_build_cache(ds, size)
    resident = ResidentBatches(cache.images, cache.masks, batch, args.device, augment=GpuAugment(size), seed=0,
                               shuffle=True, drop_last=True)
    loader = make_loader(ds, train_transform(size, seed=0), batch_size=batch, shuffle=True,
                         num_workers=args.workers, seed=0, drop_last=True)
    fixed = next(iter(resident))  # one real augmented batch, already on the device: the model-only input
    return {"spec": ds.spec, "resident": resident, "loader": loader, "fixed": fixed}


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0], "timed steps per window")
    p.add_argument("--repeats", type=int, help="timed windows per measurement (the median is reported)")
    p.add_argument("--batch-size", type=int, help="default: 32 at 256 px, 16 otherwise")
    p.add_argument("--workers", type=int, help="DataLoader workers of the tutorial loop")
    p.add_argument("--compile", nargs="*", help="models also measured under torch.compile")
    args = resolve(p.parse_args(argv), FULL, SMOKE)
    ceiling = matmul_ceiling(args.device)
    rows = []
    for size in args.sizes:
        batch = args.batch_size or BATCH.get(size, 16)
        data = load_data(args, size, batch)
        for name in args.models:
            rows += bench_model(name, size, batch, data, args, ceiling)
        del data
    note = (f"{ceiling['dtype']} matmul ceiling ({ceiling['n']}³, same run): {ceiling['tflops']:.3g} TFLOP/s; "
            f"{args.dataset}, tutorial DataLoader workers: {args.workers}")
    return report("train_throughput", args, COLUMNS, rows, notes=[note], ceiling=ceiling)


if __name__ == "__main__":
    main()
