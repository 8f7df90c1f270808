"""The data path alone, against the training speed of the models it must feed.

Three ways to make augmented training batches on the device (random resized crop, flip,
brightness/contrast, normalize), each timed by draining batches and nothing else:

* ``png+albumentations``: ``WorkerBatches`` over the raw dataset: CPU workers decode every file
  (``ds.load(i)``) and run albumentations each epoch, as the tutorial loop does;
* ``cache+albumentations``: ``WorkerBatches`` over the uint8 cache (decoded once), as
  ``seglib.engine.fit`` does with ``loader="workers"``;
* ``gpu-resident``: ``ResidentBatches`` + ``GpuAugment`` on the cache, as ``fit`` does on CUDA.

Each ``feeds <model>`` column is the data path's img/s over that model's model-only training speed
(the seglib step of ``benchmarks.train_throughput``): at 1 or more the path keeps the model busy.

    python benchmarks/data_path.py            # full set (GPU, Penn-Fudan)
    python benchmarks/data_path.py --smoke    # tiny, on the CPU, in seconds
"""

from __future__ import annotations

import itertools
import statistics
import sys
from functools import partial
from pathlib import Path

if not __package__:  # run as python benchmarks/<script>.py: the repository root holds the benchmarks package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import epochs, parser, report, resolve, time_region
from benchmarks.train_throughput import BATCH, measure, prepare
from seglib.cache import load_or_build_cache
from seglib.data import load_dataset
from seglib.batches import ResidentBatches, WorkerBatches
from seglib.gpu_augment import GpuAugment
from seglib.transforms import train_transform

FULL = dict(dataset="pennfudan", models=["unet", "unet-big", "deeplabv3plus"], sizes=[256], steps=10, repeats=5,
            batch_size=None, workers=[0, 4, 8])
SMOKE = dict(dataset="synthetic", models=["unet"], sizes=[64], steps=3, repeats=3, batch_size=4, workers=[0])


def drain(stream, steps: int) -> None:
    """Take ``steps`` batches from ``stream`` and drop them."""
    for _ in itertools.islice(stream, steps):
        pass


def paths(ds, cache, resident, size: int, batch: int, args):
    """``(path, workers, batches)`` for every data path and worker count measured."""
    for name, source in (("png+albumentations", ds), ("cache+albumentations", cache)):
        for workers in args.workers:
            yield name, workers, WorkerBatches(source, train_transform(size, seed=0), batch, args.device, seed=0,
                                               shuffle=True, drop_last=True, num_workers=workers)
    yield "gpu-resident", None, resident


def model_speed(name: str, data: dict, batch: int, args) -> float:
    """Model-only training img/s of ``name`` (the seglib step on one fixed batch on the device)."""
    step, _, flags = prepare("seglib", name, data, args)
    with flags:
        return measure(step, {"model": itertools.repeat(data["fixed"])}, batch, args)["model_img_s"]


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0], "batches per timed window")
    p.add_argument("--repeats", type=int, help="timed windows per measurement (the median is reported)")
    p.add_argument("--batch-size", type=int, help="default: 32 at 256 px, 16 otherwise")
    p.add_argument("--workers", nargs="+", type=int, help="DataLoader worker counts of the CPU paths")
    args = resolve(p.parse_args(argv), FULL, SMOKE)
    ds = load_dataset(args.dataset, "train")
    rows, speeds = [], {}
    for size in args.sizes:
        batch = args.batch_size or BATCH.get(size, 16)
        cache = load_or_build_cache(ds, size)
        resident = ResidentBatches(cache.images, cache.masks, batch, args.device, augment=GpuAugment(size),
                                   seed=0, shuffle=True, drop_last=True)
        data = {"spec": ds.spec, "resident": resident, "fixed": next(iter(resident))}
        speeds[size] = {name: model_speed(name, data, batch, args) for name in args.models}
        for path, workers, batches in paths(ds, cache, resident, size, batch, args):
            times = time_region(partial(drain, epochs(batches), args.steps), args.device, repeats=args.repeats)
            img_s = args.steps * batch / statistics.median(times)
            rows.append({"size": size, "batch": batch, "path": path, "workers": workers, "img_s": img_s,
                         **{f"feeds_{name}": img_s / speed for name, speed in speeds[size].items()}})
    columns = [("size", "size", "d"), ("batch", "batch", "d"), ("path", "data path", ""),
               ("workers", "workers", "d"), ("img_s", "img/s", ".1f")]
    columns += [(f"feeds_{name}", f"feeds {name}", ".2f") for name in args.models]
    notes = [f"{args.dataset}; feeds <model> = data img/s ÷ the model's model-only training img/s, which is:"]
    notes += [f"  {size} px: " + ", ".join(f"{name} {v:.1f}" for name, v in models.items())
              for size, models in speeds.items()]
    return report("data_path", args, columns, rows, notes=notes, model_img_s=speeds)


if __name__ == "__main__":
    main()
