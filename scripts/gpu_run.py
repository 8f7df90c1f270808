"""The GPU headline in one command: recipes, speed table, notebooks 06-08, each within its own time cap.

    python3 scripts/gpu_run.py                        # on the lent GPU machine, .gpu/ carried (scripts/gpu_pack.py)
    python3 scripts/gpu_run.py --stages c             # one stage
    python3 scripts/gpu_run.py --smoke --out /tmp/o   # the CPU rehearsal (what tests/test_gpu_run.py runs)

Stages, in the order they run (what matters most first), each a child process with a hard timeout,
each writing its results under ``--out`` (default ``$OUT``) the moment it ends, so a command cut
short still returns what it finished:

* **a, recipes**: the four headline datasets, trained from scratch by ``seglib.engine.fit``. A
  recipe is given *seconds*, not epochs: a short probe times its training step and its validation,
  then the epochs (and a validation every few of them, about 25 in all) are chosen to fill the
  time. The best checkpoint (by val mIoU at training size) is then scored on the val split at each
  image's own resolution (``seglib.evaluation``), void excluded: mIoU, person IoU, boundary mIoU,
  also with flip TTA and for the last epoch's weights. → ``recipes.json``
* **c, speed**: ``benchmarks.train_throughput``: the plain tutorial loop (fp32, eager, a DataLoader
  decoding PNGs) against seglib's path on the classic 31M UNet, 256², batch 32, with TFLOP/s and a
  bf16 matmul ceiling from the same run. → ``speed.json``
* **b, notebooks**: notebooks 06, 07 and 08 (``--notebooks``) top to bottom on the GPU plan (needs
  the ``notebooks`` wheels), as one archive with their figures. → ``notebooks.tgz``

``summary.json`` (the machine, the bundle's encoding, each stage's status) and ``log.txt`` come
back too: at most 5 files, well inside the tool's 8.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from seglib.train_config import TrainConfig  # noqa: E402
from seglib.utils import write_atomic  # noqa: E402  (after the path: the script runs from a bare copy)

BUNDLE = REPO / ".gpu"
SUFFIX = ".jpg"  # scripts/gpu_pack.py: a photo travels as <its name>.jpg
# stage c's cap in seconds; stage a's is the sum of its recipes' seconds + setup, and stage b, always the last,
# gets what is left
STAGE_C_SECONDS = {"full": 100, "smoke": 240}
SETUP_SECONDS = 30   # per recipe: start, caches, probe, native evaluation (typically 15-25 s)
VALIDATIONS = 25     # points on each recipe's time-to-quality curve

# From scratch, CE, AdamW 2e-3 with cosine decay, bf16, GPU-resident data: PERF.md's plain recipe,
# with the classic 31M UNet. ``seconds`` is the training time (validation included) each one gets.
RECIPES = {
    "pennfudan": dict(seconds=110, cfg=TrainConfig(dataset="pennfudan", model="unet", model_options={"big": True},
                                                   image_size=384, batch_size=16)),
    "tiktok": dict(seconds=70, cfg=TrainConfig(dataset="tiktok", model="unet", model_options={"big": True},
                                               image_size=128, batch_size=64)),
    "camvid": dict(seconds=140, cfg=TrainConfig(dataset="camvid", model="unet", model_options={"big": True},
                                                image_size=352, batch_size=12)),
    "msrc": dict(seconds=35, cfg=TrainConfig(dataset="msrc", model="unet", model_options={"big": True},
                                             image_size=256, batch_size=16)),
}
TARGETS = {"pennfudan": ("miou", 0.92, 180), "tiktok": ("foreground_iou", 0.93, 120), "camvid": ("miou", 0.65, 600)}
SMOKE_RECIPES = {
    "synthetic": dict(seconds=4, cfg=TrainConfig(dataset="synthetic", model="unet", image_size=32, batch_size=4,
                                                 model_options={"base_channels": 4, "depth": 2}, max_samples=12,
                                                 num_workers=0)),
}


# ----------------------------------------------------------------------------- the machine


def install_wheels(bundle: Path, site: Path) -> None:
    """Install the bundle's wheels into ``site`` (once) and put it on this process's and children's path."""
    wheels = sorted((bundle / "wheels").glob("*.whl"))
    if wheels and not site.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--target", str(site), *map(str, wheels)], check=True)
    if site.exists():
        sys.path.insert(0, str(site))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")])


