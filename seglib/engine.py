"""The training engine: ``train_one_epoch``, ``evaluate`` and ``fit``.

Shaped like torchvision's reference scripts: the two steps, then a ``fit`` that only orchestrates
(set up the run, build its parts, resume, wrap the model, loop). Each part lives in a module named
for what it holds: ``train_config`` (every option), ``batches`` (data), ``optim``, ``ema``,
``parallel`` (DDP, ``torch.compile``), ``checkpoint``, ``history``, ``run_folder`` (where a run may
write, one run at a time) and ``resume`` (what ``--resume`` may change, and the state it loads back).

On a GPU it is fast by default: bf16 autocast, channels_last, fused AdamW, data resident on the GPU
and augmented there in batches, the loss accumulated on the device and metrics in an on-device
confusion matrix, so the host waits for the GPU once per epoch, not once per batch.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from seglib.batches import build_data, data_fingerprint
from seglib.checkpoint import load_checkpoint, load_weights, rng_state, save_checkpoint
from seglib.class_balance import class_weights_for
from seglib.ema import WeightEMA
from seglib.errors import ConfigError, SeglibError
from seglib.history import History, lowest_loss_yet, write_history
from seglib.losses import build_loss
from seglib.metrics import ConfusionMatrix, logits_to_labels
from seglib.optim import build_optimizer
from seglib.parallel import init_distributed, is_distributed, unwrap, wrap_model
from seglib.precision import autocast
from seglib.resume import resumable, resume_state
from seglib.run_folder import check_out, holding, open_folder
from seglib.schedules import build_scheduler
from seglib.snapshots import Snapshots, remove_snapshots
from seglib.tensorboard_log import log_validation, open_board, remove_board, require_tensorboard
from seglib.train_config import TrainConfig
from seglib.utils import environment, get_device, write_atomic

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
             amp: str = "off", channels_last: bool = False) -> dict:
    """Loss and metrics over the whole of ``batches`` (dataset-level confusion matrix).

    The loss is the mean over images of each image's loss, so it does not depend on how the images are
    batched (a batch's mean loss weighs images by their labelled pixels). ``num_classes`` counts *label*
    classes; a 1-channel (sigmoid) model is scored as 2 classes.
    """
    model.eval()
    cm = ConfusionMatrix(num_classes, device=device)
    total = torch.zeros(2, device=device)  # summed loss, images
    for x, y in _limit(batches, None, channels_last):
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
    """Where a run happens: its options, device, process and folder (built by :func:`setup_run`)."""

    cfg: TrainConfig
    device: torch.device
    rank: int
    world: int
    out: Path
    made: tuple = ()       # the folders open_folder created (out, then its new parents)
    lock: int | None = None  # the descriptor of out/.lock, held while the run writes
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # in best.pt and last.pt: which run wrote them
    board: object = None   # the TensorBoard writer (--tensorboard, process 0), closed by holding()


@dataclass
class Parts:
    """What a run trains with (built by :func:`build_parts`)."""

    train_batches: object
    val_batches: object
    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    ema: WeightEMA | None
    meta: dict             # what best.pt and last.pt say of the model: name, classes, dataset, size, options
    num_classes: int       # label classes the metrics count (a 1-channel model scores 2)
    steps: int             # optimizer steps per epoch


def process_device(device, local_rank: int, world: int) -> torch.device:
    """The device this process trains on: ``device``, else its GPU, else the CPU. Under torchrun
    (``world > 1``) a bare ``"cuda"`` is this process's own GPU, ``cuda:LOCAL_RANK``, not the first one."""
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = get_device(device)  # a typo, or a GPU this machine lacks, is a one-line ConfigError
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
    if cfg.tensorboard:
        require_tensorboard()
    rank, world, local_rank = init_distributed()
    device = process_device(device, local_rank, world)
    if device.index is not None and device.type == "cuda":  # a bare "cuda" keeps the current device
        torch.cuda.set_device(device)
    seed_everything(cfg.seed)
    torch.backends.cudnn.benchmark = not cfg.deterministic
    # set both ways: a deterministic run earlier in this process (a notebook) must not slow this one down.
    # warn_only: the backward of bilinear upsampling (DeepLabV3+, UNet upsample="bilinear") and of adaptive pooling
    # (DeepLabV3+) has no deterministic CUDA kernel
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():  # on every process: none may go on to wait for the others
        raise ConfigError(f"--out {out} is a file, not a folder; pass a folder for the run")
    made, lock = open_folder(out) if rank == 0 else ((), None)
    return Run(cfg, device, rank, world, out, made=made, lock=lock)


def build_parts(run: Run, init_from: str | Path | None = None) -> Parts:
    """Batches, model (weights from ``init_from`` if given), loss, optimizer, schedule, scaler, EMA."""
    from seglib.models import create_model

    cfg, device = run.cfg, run.device
    train_batches, val_batches, spec = build_data(cfg, device, run.rank, run.world)
    out_channels = 1 if "bce" in cfg.loss else spec.num_classes
    model = create_model(cfg.model, out_channels, **cfg.model_options).to(device)
    if init_from is not None:  # weights only, like the reference CLI's --loadCheckpoint
        load_weights(model, load_checkpoint(init_from, expect={"model": cfg.model, "num_classes": out_channels}),
                     init_from)
    if cfg.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    weights = class_weights_for(cfg.class_weights, train_batches.label_maps, out_channels)
    meta = {"model": cfg.model, "num_classes": out_channels, "dataset": cfg.dataset,
            "class_names": list(spec.class_names), "image_size": cfg.image_size,
            "model_options": dict(cfg.model_options), "class_weights": None if weights is None else weights.tolist()}
    loss_fn = build_loss(cfg.loss, out_channels, class_weights=weights).to(device)
    optimizer = build_optimizer(cfg, model, device)
    steps = min(len(train_batches), cfg.max_steps or len(train_batches))
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.epochs * steps, int(cfg.warmup_epochs * steps),
                                floor=cfg.min_lr / cfg.lr, gamma=cfg.gamma,
                                step_every=cfg.step_epochs * steps if cfg.step_epochs else None)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16" and device.type == "cuda")
    ema = WeightEMA(model, cfg.ema_decay) if cfg.ema_decay else None
    return Parts(train_batches, val_batches, model, loss_fn, optimizer, scheduler, scaler, ema, meta,
                 num_classes=max(2, out_channels), steps=steps)


