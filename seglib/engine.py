"""The training engine: ``train_one_epoch``, ``evaluate`` and ``fit``.

Written to be read. On a GPU it is also fast by default: bf16 autocast, channels_last, fused
AdamW, data resident on the GPU and augmented there in batches, the loss accumulated on the device
and metrics in an on-device confusion matrix, so the host waits for the GPU once per epoch, not
once per batch.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from seglib.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from seglib.errors import ConfigError, DataError, SeglibError
from seglib.gpu_augment import GpuAugment, resize_batch
from seglib.losses import build_loss
from seglib.metrics import ConfusionMatrix, logits_to_labels
from seglib.schedules import SCHEDULES, build_scheduler
from seglib.utils import write_atomic

AMP_MODES = ("bf16", "fp16", "off")
DATA_PATHS = ("auto", "gpu", "workers")


class NonFiniteLoss(SeglibError):
    """The loss became NaN or infinite; training stops and the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved in every checkpoint."""

    dataset: str = "pennfudan"
    model: str = "unet"
    model_options: dict = field(default_factory=dict)  # e.g. {"big": True, "backbone": "resnet34"}
    root: str | None = None           # dataset folder (default: $SEGLIB_DATA_DIR)
    epochs: int = 40
    image_size: int = 256
    batch_size: int = 16
    lr: float = 2e-3
    trunk_lr_mult: float = 1.0        # DeepLabV3+: the trunk learns at lr × this (e.g. 0.1 for ImageNet weights)
    weight_decay: float = 1e-4
    optimizer: str = "adamw"          # adamw | sgd
    schedule: str = "cosine"          # poly | cosine | onecycle | constant
    warmup_epochs: float = 1.0
    loss: str = "ce"                  # ce | bce | dice | focal, or sums like ce+dice
    crop_scale: float = 0.5           # augmentation strength: smallest random crop, as a share of the area
    amp: str = "bf16"                 # bf16 | fp16 | off (used on CUDA only)
    channels_last: bool = True
    compile: bool = False
    data_path: str = "auto"           # gpu-resident batches, CPU workers with albumentations, or auto
    num_workers: int = 4
    seed: int = 0
    deterministic: bool = False
    ema_decay: float | None = None    # validate and save an exponential moving average of the weights
    grad_clip: float | None = None    # clip the gradients' global L2 norm to this
    patience: int | None = None       # early stopping: validations without a better val mIoU
    val_every: int = 1                # validate (and log, keep best.pt) every N epochs, and after the last
    save_freq: int = 1                # write last.pt every N epochs (at a validation)
    log_freq: int = 50                # progress-bar loss update every N steps (one host sync each)
    val_images: int | None = None     # validate on the first N val images only
    max_steps: int | None = None      # cap on steps per epoch (smoke runs)
    max_samples: int | None = None    # cap on samples per split (smoke runs)
    out: str = "runs/default"

    def __post_init__(self):
        for name, value, choices in (("amp", self.amp, AMP_MODES), ("schedule", self.schedule, SCHEDULES),
                                     ("optimizer", self.optimizer, ("adamw", "sgd")),
                                     ("data_path", self.data_path, DATA_PATHS)):
            if value not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        for name in ("epochs", "image_size", "batch_size", "val_every", "save_freq", "log_freq"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, not {self.lr}")
        for name in ("weight_decay", "warmup_epochs"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be 0 or more, not {getattr(self, name)}")
        if self.image_size < 16:
            raise ConfigError(f"image_size must be at least 16 (the models halve it four times), not {self.image_size}")
        if not self.trunk_lr_mult > 0:
            raise ConfigError(f"trunk_lr_mult must be positive, not {self.trunk_lr_mult}; "
                              "to freeze the trunk, use train_trunk=False (--no-train-trunk)")
        if self.trunk_lr_mult != 1 and self.model != "deeplabv3plus":
            raise ConfigError(f"trunk_lr_mult applies to deeplabv3plus (its ResNet trunk), not {self.model}: "
                              "leave it at 1")
        if not 0 < self.crop_scale <= 1:
            raise ConfigError(f"crop_scale must be in (0, 1] (the smallest crop's share of the image), "
                              f"not {self.crop_scale}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"grad_clip must be positive (e.g. 1.0), not {self.grad_clip}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be between 0 and 1 (e.g. 0.999), not {self.ema_decay}")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# ----------------------------------------------------------------------------- data


def shard(n: int, rank: int, world: int, *, order: torch.Tensor | None = None, even: bool = False) -> torch.Tensor:
    """This rank's share of ``order`` (default ``0..n-1``): every ``world``-th index from ``rank``.

    ``even`` first drops the last ``n % world`` indices so that every rank gets the same number
    (training under DDP: a rank with one step more would wait forever in the gradient all-reduce).
    """
    order = torch.arange(n) if order is None else order
    if even:
        order = order[:n - n % world]
    return order[rank::world]


class ResidentBatches:
    """Batches drawn from uint8 arrays kept on the device, augmented there (``GpuAugment``).

    Each epoch's order comes from ``(seed, epoch)``, so a resumed run sees the same batches as an
    uninterrupted one. Under DDP every rank takes its own slice of the same permutation (``even``:
    slices of equal length) and draws its own augmentations.
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, batch_size: int, device, *,
                 augment: GpuAugment | None, seed: int, shuffle: bool, drop_last: bool,
                 rank: int = 0, world: int = 1, even: bool = False):
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        self.masks = torch.from_numpy(np.ascontiguousarray(masks)).to(device)
        self.batch_size, self.device, self.augment = batch_size, torch.device(device), augment
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.rank, self.world, self.even, self.epoch = rank, world, even, 0

    def __len__(self) -> int:
        n = len(shard(len(self.images), self.rank, self.world, even=self.even))
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, epoch_seed = len(self.images), self.seed * 100_003 + self.epoch
        g = torch.Generator(device=self.device).manual_seed(epoch_seed)  # the same order on every rank
        order = torch.randperm(n, generator=g, device=self.device) if self.shuffle else None
        order = shard(n, self.rank, self.world, order=order, even=self.even).to(self.device)
        if self.rank:  # ... but other crops and flips
            g.manual_seed(epoch_seed * 8_191 + self.rank)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            images, masks = self.images[idx], self.masks[idx]
            if self.augment is None:
                yield resize_batch(images, masks, images.shape[1])
            else:
                yield self.augment(images, masks, g)