def _decode(job: tuple[str, str]) -> None:
    from PIL import Image

    source, target = job
    with Image.open(source) as im:
        im.convert("RGB").save(target)


def restore_data(bundle: Path, dest: Path) -> dict:
    """Copy ``bundle/data`` to ``dest``, each ``<name>.jpg`` photo back as ``<name>`` (decoded to a lossless
    format, or copied when ``<name>`` is a JPEG itself);
    returns the bundle's manifest (encoding, datasets)."""
    import shutil

    manifest = json.loads((bundle / "bundle.json").read_text())
    jobs = []
    for path in sorted(p for p in (bundle / "data").rglob("*") if p.is_file()):
        rel = path.relative_to(bundle / "data").as_posix()
        target = dest / rel.removesuffix(SUFFIX) if rel.removesuffix(SUFFIX) in manifest["reencoded"] else dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.name == path.name or target.suffix.lower() in (".jpg", ".jpeg"):
            shutil.copy2(path, target)  # a JPEG photo stays the JPEG that travelled: no second encoding
        else:
            jobs.append((str(path), str(target)))
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:  # PIL decodes and zlib encodes without the GIL
        list(pool.map(_decode, jobs, chunksize=16))
    return manifest


# ----------------------------------------------------------------------------- stage a: one recipe


def probe(cfg: TrainConfig, device) -> dict:
    """Seconds per training epoch and per validation of ``cfg``, measured on a few real steps
    (after untimed ones that let cuDNN pick its kernels)."""
    import torch

    from seglib.batches import build_data
    from seglib.engine import evaluate, train_one_epoch
    from seglib.losses import build_loss
    from seglib.models import create_model
    from seglib.optim import build_optimizer

    torch.backends.cudnn.benchmark = True
    train, val, spec = build_data(cfg, device)
    model = create_model(cfg.model, spec.num_classes, **cfg.model_options).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg.loss, spec.num_classes).to(device)
    optimizer = build_optimizer(cfg, model, device)
    kw = dict(device=device, amp=cfg.amp, channels_last=cuda)

    def timed(fn):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    steps = min(len(train), 10)
    train_one_epoch(model, train, loss_fn, optimizer, max_steps=min(steps, 3), progress=False, **kw)
    step = timed(lambda: train_one_epoch(model, train, loss_fn, optimizer, max_steps=steps, progress=False,
                                         **kw)) / steps
    evaluate(model, val, loss_fn, max(2, spec.num_classes), **kw)
    validation = timed(lambda: evaluate(model, val, loss_fn, max(2, spec.num_classes), **kw))
    return {"step_s": step, "epoch_s": step * len(train), "steps_per_epoch": len(train), "val_s": validation}