def save_progress(run: Run, parts: Parts, history: History, epoch: int, improved: bool,
                  write_last: bool) -> None:
    """best.pt when the val mIoU improved, best_loss.pt (``keep_best_loss``) when the val loss is the lowest yet,
    last.pt (everything to resume) when ``write_last``, the history."""
    weights = (parts.ema.model if parts.ema else unwrap(parts.model)).state_dict()
    best = {"model": weights, "meta": parts.meta, "config": asdict(run.cfg), "epoch": epoch, "run_id": run.run_id}
    if improved:
        save_checkpoint({**best, "metrics": history.best}, run.out / "best.pt")
    if run.cfg.keep_best_loss and lowest_loss_yet(history.rows):
        save_checkpoint({**best, "metrics": history.rows[-1]}, run.out / "best_loss.pt")
    if write_last:
        save_checkpoint({"model": unwrap(parts.model).state_dict(), "optimizer": parts.optimizer.state_dict(),
                         "scheduler": parts.scheduler.state_dict(), "scaler": parts.scaler.state_dict(),
                         "epoch": epoch, "rng": rng_state(), "config": asdict(run.cfg), "meta": parts.meta,
                         "history": history.rows, "best": history.best, "run_id": run.run_id,
                         **({"ema": parts.ema.state_dict()} if parts.ema else {})}, run.out / "last.pt")
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
    (``resume=True``); with ``cfg.keep_best_loss``, ``best_loss.pt`` those with the lowest validation loss. With
    ``cfg.ema_decay`` the weight average is what is validated and saved in
    ``best.pt`` (returned as ``"ema_model"``). ``verbose`` prints one line per validation;
    ``progress`` adds the progress bars within an epoch.
    """
    check_out(cfg, init_from)
    run = setup_run(cfg, device)
    with holding(run):
        return run_training(run, resume=resume, init_from=init_from, verbose=verbose, progress=progress)


def run_training(run: Run, *, resume: bool, init_from: str | Path | None, verbose: bool, progress: bool) -> dict:
    """:func:`fit`'s work, in the folder :func:`setup_run` made and locked: build the parts, resume, then train
    and validate epoch after epoch."""
    cfg, first = run.cfg, run.rank == 0  # the first process writes and prints; under torchrun all train
    resuming = resume and resumable(run.out)  # before build_parts: a refused resume builds nothing
    parts = build_parts(run, init_from)
    data = data_fingerprint(cfg) if first else None  # what it trains on, for metrics.json
    start_epoch, history = resume_state(run, parts) if resuming else (0, History())
    if start_epoch and verbose and first:
        print(f"resumed from {run.out / 'last.pt'} after epoch {start_epoch}" + (
            f": its {cfg.epochs} epochs are done (a larger --epochs extends it)" if start_epoch >= cfg.epochs else ""))
    train_model, eval_model = wrap_model(parts.model, run.device, run.world, cfg.compile)
    eval_model = parts.ema.model if parts.ema else eval_model
    step_options = dict(device=run.device, amp=cfg.amp, channels_last=cfg.channels_last and run.device.type == "cuda")
    if first:  # metrics.json marks the run here as finished: this one writes its own when it is
        (run.out / "metrics.json").unlink(missing_ok=True)
        if not resuming:  # a new run here: the pictures, curves and best-loss weights of the run it replaces go
            remove_snapshots(run.out)
            remove_board(run.out)
            for name in ("best_loss.pt", "curves.png"):
                (run.out / name).unlink(missing_ok=True)
    snapshots = Snapshots(parts.val_batches, run.out, cfg.dataset) if cfg.snapshot_every and first else None
    if cfg.tensorboard and first:
        run.board = open_board(run.out, start_epoch)
    saved_at, start = start_epoch, time.perf_counter()  # saved_at: the epoch last.pt holds
    for epoch in range(start_epoch, cfg.epochs):
        done = epoch + 1  # epochs finished once this one is
        if history.stopped(cfg.patience):  # a resumed run that had stopped early
            break
        parts.train_batches.set_epoch(epoch)
        t0 = time.perf_counter()
        with explain_out_of_memory(cfg), explain_non_finite(run, history, saved_at):
            train_loss = train_one_epoch(train_model, parts.train_batches, parts.loss_fn, parts.optimizer,
                                         parts.scheduler, scaler=parts.scaler, ema=parts.ema, grad_clip=cfg.grad_clip,
                                         max_steps=cfg.max_steps, log_freq=cfg.log_freq, desc=f"epoch {done}",
                                         progress=progress and verbose and first, **step_options)
            trained = time.perf_counter() - t0  # train_one_epoch has read its loss: the device is done
            validate = done % cfg.val_every == 0 or done == cfg.epochs
            val = evaluate(eval_model, parts.val_batches, parts.loss_fn, parts.num_classes, **step_options) \
                if validate else None
        history.add_epoch(train_loss, trained, time.perf_counter() - t0)
        if val is None:
            continue
        improved = history.add_validation(done, val, parts.optimizer.param_groups[-1]["lr"],
                                          parts.steps * cfg.batch_size * run.world)
        stop = history.stopped(cfg.patience)
        write_last = last_pt_due(done, saved_at, cfg) or stop
        saved_at = done if write_last else saved_at
        if first:
            save_progress(run, parts, history, done, improved, write_last)
            if snapshots and (done % cfg.snapshot_every == 0 or done == cfg.epochs or stop):
                snapshots.save(parts.ema.model if parts.ema else unwrap(parts.model), done, val["miou"])
            if run.board:
                log_validation(run.board, history.rows[-1], val["iou"], parts.meta["class_names"])
            if verbose:
                print(history.line(cfg.epochs, improved), flush=True)
                if stop:
                    print(f"early stop: no better val mIoU in {cfg.patience} validations "
                          f"({cfg.patience * cfg.val_every} epochs)")
        if stop:
            break
    return finish(run, parts, history, time.perf_counter() - start, data)


def last_pt_due(done: int, saved_at: int, cfg: TrainConfig) -> bool:
    """Whether the validation after epoch ``done`` writes last.pt (the last one was of epoch ``saved_at``): the
    first validation after each multiple of ``save_freq`` epochs does, and so does the last epoch's."""
    return done // cfg.save_freq > saved_at // cfg.save_freq or done == cfg.epochs


def finish(run: Run, parts: Parts, history: History, seconds: float, data: str | None) -> dict:
    """Write metrics.json (rank 0: the summary, the options, what it ran on and the ``data_fingerprint`` of what
    it trained on) and return the run's summary, history and model(s)."""
    result = {"best": history.best, "epochs_run": history.rows[-1]["epoch"] if history.rows else 0,
              "wall_seconds": seconds, "class_names": parts.meta["class_names"], "config": asdict(run.cfg)}
    if run.rank == 0:
        result.update(env=environment(run.device), data=data)
        write_atomic(run.out / "metrics.json", lambda tmp: tmp.write_text(json.dumps(result, indent=1)))
    return {**result, "history": history.rows, "out": run.out, "model": unwrap(parts.model),
            **({"ema_model": parts.ema.model} if parts.ema else {})}