class WorkerBatches:
    """The general path: a DataLoader with CPU workers running albumentations.

    Under DDP each rank loads its own shard (the same epoch permutation as ``ResidentBatches``)
    with its own augmentation seed.
    """

    def __init__(self, source, transform, batch_size: int, device, *, seed: int, shuffle: bool,
                 drop_last: bool, num_workers: int, rank: int = 0, world: int = 1, even: bool = False):
        from seglib import transforms

        self.source, self.transform, self.device = source, transform, torch.device(device)
        self.kw = dict(batch_size=batch_size, num_workers=num_workers, drop_last=drop_last)
        self.seed, self.shuffle, self.epoch, self._make = seed, shuffle, 0, transforms.make_loader
        self.rank, self.world, self.even = rank, world, even

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _loader(self):
        epoch_seed = self.seed * 100_003 + self.epoch
        if self.world == 1:
            return self._make(self.source, self.transform, seed=epoch_seed, shuffle=self.shuffle, **self.kw)
        n = len(self.source)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed)) if self.shuffle else None
        indices = shard(n, self.rank, self.world, order=order, even=self.even).tolist()
        return self._make(self.source, self.transform, seed=epoch_seed * 8_191 + self.rank, shuffle=False,
                          sampler=indices, **self.kw)

    def __len__(self) -> int:
        return len(self._loader())

    def __iter__(self):
        for x, y in self._loader():
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