def schedule(seconds: float, epoch_s: float, val_s: float) -> tuple[int, int]:
    """``(epochs, val_every)`` that fill ``seconds`` with training and about :data:`VALIDATIONS` validations
    (each also writes history and perhaps best.pt: 0.3 s is allowed for that)."""
    per_validation = val_s + 0.3
    validations = max(2, min(VALIDATIONS, int(0.2 * seconds / per_validation)))
    epochs = max(1, int((0.92 * seconds - validations * per_validation) / epoch_s))
    val_every = max(1, round(epochs / validations))
    return max(val_every, epochs // val_every * val_every), val_every


def score(checkpoint: Path, cfg: TrainConfig, device, flip: bool = False) -> dict:
    """Native-resolution metrics of ``checkpoint`` on the val split (``seglib.evaluation``)."""
    from seglib.data import load_dataset
    from seglib.evaluation import evaluate_dataset
    from seglib.inference import Predictor

    val = load_dataset(cfg.dataset, "val", max_samples=cfg.max_samples)
    report = evaluate_dataset(Predictor.from_checkpoint(checkpoint, device=device, batch_size=16), val,
                              flip=flip, progress=False)
    keep = ("images", "miou", "foreground_iou", "boundary_miou", "pixel_accuracy", "mdice", "seconds")
    return {**{k: report[k] for k in keep}, "classes": [{k: c[k] for k in ("name", "iou", "boundary_iou")}
                                                          for c in report["classes"]]}


def run_recipe(name: str, seconds: float, smoke: bool, work: Path) -> dict:
    """Size recipe ``name`` to ``seconds`` by a probe, train it with ``fit``, score it at native resolution."""
    import torch

    from benchmarks.time_to_quality import cumulative
    from seglib.engine import fit
    from seglib.utils import get_device

    device = get_device()
    recipe = (SMOKE_RECIPES if smoke else RECIPES)[name]
    cfg = replace(recipe["cfg"], out=str(work / "runs" / name), log_freq=sys.maxsize)
    timing = probe(cfg, device)
    epochs, val_every = schedule(seconds, timing["epoch_s"], timing["val_s"])
    cfg = replace(cfg, epochs=epochs, val_every=val_every, save_freq=epochs,
                  warmup_epochs=max(1.0, round(0.03 * epochs, 1)))
    print(f"[{name}] probe {timing['step_s'] * 1e3:.1f} ms/step, {timing['epoch_s']:.2f} s/epoch, "
          f"{timing['val_s']:.2f} s/validation -> {epochs} epochs, validating every {val_every}", flush=True)
    torch.manual_seed(cfg.seed)
    result = fit(cfg, device=device, verbose=True, progress=False)
    out = Path(cfg.out)
    history = result["history"]
    curve = cumulative(history)
    best_row = max(range(len(history)), key=lambda i: history[i]["val_miou"])
    return {"dataset": name, "config": asdict(cfg), "probe": timing, "seed": cfg.seed,
            "epochs": result["epochs_run"], "wall_seconds": result["wall_seconds"],
            "seconds_to_best": curve[best_row][1], "best_epoch": history[best_row]["epoch"],
            "images_per_s": statistics.median(row["images_per_s"] for row in history),
            "curve": [{"epoch": e, "seconds": s, "val_miou_train_size": m} for e, s, m in curve],
            "native": score(out / "best.pt", cfg, device),
            "native_flip": score(out / "best.pt", cfg, device, flip=True),
            "native_last": score(out / "last.pt", cfg, device)}


def partial_recipe(name: str, work: Path) -> dict:
    """What a recipe cut off by its timeout left: its history (no native scores)."""
    from benchmarks.time_to_quality import cumulative

    try:
        history = json.loads((work / "runs" / name / "history.json").read_text())
    except (OSError, ValueError):
        return {"dataset": name, "error": "timed out before its first validation"}
    curve = cumulative(history)
    return {"dataset": name, "error": "timed out: history only, no native scores",
            "curve": [{"epoch": e, "seconds": s, "val_miou_train_size": m} for e, s, m in curve]}


# ----------------------------------------------------------------------------- the command


class Run:
    """The output folder, the log and the summary, each rewritten as soon as something ends."""

    def __init__(self, out: Path, work: Path, budget: float):
        self.out, self.work, self.start, self.budget = out, work, time.monotonic(), budget
        out.mkdir(parents=True, exist_ok=True)
        self.log = open(out / "log.txt", "a", buffering=1)
        self.summary = {"stages": {}}

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def say(self, line: str) -> None:
        stamped = f"[{time.monotonic() - self.start:6.1f} s] {line}"
        print(stamped, flush=True)
        self.log.write(stamped + "\n")

    def write(self, name: str, data) -> None:
        write_atomic(self.out / name, lambda tmp: tmp.write_text(json.dumps(data, indent=1, default=str)))

    def stage(self, key: str, status: str, seconds: float, **extra) -> None:
        self.summary["stages"][key] = {"status": status, "seconds": round(seconds, 1), **extra}
        self.write("summary.json", self.summary)
        self.say(f"stage {key}: {status} ({seconds:.0f} s)")

    def child(self, args: list[str], timeout: float) -> int | None:
        """Run ``python3 args`` in the repository, its output into the log; None when it timed out."""
        proc = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, start_new_session=True)  # its group: kernels, loader workers
        pump = threading.Thread(target=lambda: [self.say("  " + line.rstrip()) for line in proc.stdout], daemon=True)
        pump.start()
        try:
            code = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the child and what it started: nothing keeps the GPU busy
            proc.wait()
            code = None
        pump.join(timeout=5)
        return code


