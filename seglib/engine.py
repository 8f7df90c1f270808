"""The training engine: ``train_one_epoch``, ``evaluate`` and ``fit``.

Shaped like torchvision's reference scripts: the two steps, then a ``fit`` that only orchestrates
(set up the run, build its parts, resume, wrap the model, loop). Each part lives in a module named
for what it holds: ``train_config`` (every option), ``batches`` (data), ``optim``, ``ema``,
``parallel`` (DDP, ``torch.compile``), ``checkpoint`` and ``history``.

On a GPU it is fast by default: bf16 autocast, channels_last, fused AdamW, data resident on the GPU
and augmented there in batches, the loss accumulated on the device and metrics in an on-device
confusion matrix, so the host waits for the GPU once per epoch, not once per batch.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from seglib.batches import build_data
from seglib.checkpoint import RESUME_KEYS, load_checkpoint, load_weights, rng_state, save_checkpoint, set_rng_state
from seglib.class_balance import class_weights_for
from seglib.ema import WeightEMA
from seglib.errors import ConfigError, DataError, SeglibError
from seglib.history import History, write_history
from seglib.losses import build_loss
from seglib.metrics import ConfusionMatrix, logits_to_labels
from seglib.optim import build_optimizer
from seglib.parallel import init_distributed, is_distributed, unwrap, wrap_model
from seglib.paths import IMAGE_SUFFIXES
from seglib.precision import autocast
from seglib.schedules import build_scheduler, follow_schedule
from seglib.snapshots import Snapshots, remove_snapshots
from seglib.tensorboard_log import close_board, log_validation, open_board, remove_board
from seglib.train_config import TrainConfig
from seglib.utils import environment, refuse_dataset_folder, write_atomic

__all__ = ["NonFiniteLoss", "TrainConfig", "evaluate", "fit", "train_one_epoch"]


class NonFiniteLoss(SeglibError):
    """The loss became NaN or infinite; training stops, and the checkpoints of the finite epochs are kept."""


# ----------------------------------------------------------------------------- the two steps


def _limit(batches: Iterable, limit: int | None, channels_last: bool) -> Iterator:
    """At most ``limit`` batches (none made beyond them), images in channels_last memory format if asked."""
    for x, y in itertools.islice(batches, limit):
        yield (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


def train_one_epoch(model: nn.Module, batches: Iterable, loss_fn, optimizer, scheduler=None, *,
                    device, amp: str = "off", scaler=None, channels_last: bool = False,
                    max_steps: int | None = None, log_freq: int = 50, desc: str = "train",
                    progress: bool = True, ema: WeightEMA | None = None, grad_clip: float | None = None) -> float:
    """One pass over ``batches``; returns the mean training loss (one host sync, at the end, and every
    ``log_freq`` steps for the progress bar when it is shown).

    ``scaler`` is fp16's ``GradScaler`` (None: a disabled one, which changes nothing);
    ``grad_clip`` rescales the gradients whose global L2 norm exceeds it.
    """
    model.train()
    scaler = scaler or torch.amp.GradScaler("cuda", enabled=False)
    total = torch.zeros((), device=device)
    steps = 0
    bar = tqdm(batches, desc=desc, leave=False, total=min(len(batches), max_steps or len(batches)),
               disable=not progress)
    for x, y in _limit(bar, max_steps, channels_last):
        # 1. forward pass (in bf16/fp16 where enabled)
        with autocast(device, amp):
            logits = model(x)
            loss = loss_fn(logits, y)
        # 2. backward pass (fp16 scales the loss so small gradients don't underflow), optional clipping
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)  # on the device: no host sync
        scaler.step(optimizer)
        scaler.update()
        # 3. learning-rate schedule, stepped per iteration; the weight average follows the weights
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update(model)
        # 4. accumulate on the device: no .item() here, so the GPU never waits for the host
        total += loss.detach().float()
        steps += 1
        if progress and steps % log_freq == 0:  # the bar's loss costs a host sync: only for a bar that is shown
            bar.set_postfix(loss=f"{total.item() / steps:.4f}")
    if is_distributed():  # every rank's loss, not rank 0's alone
        torch.distributed.all_reduce(total)
        total /= torch.distributed.get_world_size()
    mean = (total / max(steps, 1)).item()
    if not math.isfinite(mean):
        raise NonFiniteLoss(f"the training loss became {mean} ; lower --lr (now "
                            f"{optimizer.param_groups[-1]['lr']:.2e}) or use --amp bf16/off")
    return mean


@torch.inference_mode()
def evaluate(model: nn.Module, batches: Iterable, loss_fn, num_classes: int, *, device,
             amp: str = "off", channels_last: bool = False, max_batches: int | None = None) -> dict:
    """Loss and metrics over the whole of ``batches`` (dataset-level confusion matrix).

    The loss is the mean over images of each image's loss, so it does not depend on how the images are
    batched (a batch's mean loss weighs images by their labelled pixels). ``num_classes`` counts *label*
    classes; a 1-channel (sigmoid) model is scored as 2 classes.
    """
    model.eval()
    cm = ConfusionMatrix(num_classes, device=device)
    total = torch.zeros(2, device=device)  # summed loss, images
    for x, y in _limit(batches, max_batches, channels_last):
        with autocast(device, amp):
            logits = model(x)
        total[0] += sum(loss_fn(logits[i:i + 1].float(), y[i:i + 1]) for i in range(len(x)))
        total[1] += len(x)
        cm.update(logits_to_labels(logits.float()), y)
    cm.all_reduce()
    if is_distributed():
        torch.distributed.all_reduce(total)
    return {"loss": (total[0] / total[1].clamp_min(1)).item(), **cm.compute()}


# ----------------------------------------------------------------------------- a run's parts


@dataclass
class Run:
    """Where a run happens and what it trains with (built by :func:`setup_run` and :func:`build_parts`)."""

    cfg: TrainConfig
    device: torch.device
    rank: int
    world: int
    out: Path
    train_batches: object = None
    val_batches: object = None
    model: nn.Module = None
    loss_fn: nn.Module = None
    optimizer: torch.optim.Optimizer = None
    scheduler: object = None
    scaler: torch.amp.GradScaler = None
    ema: WeightEMA | None = None
    meta: dict = None
    num_classes: int = 0   # label classes the metrics count (a 1-channel model scores 2)
    steps: int = 0         # optimizer steps per epoch
    made: tuple = ()       # the folders setup_run created (out, then its new parents)
    lock: int | None = None  # the descriptor of out/.lock, held while the run writes
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # in best.pt and last.pt: which run wrote them
    board: object = None   # the TensorBoard writer (--tensorboard, process 0), closed by holding()


FINISHED = ("best.pt", "metrics.json", "history.json", "history.csv")  # what a run leaves besides last.pt
# how a run goes on, not what it learns
RESUMABLE = ("epochs", "out", "root", "num_workers", "loader", "amp", "compile", "channels_last", "deterministic",
             "val_every", "save_freq", "snapshot_every", "tensorboard", "log_freq", "patience")


def check_out(cfg: TrainConfig, init_from: str | Path | None) -> None:
    """Refuse an ``--out`` inside the dataset or holding images (a dataset's folder), or one whose
    checkpoint is the ``--init-from`` this run would overwrite."""
    from seglib.data import find_folder

    out, data = Path(cfg.out).resolve(), find_folder(cfg.dataset, cfg.root).resolve()
    refuse_dataset_folder(Path(cfg.out), "--out", (data,))
    if out.is_dir() and any(p.name in ("images", "masks") or p.suffix.lower() in IMAGE_SUFFIXES
                            for p in out.iterdir()):
        raise DataError(cfg.out, "holds images (a dataset's folder?); a run never writes among them",
                        "pass another --out, e.g. runs/NAME")
    if init_from is not None and Path(init_from).resolve() in {out / "best.pt", out / "last.pt"}:
        raise DataError(init_from, "is --init-from and a checkpoint this run overwrites",
                        "copy it out of --out first, or pass another --out")


def lock_folder(out: Path) -> int | None:
    """Take ``out/.lock`` (holding this pid) exclusively, without waiting; its descriptor, which holds
    the lock until :func:`unlock_folder`. None where there are no locks (no fcntl, or a file system without them)."""
    try:
        import fcntl
    except ImportError:
        return None
    path = out / ".lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataError(out, f"another training is writing this folder (pid {holder})",
                            "wait for it, or pass another --out") from None
        except OSError:
            os.close(fd)
            return None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)  # the run before removed this lock file as we took it: take the new one
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def unlock_folder(run: Run) -> None:
    """Remove ``out/.lock`` and release it (removed first: a run that opened it meanwhile takes a new one)."""
    if run.lock is not None:
        (run.out / ".lock").unlink(missing_ok=True)
        os.close(run.lock)


def process_device(device, local_rank: int, world: int) -> torch.device:
    """The device this process trains on: ``device``, else its GPU, else the CPU. Under torchrun
    (``world > 1``) a bare ``"cuda"`` is this process's own GPU, ``cuda:LOCAL_RANK``, not the first one."""
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and world > 1:
        device = torch.device("cuda", local_rank)
    return device


def setup_run(cfg: TrainConfig, device=None) -> Run:
    """Start the process group (under torchrun), pick and seed the device, set cuDNN, make ``cfg.out``."""
    from seglib.data import get_spec
    from seglib.utils import seed_everything

    classes = get_spec(cfg.dataset).num_classes
    if "bce" in cfg.loss and classes != 2:  # before any folder or cache is made
        raise ConfigError(f"--loss {cfg.loss}: bce is for two classes, and {cfg.dataset} has {classes}; "
                          "use ce (or ce+dice, focal)")
    rank, world, local_rank = init_distributed()
    device = process_device(device, local_rank, world)
    if device.index is not None and device.type == "cuda":  # a bare "cuda" keeps the current device
        torch.cuda.set_device(device)
    seed_everything(cfg.seed)
    torch.backends.cudnn.benchmark = not cfg.deterministic
    # set both ways: a deterministic run earlier in this process (a notebook) must not slow this one down.
    # warn_only: bilinear upsampling's and adaptive pooling's backward (DeepLabV3+) have no deterministic CUDA kernel
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    out, made, lock = Path(cfg.out), (), None
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; pass a folder for the run")
    if rank == 0:
        made = tuple(p for p in (out, *out.parents) if not p.exists())
        try:
            out.mkdir(parents=True, exist_ok=True)
            lock = lock_folder(out)  # before anything is written or deleted: one run per folder
        except OSError as exc:
            raise ConfigError(f"cannot write to --out {out} ({exc.strerror}); choose a writable folder") from exc
        for stray in out.glob(".*.pt.*.tmp"):  # half-written checkpoints of a killed run
            stray.unlink()
    return Run(cfg, device, rank, world, out, made=made, lock=lock)


@contextlib.contextmanager
def holding(run: Run) -> Iterator[None]:
    """The run's folder while the block trains: its TensorBoard file is closed and its lock released at the end,
    and a failure before anything was written removes the folders :func:`setup_run` made (never one that was
    there)."""
    try:
        yield
    except BaseException:
        close_board(run)
        unlock_folder(run)
        for folder in run.made:
            with contextlib.suppress(OSError):  # rmdir: only while empty
                folder.rmdir()
        raise
    close_board(run)
    unlock_folder(run)


def resumable(out: Path) -> bool:
    """Whether ``out`` holds a ``last.pt`` to resume; a run that left other files but no last.pt is
    refused rather than started over on top of them."""
    if (out / "last.pt").exists():
        return True
    left = [name for name in FINISHED if (out / name).exists()]
    if left:
        raise DataError(out, f"holds a run ({', '.join(left)}) but no last.pt to resume from",
                        "pass another --out for a new run, or drop --resume and pass --overwrite to replace it")
    return False


def run_options(last: Path) -> dict:
    """The options the run in ``last`` (its last.pt) was trained with, as :class:`TrainConfig` fields."""
    return asdict(TrainConfig.from_dict(load_checkpoint(last).get("config", {})))


def changed_options(saved: dict, cfg: TrainConfig) -> list[str]:
    """``name: old → new`` for each option of ``cfg`` that differs from the run's and is not :data:`RESUMABLE`."""
    old, new = asdict(TrainConfig.from_dict(saved)), asdict(cfg)
    return [f"{name}: {old[name]!r} → {new[name]!r}" for name in new
            if name not in RESUMABLE and old[name] != new[name]]


def refuse_changed_options(last: Path, saved: dict, cfg: TrainConfig) -> None:
    """A ``--resume`` of the run in ``last`` (its options ``saved``) with other training options is refused."""
    changed = changed_options(saved, cfg)
    if changed:
        raise DataError(last, f"--resume with other training options ({'; '.join(changed)})",
                        "drop them to go on with the run's own, or pass another --out to start a new run")


def build_parts(run: Run, init_from: str | Path | None = None) -> None:
    """Batches, model (weights from ``init_from`` if given), loss, optimizer, schedule, scaler, EMA."""
    from seglib.models import create_model

    cfg, device = run.cfg, run.device
    run.train_batches, run.val_batches, spec = build_data(cfg, device, run.rank, run.world)
    out_channels = 1 if "bce" in cfg.loss else spec.num_classes
    run.num_classes = max(2, out_channels)
    run.model = create_model(cfg.model, out_channels, **cfg.model_options).to(device)
    run.meta = {"model": cfg.model, "num_classes": out_channels, "dataset": cfg.dataset,
                "class_names": list(spec.class_names), "image_size": cfg.image_size,
                "model_options": dict(cfg.model_options)}
    if init_from is not None:  # weights only, like the reference CLI's --loadCheckpoint
        load_weights(run.model, load_checkpoint(init_from, expect={"model": cfg.model, "num_classes": out_channels}),
                     init_from)
    if cfg.channels_last and device.type == "cuda":
        run.model = run.model.to(memory_format=torch.channels_last)
    weights = class_weights_for(cfg.class_weights, run.train_batches.label_maps(), out_channels)
    run.meta["class_weights"] = None if weights is None else weights.tolist()
    run.loss_fn = build_loss(cfg.loss, out_channels, class_weights=weights).to(device)
    run.optimizer = build_optimizer(cfg, run.model, device)
    run.steps = min(len(run.train_batches), cfg.max_steps or len(run.train_batches))
    run.scheduler = build_scheduler(run.optimizer, cfg.schedule, cfg.epochs * run.steps,
                                    int(cfg.warmup_epochs * run.steps))
    run.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16" and device.type == "cuda")
    run.ema = WeightEMA(run.model, cfg.ema_decay) if cfg.ema_decay else None


def refuse_foreign_last(last: Path, run_id: str | None) -> None:
    """A ``last.pt`` written by another run than the ``best.pt`` beside it (copied in) is not resumed: going on
    would replace that run's best weights with another run's."""
    best = last.with_name("best.pt")
    if run_id is None or not best.exists():
        return
    other = load_checkpoint(best).get("run_id")
    if other is not None and other != run_id:
        raise DataError(last, f"was written by another run than {best.name} beside it (run {run_id[:8]}, "
                        f"not {other[:8]}); resuming would replace that run's best weights",
                        "resume each run in its own folder: move this last.pt (or best.pt) to another --out")


def resume_state(run: Run) -> tuple[int, History]:
    """Load ``out/last.pt`` into the parts; ``(epoch to start from, history so far)``."""
    path, cfg = run.out / "last.pt", run.cfg
    state = load_checkpoint(path, expect={"model": cfg.model, "num_classes": run.meta["num_classes"],
                                          "dataset": cfg.dataset, "image_size": cfg.image_size})
    refuse_foreign_last(path, state.get("run_id"))
    refuse_changed_options(path, state.get("config", asdict(cfg)), cfg)  # before any state is loaded into the parts
    run.run_id = state.get("run_id") or run.run_id
    load_weights(run.model, state, path, RESUME_KEYS)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    follow_schedule(run.scheduler)  # another --epochs is another curve: go on along it from the step reached
    if state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    if run.ema is not None:  # ema_decay is one of the options checked above: last.pt holds the average
        run.ema.load_state_dict(state["ema"])
    set_rng_state(state["rng"])
    return state["epoch"], History(state["history"], state["best"])


def save_progress(run: Run, history: History, epoch: int, improved: bool, last: bool) -> None:
    """best.pt when the val mIoU improved, last.pt (everything to resume) when ``last``, the history."""
    weights = (run.ema.model if run.ema else unwrap(run.model)).state_dict()
    if improved:
        save_checkpoint({"model": weights, "meta": run.meta, "config": asdict(run.cfg), "epoch": epoch,
                         "metrics": history.best, "run_id": run.run_id}, run.out / "best.pt")
    if last:
        save_checkpoint({"model": unwrap(run.model).state_dict(), "optimizer": run.optimizer.state_dict(),
                         "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
                         "epoch": epoch, "rng": rng_state(), "config": asdict(run.cfg), "meta": run.meta,
                         "history": history.rows, "best": history.best, "run_id": run.run_id,
                         **({"ema": run.ema.state_dict()} if run.ema else {})}, run.out / "last.pt")
    write_history(run.out, history.rows)


@contextlib.contextmanager
def explain_non_finite(run: Run, history: History, saved_at: int):
    """A NaN or infinite loss says what is truly kept: this run's last.pt, its best.pt, or nothing."""
    try:
        yield
    except NonFiniteLoss as exc:
        if saved_at:
            kept = f"the last good checkpoint is kept ({run.out / 'last.pt'}, epoch {saved_at})"
        elif history.rows:
            kept = f"{run.out / 'best.pt'} (epoch {history.best['epoch']}) is kept; no last.pt was due yet"
        else:
            kept = "no checkpoint was written: this happened before the first one"
        raise NonFiniteLoss(f"{exc}; {kept}") from None


@contextlib.contextmanager
def explain_out_of_memory(cfg: TrainConfig):
    """CUDA out of memory becomes one line saying what to make smaller."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        smaller = (f"--batch-size {cfg.batch_size // 2}" if cfg.batch_size > 1
                   else f"--image-size {max(1, cfg.image_size // 2)} (or a smaller model)")
        raise SeglibError(f"CUDA out of memory at --batch-size {cfg.batch_size} and --image-size "
                          f"{cfg.image_size}; try {smaller}") from exc


# ----------------------------------------------------------------------------- fit


def fit(cfg: TrainConfig, *, resume: bool = False, init_from: str | Path | None = None,
        device=None, verbose: bool = True, progress: bool = True) -> dict:
    """Train ``cfg.model`` on ``cfg.dataset``; write checkpoints and history into ``cfg.out``.

    Returns ``{"history": [...], "best": {...}, "out": Path, "model": ...}``. ``best.pt`` holds the
    weights with the best validation mIoU and ``last.pt`` everything needed to resume
    (``resume=True``). With ``cfg.ema_decay`` the weight average is what is validated and saved in
    ``best.pt`` (returned as ``"ema_model"``). ``verbose`` prints one line per validation;
    ``progress`` adds the progress bars within an epoch.
    """
    check_out(cfg, init_from)
    run = setup_run(cfg, device)
    with holding(run):
        return run_training(run, resume=resume, init_from=init_from, verbose=verbose, progress=progress)


def run_training(run: Run, *, resume: bool, init_from: str | Path | None, verbose: bool, progress: bool) -> dict:
    """:func:`fit`'s work, in the folder :func:`setup_run` made and locked."""
    cfg = run.cfg
    resuming = resume and resumable(run.out)  # before build_parts: a refused resume builds nothing
    build_parts(run, init_from)
    start_epoch, history = resume_state(run) if resuming else (0, History())
    if start_epoch and verbose and run.rank == 0:
        print(f"resumed from {run.out / 'last.pt'} after epoch {start_epoch}")
    train_model, eval_model = wrap_model(run.model, run.device, run.world, cfg.compile)
    eval_model = run.ema.model if run.ema else eval_model
    step_options = dict(device=run.device, amp=cfg.amp, channels_last=cfg.channels_last and run.device.type == "cuda")
    if run.rank == 0 and not resuming:  # a new run here: the pictures and curves of the run it replaces go
        remove_snapshots(run.out)
        remove_board(run.out)
    snapshots = Snapshots(run.val_batches, run.out, cfg.dataset) if cfg.snapshot_every and run.rank == 0 else None
    if cfg.tensorboard and run.rank == 0:
        run.board = open_board(run.out, start_epoch)
    saved_at, start = start_epoch, time.perf_counter()  # last.pt: at the first validation after each save_freq
    for epoch in range(start_epoch, cfg.epochs):
        if history.stopped(cfg.patience):  # a resumed run that had stopped early
            break
        run.train_batches.set_epoch(epoch)
        t0, validate = time.perf_counter(), (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs
        with explain_out_of_memory(cfg), explain_non_finite(run, history, saved_at):
            train_loss = train_one_epoch(train_model, run.train_batches, run.loss_fn, run.optimizer, run.scheduler,
                                         scaler=run.scaler, max_steps=cfg.max_steps, log_freq=cfg.log_freq,
                                         desc=f"epoch {epoch + 1}", progress=progress and verbose and run.rank == 0,
                                         ema=run.ema, grad_clip=cfg.grad_clip, **step_options)
            trained = time.perf_counter() - t0  # train_one_epoch has read its loss: the device is done
            val = evaluate(eval_model, run.val_batches, run.loss_fn, run.num_classes, **step_options) \
                if validate else None
        history.add_epoch(train_loss, trained, time.perf_counter() - t0)
        if val is None:
            continue
        improved = history.add_validation(epoch + 1, val, run.optimizer.param_groups[-1]["lr"],
                                          run.steps * cfg.batch_size * run.world)
        stop = history.stopped(cfg.patience)
        last = (epoch + 1) // cfg.save_freq > saved_at // cfg.save_freq or epoch + 1 == cfg.epochs or stop
        saved_at = epoch + 1 if last else saved_at
        if run.rank == 0:
            save_progress(run, history, epoch + 1, improved, last)
            if snapshots and ((epoch + 1) % cfg.snapshot_every == 0 or epoch + 1 == cfg.epochs or stop):
                snapshots.save(run.ema.model if run.ema else unwrap(run.model), epoch + 1, val["miou"])
            if run.board:
                log_validation(run.board, history.rows[-1], val["iou"], run.meta["class_names"])
            if verbose:
                print(history.line(cfg.epochs, improved), flush=True)
        if stop:
            if verbose and run.rank == 0:
                print(f"early stop: no better val mIoU in {cfg.patience} validations "
                      f"({cfg.patience * cfg.val_every} epochs)")
            break
    return finish(run, history, time.perf_counter() - start)


def finish(run: Run, history: History, seconds: float) -> dict:
    """Write metrics.json (rank 0: the summary, the options and what it ran on) and return the run's summary,
    history and model(s)."""
    result = {"best": history.best, "epochs_run": history.rows[-1]["epoch"] if history.rows else 0,
              "wall_seconds": seconds, "class_names": run.meta["class_names"], "config": asdict(run.cfg)}
    if run.rank == 0:
        result["env"] = environment(run.device)
        write_atomic(run.out / "metrics.json", lambda tmp: tmp.write_text(json.dumps(result, indent=1)))
    return {**result, "history": history.rows, "out": run.out, "model": unwrap(run.model),
            **({"ema_model": run.ema.model} if run.ema else {})}