# ----------------------------------------------------------------------------- steps


class WeightEMA:
    """An exponential moving average of a model's weights, updated after every optimizer step.

    ``ema = d·ema + (1 − d)·w`` for parameters and floating-point buffers (BatchNorm statistics);
    integer buffers are copied. The decay warms up as ``min(d, (1 + t) / (10 + t))`` at step ``t``
    (as timm does), so the average does not drag the random initial weights along for thousands of
    steps. The updates are ``foreach`` ops on the device: no host synchronisation.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.steps = decay, 0
        self.model = copy.deepcopy(_unwrap(model)).eval().requires_grad_(False)

    def _pairs(self, model: nn.Module):
        ema, live = self.model.state_dict(keep_vars=True), _unwrap(model).state_dict(keep_vars=True)
        return [(ema[k], live[k]) for k in ema]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        self.steps += 1
        pairs = self._pairs(model)
        floats = [(e, w) for e, w in pairs if e.is_floating_point()]
        torch._foreach_lerp_([e for e, _ in floats], [w.detach() for _, w in floats], 1 - d)
        for e, w in pairs:
            if not e.is_floating_point():
                e.copy_(w)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.steps = state["steps"]


def autocast(device: torch.device, amp: str):
    """bf16/fp16 autocast on CUDA; a no-op elsewhere (CPU autocast gains little and differs)."""
    if device.type != "cuda" or amp == "off":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _limit(batches: Iterable, limit: int | None, channels_last: bool) -> Iterator:
    """At most ``limit`` batches, images in channels_last memory format if asked."""
    for i, (x, y) in enumerate(batches):
        if limit is not None and i >= limit:
            return
        yield (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


def train_one_epoch(model: nn.Module, batches: Iterable, loss_fn, optimizer, scheduler=None, *,
                    device, amp: str = "off", scaler=None, channels_last: bool = False,
                    max_steps: int | None = None, log_freq: int = 50, desc: str = "train",
                    progress: bool = True, ema: WeightEMA | None = None, grad_clip: float | None = None) -> float:
    """One pass over ``batches``; returns the mean training loss (one host sync, at the end).

    ``grad_clip`` rescales the gradients whose global L2 norm exceeds it (after fp16 unscaling).
    """
    model.train()
    total = torch.zeros((), device=device)
    steps = 0
    bar = tqdm(batches, desc=desc, leave=False, total=min(len(batches), max_steps or len(batches)),
               disable=not progress)
    for x, y in _limit(bar, max_steps, channels_last):
        # 1. forward pass (in bf16/fp16 where enabled)
        with autocast(device, amp):
            logits = model(x)
            loss = loss_fn(logits, y)
        # 2. backward pass (scaled for fp16 so small gradients don't underflow), optional clipping
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if grad_clip:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)  # on the device: no host sync
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        # 3. learning-rate schedule, stepped per iteration; the weight average follows the weights
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update(model)
        # 4. accumulate on the device: no .item() here, so the GPU never waits for the host
        total += loss.detach().float()
        steps += 1
        if steps % log_freq == 0:
            bar.set_postfix(loss=f"{total.item() / steps:.4f}")
    if is_distributed():  # every rank's loss, not rank 0's alone
        torch.distributed.all_reduce(total)
        total /= torch.distributed.get_world_size()
    mean = (total / max(steps, 1)).item()
    if not math.isfinite(mean):
        raise NonFiniteLoss(f"the training loss became {mean} ; lower --lr (now "
                            f"{optimizer.param_groups[-1]['lr']:.2e}) or use --amp bf16/off; "
                            "the last good checkpoint is kept")
    return mean


@torch.inference_mode()
def evaluate(model: nn.Module, batches: Iterable, loss_fn, num_classes: int, *, device,
             amp: str = "off", channels_last: bool = False, max_batches: int | None = None) -> dict:
    """Loss and metrics over the whole of ``batches`` (dataset-level confusion matrix).

    ``num_classes`` counts *label* classes; a 1-channel (sigmoid) model is scored as 2 classes.
    """
    model.eval()
    cm = ConfusionMatrix(num_classes, device=device)
    total = torch.zeros(2, device=device)  # summed loss, images
    for x, y in _limit(batches, max_batches, channels_last):
        with autocast(device, amp):
            logits = model(x)
        total[0] += loss_fn(logits.float(), y) * len(x)
        total[1] += len(x)
        cm.update(logits_to_labels(logits.float()), y)
    cm.all_reduce()
    if is_distributed():
        torch.distributed.all_reduce(total)
    return {"loss": (total[0] / total[1].clamp_min(1)).item(), **cm.compute()}


# ----------------------------------------------------------------------------- fit


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def init_distributed() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)``; starts the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not is_distributed():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if world > 1:
        return torch.distributed.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def epochs_since_best(history: list[dict]) -> int:
    """Epochs after the first one with the best val mIoU (0 for an empty history): the early-stopping
    counter, rebuilt from the history so that a resumed run stops when an uninterrupted one would."""
    if not history:
        return 0
    scores = [row["val_miou"] for row in history]
    return len(scores) - 1 - scores.index(max(scores))


def _write_history(out: Path, history: list[dict]) -> None:
    """history.json and history.csv, each written atomically."""
    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)

    write_atomic(out / "history.json", lambda tmp: tmp.write_text(json.dumps(history, indent=1)))
    write_atomic(out / "history.csv", write_csv)


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)       # DistributedDataParallel
    return getattr(model, "_orig_mod", model)     # torch.compile


_RESUME_KEYS = ("model", "optimizer", "scheduler", "epoch", "rng", "history", "best")


def plain_keys(weights: dict) -> dict:
    """``weights`` keyed as the bare module: without the ``module.`` (DataParallel / DDP) and
    ``_orig_mod.`` (``torch.compile``) prefixes that a wrapped model's ``state_dict()`` carries."""
    stripped = True
    while weights and stripped:
        stripped = False
        for prefix in ("module.", "_orig_mod."):
            if all(key.startswith(prefix) for key in weights):
                weights, stripped = {key[len(prefix):]: value for key, value in weights.items()}, True
    return weights