def stage_a(run: Run, smoke: bool, keep_for_c: bool = True) -> None:
    recipes = SMOKE_RECIPES if smoke else RECIPES
    reserve = STAGE_C_SECONDS["smoke" if smoke else "full"] if keep_for_c else 0  # what stage c keeps
    results, t0 = {}, time.monotonic()
    for name, recipe in recipes.items():
        seconds = min(recipe["seconds"], run.left() - reserve - SETUP_SECONDS)
        if seconds < 10 and not smoke:
            results[name] = {"dataset": name, "error": f"skipped: {run.left():.0f} s left"}
            continue
        target = run.work / f"recipe_{name}.json"
        code = run.child([str(Path(__file__)), "recipe", name, "--seconds", str(seconds), "--json", str(target),
                          "--work", str(run.work), *(["--smoke"] if smoke else [])],
                         timeout=min(seconds * 1.2 + 2 * SETUP_SECONDS, run.left() - 5))  # never past the budget
        if code == 0:
            results[name] = json.loads(target.read_text())
        elif code is None:
            results[name] = partial_recipe(name, run.work)
        else:
            results[name] = {**partial_recipe(name, run.work), "error": f"exit code {code} (see log.txt)"}
        results[name]["target"] = dict(zip(("metric", "value", "seconds"), TARGETS[name])) if name in TARGETS \
            else None
        run.write("recipes.json", {"env": run.summary.get("env"), "recipes": results})
        native = results[name].get("native")
        run.say(f"recipe {name}: " + (f"native mIoU {native['miou']:.4f}"
                                      + (f", person IoU {native['foreground_iou']:.4f}"
                                         if native["foreground_iou"] is not None else "")
                                      + f", boundary mIoU {native['boundary_miou']:.4f}"
                                      f", {results[name]['seconds_to_best']:.0f} s to best"
                                      if native else results[name]["error"]))
    failed = [n for n, r in results.items() if "error" in r]
    run.stage("a", "done" if not failed else f"incomplete: {', '.join(failed)}", time.monotonic() - t0)


def stage_c(run: Run, smoke: bool) -> None:
    t0 = time.monotonic()
    cap = min(STAGE_C_SECONDS["smoke" if smoke else "full"], run.left())
    options = (["--smoke"] if smoke else
               ["--dataset", "pennfudan", "--models", "unet-big", "--sizes", "256", "--batch-size", "32",
                "--compile"])
    code = run.child(["-m", "benchmarks.train_throughput", *options, "--json", str(run.out / "speed.json")],
                     timeout=cap)
    run.stage("c", "done" if code == 0 else "timed out" if code is None else f"exit code {code}",
              time.monotonic() - t0)


