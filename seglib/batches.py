"""Training and validation batches: GPU-resident and augmented there, or from CPU workers.

>>> train, val, spec = build_data(cfg, device)   # the caches are built once, then reused
>>> for images, masks in train: ...              # float N×3×H×W (normalized), long N×H×W, on device

Under DDP every rank takes its own shard of each epoch's order (:func:`shard`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import numpy as np
import torch

from seglib.gpu_augment import GpuAugment, resize_batch
from seglib.parallel import is_distributed
from seglib.train_config import TrainConfig

__all__ = ["ResidentBatches", "WorkerBatches", "build_data", "data_fingerprint", "shard"]


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

    def label_maps(self) -> np.ndarray:
        """Every label map, ``N×H×W`` uint8 on the host (class weights are counted from these)."""
        return self.masks.cpu().numpy()

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

    Under DDP each rank loads its own share of one seeded permutation per epoch (shared out as
    ``ResidentBatches`` shares out its own), with its own augmentation seed.
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

    def label_maps(self) -> np.ndarray:
        """Every label map of the cache, ``N×H×W`` uint8."""
        return self.source.masks

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


def _datasets(cfg: TrainConfig):
    """The training and validation datasets of ``cfg`` (its images, not yet its batches)."""
    from seglib.data import load_dataset

    return (load_dataset(cfg.dataset, "train", cfg.root, split_file=cfg.split_file, max_samples=cfg.max_samples),
            load_dataset(cfg.dataset, "val", cfg.root, split_file=cfg.split_file,
                         max_samples=cfg.val_images or cfg.max_samples))


def data_fingerprint(cfg: TrainConfig) -> str:
    """Changes with the files ``cfg`` trains and validates on: another folder (the pets sample, then the full
    set), a file added, removed or touched, another decoder (``SegmentationDataset.fingerprint``)."""
    return hashlib.sha1("".join(ds.fingerprint() for ds in _datasets(cfg)).encode()).hexdigest()


def build_data(cfg: TrainConfig, device, rank: int = 0, world: int = 1):
    """``(train_batches, val_batches, spec)`` for ``cfg``: caches built once, then batches."""
    from seglib.cache import load_or_build_cache

    train_ds, val_ds = _datasets(cfg)
    if rank == 0:
        caches = [load_or_build_cache(ds, cfg.image_size) for ds in (train_ds, val_ds)]
    if is_distributed():
        torch.distributed.barrier()
    if rank != 0:
        caches = [load_or_build_cache(ds, cfg.image_size) for ds in (train_ds, val_ds)]
    train_cache, val_cache = caches
    resident = cfg.loader == "gpu" or (cfg.loader == "auto" and torch.device(device).type == "cuda")
    drop_last = len(train_cache) >= cfg.batch_size * world
    scale = (cfg.crop_scale, 1.0)
    if resident:
        augment = GpuAugment(cfg.image_size, scale=scale, rotate=cfg.rotate, jitter=cfg.jitter, blur=cfg.blur)
        train = ResidentBatches(train_cache.images, train_cache.masks, cfg.batch_size, device, augment=augment,
                                seed=cfg.seed, shuffle=True, drop_last=drop_last, rank=rank, world=world, even=True)
        val = ResidentBatches(val_cache.images, val_cache.masks, cfg.batch_size, device, augment=None,
                              seed=cfg.seed, shuffle=False, drop_last=False, rank=rank, world=world)
    else:
        from seglib import transforms  # albumentations: needed on this path only

        workers = cfg.num_workers
        augment = transforms.train_transform(cfg.image_size, seed=cfg.seed, scale=scale, rotate=cfg.rotate,
                                             jitter=cfg.jitter, blur=cfg.blur)
        train = WorkerBatches(train_cache, augment, cfg.batch_size, device, seed=cfg.seed, shuffle=True,
                              drop_last=drop_last, num_workers=workers, rank=rank, world=world, even=True)
        val = WorkerBatches(val_cache, transforms.eval_transform(cfg.image_size), cfg.batch_size,
                            device, seed=cfg.seed, shuffle=False, drop_last=False, num_workers=workers,
                            rank=rank, world=world)
    return train, val, train_ds.spec