def load_weights(model: nn.Module, state, path: str | Path, needed: tuple[str, ...] = ("model",)) -> None:
    """Put ``state["model"]`` into ``model``; anything that does not fit is a DataError naming the file."""
    missing = [k for k in needed if k not in state] if isinstance(state, dict) else list(needed)
    if missing or not isinstance(state.get("model"), dict):
        raise DataError(path, f"not a seglib checkpoint: it lacks {', '.join(missing or ['model'])} "
                        "(a bare state_dict or another program's file?)",
                        "pass best.pt / last.pt written by python -m seglib train, or wrap a bare "
                        "state_dict as torch.save({'model': state_dict}, path)")
    try:
        model.load_state_dict(plain_keys(state["model"]))
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        detail = (lines[1] if len(lines) > 1 else lines[0] if lines else "").strip().rstrip(".")
        detail = detail if len(detail) <= 200 else detail[:200] + "..."
        options = state.get("meta", {}).get("model_options") if isinstance(state.get("meta"), dict) else None
        raise DataError(path, f"its weights do not fit this {type(model).__name__} ({detail})",
                        "train with the options it was made with"
                        + (f" (its model_options: {options})" if options is not None else "")
                        + ", or pass another checkpoint") from exc


def build_data(cfg: TrainConfig, device, rank: int = 0, world: int = 1):
    """``(train_batches, val_batches, spec)`` for ``cfg``: caches built once, then batches."""
    from seglib.cache import load_or_build_cache
    from seglib.data import load_dataset

    train_ds = load_dataset(cfg.dataset, "train", cfg.root, max_samples=cfg.max_samples)
    val_ds = load_dataset(cfg.dataset, "val", cfg.root, max_samples=cfg.val_images or cfg.max_samples)
    if rank == 0:
        caches = [load_or_build_cache(ds, cfg.image_size) for ds in (train_ds, val_ds)]
    if is_distributed():
        torch.distributed.barrier()
    if rank != 0:
        caches = [load_or_build_cache(ds, cfg.image_size) for ds in (train_ds, val_ds)]
    train_cache, val_cache = caches
    resident = cfg.data_path == "gpu" or (cfg.data_path == "auto" and torch.device(device).type == "cuda")
    drop_last = len(train_cache) >= cfg.batch_size * world
    scale = (cfg.crop_scale, 1.0)
    if resident:
        train = ResidentBatches(train_cache.images, train_cache.masks, cfg.batch_size, device,
                                augment=GpuAugment(cfg.image_size, scale=scale), seed=cfg.seed, shuffle=True,
                                drop_last=drop_last, rank=rank, world=world, even=True)
        val = ResidentBatches(val_cache.images, val_cache.masks, cfg.batch_size, device, augment=None,
                              seed=cfg.seed, shuffle=False, drop_last=False, rank=rank, world=world)
    else:
        from seglib import transforms  # albumentations: needed on this path only

        workers = cfg.num_workers
        train = WorkerBatches(train_cache, transforms.train_transform(cfg.image_size, seed=cfg.seed, scale=scale),
                              cfg.batch_size, device, seed=cfg.seed, shuffle=True,
                              drop_last=drop_last, num_workers=workers, rank=rank, world=world, even=True)
        val = WorkerBatches(val_cache, transforms.eval_transform(cfg.image_size), cfg.batch_size,
                            device, seed=cfg.seed, shuffle=False, drop_last=False, num_workers=workers,
                            rank=rank, world=world)
    return train, val, train_ds.spec


