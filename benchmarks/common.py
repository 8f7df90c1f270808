"""What every benchmark shares: arguments, models, timing, FLOP counts, ceilings and the report."""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from seglib.models import create_model
from seglib.train_config import TrainConfig
from seglib.utils import environment, get_device

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"

MODELS = ("unet", "unet-big", "hourglass", "deeplabv3plus")  # "<name>-big" means big=True


# ----------------------------------------------------------------------------- arguments


def parser(description: str, steps_help: str, datasets: str | None = None) -> argparse.ArgumentParser:
    """The options every script takes; defaults left as None are filled in by :func:`resolve`.

    ``--dataset`` takes one name, or several where ``datasets`` is ``"+"``.
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true",
                   help="tiny run for CPU: synthetic data, 64 px, base_channels=8 models, a few steps")
    p.add_argument("--dataset", nargs=datasets, help="dataset name (found through SEGLIB_DATA_DIR)")
    p.add_argument("--models", nargs="+", help=f"models among {', '.join(MODELS)}")
    p.add_argument("--sizes", nargs="+", type=int, help="square image sizes in pixels")
    p.add_argument("--steps", type=int, help=steps_help)
    p.add_argument("--json", type=Path, help="where to write the results (default benchmarks/results/<script>.json)")
    p.add_argument("--device", help="cuda, cpu, cuda:1, ... (default: cuda when there is one)")
    return p


def resolve(args: argparse.Namespace, full: dict, smoke: dict) -> argparse.Namespace:
    """Fill every option left unset from the smoke or the full defaults; ``args.device`` becomes a device."""
    for key, value in (smoke if args.smoke else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.device = torch.device(args.device) if args.device else get_device()
    return args


def model_spec(name: str, smoke: bool) -> tuple[str, dict]:
    """``(create_model name, options)`` of ``name`` from :data:`MODELS` (``-big`` adds ``big=True``);
    under ``smoke``, UNet and Hourglass take the model options of ``TrainConfig.smoke()``."""
    base = name.removesuffix("-big")
    if smoke:
        return base, dict(TrainConfig.smoke().model_options) if base in ("unet", "hourglass") else {}
    return base, {"big": True} if name != base else {}


def build_model(name: str, num_classes: int, smoke: bool) -> nn.Module:
    """Model ``name`` from :data:`MODELS`, on the CPU (see :func:`model_spec`)."""
    base, options = model_spec(name, smoke)
    return create_model(base, num_classes, **options)


# ----------------------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_region(fn: Callable[[], object], device: torch.device, *, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds taken by each of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones.

    The device is synchronized before and after every timed call, so each time covers all the work
    the call queued (and any wait for data), not just the host's share.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def epochs(batches: Iterable) -> Iterator:
    """The batches of ``batches`` for ever, epoch after epoch (calling ``set_epoch`` where it exists)."""
    for epoch in itertools.count():
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(epoch)
        yield from batches


@contextlib.contextmanager
def backend_flags(*, benchmark: bool, fp32_precision: str | None = None):
    """cuDNN autotuning on or off and, unless None, ``"ieee"`` or ``"tf32"`` fp32 convs and matmuls.

    Uses the fp32_precision flags (torch >= 2.9; mixing them with the older ``allow_tf32`` raises).
    Everything is restored on exit.
    """
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = torch.backends.cudnn.benchmark, conv.fp32_precision, matmul.fp32_precision
    torch.backends.cudnn.benchmark = benchmark
    if fp32_precision is not None:
        conv.fp32_precision = matmul.fp32_precision = fp32_precision
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, conv.fp32_precision, matmul.fp32_precision = saved


# ----------------------------------------------------------------------------- FLOPs and ceilings


def flops_per_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], loss_fn) -> int:
    """FLOPs of one forward + backward of ``model`` on ``batch`` (``FlopCounterMode``: convs and matmuls).

    Counted on a meta-device copy, so it costs neither time nor memory and leaves ``model`` untouched.
    The backward counts what autograd computes: no input gradient for a first layer whose input needs
    none. The optimizer step and elementwise ops are not counted.
    """
    model = copy.deepcopy(model).to("meta")
    x, y = (t.to("meta") for t in batch)
    with FlopCounterMode(display=False) as counter:
        loss_fn(model(x), y).backward()
    return counter.get_total_flops()


def matmul_ceiling(device: torch.device, dtype: torch.dtype | None = None) -> dict:
    """Achieved TFLOP/s of a square matmul on random data: bf16 8192² on CUDA, fp32 1024² on the CPU.

    Median of timed regions of 10 products each, after a warm-up region.
    """
    cuda = device.type == "cuda"
    dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
    n = 8192 if cuda else 1024
    g = torch.Generator(device).manual_seed(0)
    a, b = (torch.randn(n, n, device=device, dtype=dtype, generator=g) for _ in range(2))
    times = time_region(lambda: [a @ b for _ in range(10)], device, repeats=10 if cuda else 3)
    return {"dtype": str(dtype).removeprefix("torch."), "n": n, "tflops": 10 * 2 * n**3 / np.median(times) / 1e12}


# ----------------------------------------------------------------------------- report


def markdown_table(columns: list[tuple[str, str, str]], rows: list[dict]) -> str:
    """``columns`` are ``(key, title, format spec)``; a missing or None value prints as ``—``."""
    def cell(value, spec):
        return "—" if value is None else format(value, spec)

    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |",
             "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(key), spec) for key, _, spec in columns) + " |" for row in rows]
    return "\n".join(lines)


def report(name: str, args: argparse.Namespace, columns: list[tuple[str, str, str]], rows: list[dict],
           notes: Iterable[str] = (), **extra) -> dict:
    """Print the environment, ``notes`` and a Markdown table of ``rows``; write it all as JSON.

    The JSON goes to ``args.json`` (default ``benchmarks/results/<name>.json``) and holds ``script``,
    ``env``, ``args``, the ``extra`` entries and ``rows``, with every measured number unrounded.
    """
    env = environment(args.device)
    print(f"\n## {name}: {env['device']} | torch {env['torch']} | CUDA {env['cuda']} | cuDNN {env['cudnn']} "
          f"| {env['date']}")
    for line in notes:
        print(line)
    print(markdown_table(columns, rows))
    result = {"script": name, "env": env, "args": {k: v for k, v in vars(args).items() if k != "json"},
              **extra, "rows": rows}
    path = args.json or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {path}")
    return result