def stage_b(run: Run, smoke: bool, notebooks: list[str]) -> None:
    t0 = time.monotonic()
    missing = [m for m in ("nbclient", "ipykernel", "nbstripout") if importlib.util.find_spec(m) is None]
    cap = run.left() - 15  # the last stage: all that is left, less the time to pack the archive
    if missing or cap < 120:  # notebook 06 alone takes longer
        why = f"no {', '.join(missing)} (pack --wheels notebooks)" if missing else f"{run.left():.0f} s left"
        run.stage("b", f"skipped: {why}", 0)
        return
    executed = run.work / "notebooks"
    shutil.rmtree(executed, ignore_errors=True)  # an earlier call's notebooks are not this one's results
    started = time.time()
    code = run.child(["scripts/run_notebooks.py", *(["--smoke"] if smoke else []), "--dest", str(executed),
                      *notebooks], timeout=cap)
    with tarfile.open(run.out / "notebooks.tgz", "w:gz") as tar:
        for path in sorted(executed.glob("*.ipynb")):
            tar.add(path, arcname=f"notebooks/{path.name}")
        for path in sorted(p for p in (REPO / "figures").iterdir()  # the figures this run wrote (none in smoke)
                           if p.name[:2] in notebooks and p.stat().st_mtime >= started):
            tar.add(path, arcname=f"figures/{path.name}")
    run.stage("b", "done" if code == 0 else "timed out" if code is None else f"exit code {code}",
              time.monotonic() - t0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="all", choices=("all", "recipe"))
    parser.add_argument("name", nargs="?", help="with 'recipe': which one")
    parser.add_argument("--stages", nargs="+", default=["a", "c", "b"], choices=("a", "b", "c"))
    parser.add_argument("--notebooks", nargs="+", default=["06", "07", "08"], help="stage b: which notebooks")
    parser.add_argument("--smoke", action="store_true", help="the CPU rehearsal: synthetic data, tiny models")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_out")))
    parser.add_argument("--work", type=Path, default=Path("/tmp/seglib-gpu-run"))
    parser.add_argument("--bundle", type=Path, default=BUNDLE, help="what gpu_pack.py made (default .gpu/)")
    parser.add_argument("--budget", type=float, default=560.0, help="seconds for everything (default 560)")
    parser.add_argument("--seconds", type=float, help="with 'recipe': its training time")
    parser.add_argument("--json", type=Path, help="with 'recipe': where its result goes")
    args = parser.parse_args(argv)
    if args.command == "recipe":
        result = run_recipe(args.name, args.seconds, args.smoke, args.work)
        args.json.write_text(json.dumps(result, indent=1, default=str))
        return 0

    run = Run(args.out, args.work, args.budget)
    os.environ.update(PYTHONUNBUFFERED="1", NO_ALBUMENTATIONS_UPDATE="1", SEGLIB_WORK_DIR=str(args.work / "work"),
                      SEGLIB_PUBLISH="1")
    if (args.bundle / "bundle.json").exists():
        install_wheels(args.bundle, args.work / "site")
        manifest = restore_data(args.bundle, args.work / "data")
        os.environ["SEGLIB_DATA_DIR"] = str(args.work / "data")
        run.summary["bundle"] = {k: manifest[k] for k in ("quality", "subsampling", "datasets")}
        run.summary["bundle"]["photos_reencoded"] = len(manifest["reencoded"])
        run.say(f"bundle: {len(manifest['reencoded'])} photos restored from JPEG q{manifest['quality']}")
    import torch

    from benchmarks.common import environment
    from seglib.utils import get_device

    run.summary["env"] = environment(get_device())
    run.write("summary.json", run.summary)
    run.say(f"{run.summary['env']['device']} | torch {torch.__version__} | budget {args.budget:.0f} s")
    if "a" in args.stages:
        stage_a(run, args.smoke, keep_for_c="c" in args.stages)
    if "c" in args.stages:
        stage_c(run, args.smoke)
    if "b" in args.stages:
        stage_b(run, args.smoke, args.notebooks)
    run.say(f"done; {run.left():.0f} s of the budget left")
    return 0


if __name__ == "__main__":
    sys.exit(main())