def param_groups(model: nn.Module, lr: float, trunk_lr_mult: float = 1.0) -> list[dict]:
    """Trainable parameters as optimizer groups: the model's ``backbone`` (the DeepLabV3+ trunk) at
    ``lr × trunk_lr_mult``, the rest at ``lr`` (always the last group: the one logged as "lr"). Each
    group keeps its ``lr_mult``, so schedules and the LR finder scale both alike."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if trunk_lr_mult == 1:
        return [{"params": [p for _, p in trainable], "lr": lr, "lr_mult": 1.0}]
    if not hasattr(model, "backbone"):
        raise ConfigError(f"trunk_lr_mult applies to deeplabv3plus (its ResNet trunk); a "
                          f"{type(model).__name__} has no trunk: leave it at 1")
    trunk = [p for name, p in trainable if name.startswith("backbone.")]
    rest = [p for name, p in trainable if not name.startswith("backbone.")]
    return [group for group in ({"params": trunk, "lr": lr * trunk_lr_mult, "lr_mult": trunk_lr_mult},
                                {"params": rest, "lr": lr, "lr_mult": 1.0}) if group["params"]]


def build_optimizer(cfg: TrainConfig, model: nn.Module, device) -> torch.optim.Optimizer:
    """AdamW (fused on CUDA) or SGD with Nesterov momentum, over trainable parameters only
    (grouped by :func:`param_groups`)."""
    params = param_groups(model, cfg.lr, cfg.trunk_lr_mult)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    fused = torch.device(device).type == "cuda"
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def fit(cfg: TrainConfig, *, resume: bool = False, init_from: str | Path | None = None,
        device=None, verbose: bool = True, progress: bool = True) -> dict:
    """Train ``cfg.model`` on ``cfg.dataset``; write checkpoints and history into ``cfg.out``.

    Returns ``{"history": [...], "best": {...}, "out": Path, "model": ...}``. ``best.pt`` holds the
    weights with the best validation mIoU and ``last.pt`` everything needed to resume
    (``resume=True``). With ``cfg.ema_decay`` the weight average is what is validated and saved in
    ``best.pt`` (returned as ``"ema_model"``). ``verbose`` prints one line per epoch; ``progress``
    adds the progress bars within an epoch.
    """
    from seglib.data import get_spec
    from seglib.models import create_model
    from seglib.utils import seed_everything

    classes = get_spec(cfg.dataset).num_classes
    if "bce" in cfg.loss and classes != 2:  # before any folder or cache is made
        raise ConfigError(f"--loss {cfg.loss}: bce is for two classes, and {cfg.dataset} has {classes}; "
                          "use ce (or ce+dice, focal)")
    rank, world, local_rank = init_distributed()
    if device is None:
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.index is not None and device.type == "cuda":  # a bare "cuda" keeps the current device
        torch.cuda.set_device(device)
    seed_everything(cfg.seed)
    if cfg.deterministic:
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)  # bilinear backward has no deterministic CUDA kernel
    else:
        torch.backends.cudnn.benchmark = True
    out = Path(cfg.out)
    if rank == 0:
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / ".write_test").touch()
            (out / ".write_test").unlink()
        except OSError as exc:
            raise ConfigError(f"cannot write to --out {out} ({exc.strerror}); choose a writable folder") from exc
        for stray in out.glob(".*.pt.*.tmp"):  # half-written checkpoints of a killed run
            stray.unlink()

    train_batches, val_batches, spec = build_data(cfg, device, rank, world)
    out_channels = 1 if "bce" in cfg.loss else spec.num_classes
    model = create_model(cfg.model, out_channels, **cfg.model_options).to(device)
    meta = {"model": cfg.model, "num_classes": out_channels, "dataset": cfg.dataset,
            "class_names": list(spec.class_names), "image_size": cfg.image_size,
            "model_options": dict(cfg.model_options)}
    if init_from is not None:  # weights only, like the reference CLI's --loadCheckpoint
        expect = {"model": cfg.model, "num_classes": out_channels}
        load_weights(model, load_checkpoint(init_from, expect=expect), init_from)
    channels_last = cfg.channels_last and device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg.loss, out_channels).to(device)
    optimizer = build_optimizer(cfg, model, device)
    steps = min(len(train_batches), cfg.max_steps or len(train_batches))
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.epochs * steps, int(cfg.warmup_epochs * steps))
    scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" and device.type == "cuda" else None

    ema = WeightEMA(model, cfg.ema_decay) if cfg.ema_decay else None
    start_epoch, history, best = 0, [], {"val_miou": -1.0}
    if resume and (out / "last.pt").exists():
        state = load_checkpoint(out / "last.pt", expect={"model": cfg.model, "num_classes": out_channels,
                                                          "dataset": cfg.dataset, "image_size": cfg.image_size})
        load_weights(model, state, out / "last.pt", _RESUME_KEYS)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None:
            if "ema" not in state:
                raise DataError(out / "last.pt", "it was written without --ema-decay",
                                "resume with the options it was trained with, or start a new --out")
            ema.load_state_dict(state["ema"])
        start_epoch, history, best = state["epoch"], state["history"], state["best"]
        set_rng_state(state["rng"])
        if verbose and rank == 0:
            print(f"resumed from {out / 'last.pt'} at epoch {start_epoch}")

    if world > 1:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    train_model = torch.compile(model) if cfg.compile else model
    # validation runs the bare module: each rank scores its own share, no collective per batch
    eval_model = ema.model if ema else train_model if world == 1 else (
        torch.compile(_unwrap(model)) if cfg.compile else _unwrap(model))

    def snapshot(epoch: int) -> dict:
        return {"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else {},
                "epoch": epoch, "rng": rng_state(), "config": asdict(cfg), "meta": meta,
                "history": history, "best": best, **({"ema": ema.state_dict()} if ema else {})}

    since_best = epochs_since_best(history)
    span_seconds, span_losses = 0.0, []  # the epochs trained since the last validation
    saved_at = start_epoch  # last.pt is written at the first validation after each multiple of save_freq
    start = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.patience is not None and since_best >= cfg.patience:  # a resumed run that had stopped early
            break
        train_batches.set_epoch(epoch)
        t0 = time.perf_counter()
        validate = (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs
        try:
            train_loss = train_one_epoch(train_model, train_batches, loss_fn, optimizer, scheduler,
                                         device=device, amp=cfg.amp, scaler=scaler,
                                         channels_last=channels_last, max_steps=cfg.max_steps,
                                         log_freq=cfg.log_freq, desc=f"epoch {epoch + 1}",
                                         progress=progress and verbose and rank == 0, ema=ema,
                                         grad_clip=cfg.grad_clip)
            val = evaluate(eval_model, val_batches, loss_fn, max(2, out_channels), device=device,
                           amp=cfg.amp, channels_last=channels_last) if validate else None
        except torch.cuda.OutOfMemoryError as exc:
            smaller = (f"--batch-size {cfg.batch_size // 2}" if cfg.batch_size > 1
                       else f"--image-size {max(1, cfg.image_size // 2)} (or a smaller model)")
            raise SeglibError(f"CUDA out of memory at --batch-size {cfg.batch_size} and --image-size "
                              f"{cfg.image_size}; try {smaller}") from exc
        span_seconds += time.perf_counter() - t0
        span_losses.append(train_loss)
        if val is None:
            continue
        # one history row per validation: its train loss, seconds and speed cover the epochs since the last
        seconds, epochs_in_span = span_seconds, len(span_losses)
        row = {"epoch": epoch + 1, "train_loss": sum(span_losses) / epochs_in_span, "val_loss": val["loss"],
               "val_miou": val["miou"], "val_pixel_accuracy": val["pixel_accuracy"],
               "val_mdice": val["mdice"], "lr": optimizer.param_groups[-1]["lr"],
               "seconds": seconds, "images_per_s": epochs_in_span * steps * cfg.batch_size * world / seconds}
        span_seconds, span_losses = 0.0, []
        history.append(row)
        improved = val["miou"] > best["val_miou"]
        if improved:
            best = {**row, "val_iou": val["iou"], "val_dice": val["dice"]}
            since_best = 0
        else:
            since_best += 1
        stop = cfg.patience is not None and since_best >= cfg.patience
        if rank == 0:
            if improved:
                save_checkpoint({"model": (ema.model if ema else _unwrap(model)).state_dict(), "meta": meta,
                                 "config": asdict(cfg), "epoch": epoch + 1, "metrics": best}, out / "best.pt")
            if (epoch + 1) // cfg.save_freq > saved_at // cfg.save_freq or epoch + 1 == cfg.epochs or stop:
                save_checkpoint(snapshot(epoch + 1), out / "last.pt")
                saved_at = epoch + 1
            _write_history(out, history)
            if verbose:
                print(f"epoch {epoch + 1:3d}/{cfg.epochs} | train_loss {train_loss:.4f} | "
                      f"val_loss {val['loss']:.4f} | val_mIoU {val['miou']:.4f} | "
                      f"val_acc {val['pixel_accuracy']:.4f} | {row['images_per_s']:.0f} img/s | "
                      f"{seconds:.1f} s{' *' if improved else ''}", flush=True)
        if stop:
            if verbose and rank == 0:
                print(f"early stop: no better val mIoU in {cfg.patience} validations "
                      f"({cfg.patience * cfg.val_every} epochs)")
            break
    result = {"best": best, "epochs_run": history[-1]["epoch"] if history else 0,
              "wall_seconds": time.perf_counter() - start,
              "class_names": list(spec.class_names), "config": asdict(cfg)}
    if rank == 0:
        write_atomic(out / "metrics.json", lambda tmp: tmp.write_text(json.dumps(result, indent=1)))
    return {**result, "history": history, "out": out, "model": _unwrap(model),
            **({"ema_model": ema.model} if ema else {})}
