"""Joint image + mask augmentation (albumentations 2.x) and the DataLoader that runs it.

>>> tf = train_transform(256, seed=0)
>>> loader = make_loader(ds, tf, batch_size=16, shuffle=True, num_workers=2, seed=0, drop_last=True)
>>> images, masks = next(iter(loader))   # float32 N×3×256×256 (ImageNet-normalized), int64 N×256×256

Three things every segmentation pipeline must get right, and how this module does them:

* **Masks are label maps, not pictures.** Geometric transforms resize the mask by nearest
  neighbour (``mask_interpolation=cv2.INTER_NEAREST_EXACT``, set explicitly on every resizing
  transform), so no in-between labels appear; ``Normalize`` and the colour transforms never touch
  the mask. ``INTER_NEAREST_EXACT`` samples at pixel centres, as the bilinear image resize does;
  OpenCV's plain ``INTER_NEAREST`` samples half a pixel off and shifts the mask against the image.
  Both are nearest neighbour: every output label occurs in the input. The optional rotation warps
  with plain ``INTER_NEAREST`` (a warp has no ``_EXACT``, and maps pixel centres itself), filling
  the corners it brings in with void (255).
* **Seeds.** albumentations 2.x ignores ``random.seed``/``np.random.seed``: a ``Compose`` has its
  own generators, set by ``Compose(..., seed=...)`` or ``set_random_seed``. That method also hands
  *the same* seed to every child transform, so each child replays the same random stream
  (``HorizontalFlip`` fires exactly when ``RandomBrightnessContrast`` does on the first call);
  :func:`seed_transform` seeds the ``Compose`` and then makes all children draw from its single
  stream.
* **Workers.** Each DataLoader worker gets a copy of the transform *with the same generator
  state*, so without :func:`worker_init_fn` every worker produces the same augmentation stream.
  Worker ``k`` is seeded with :func:`worker_seed` ``(seed, k)``, a hash of both numbers (plain
  ``seed + k`` would give worker 1 of seed ``s`` the stream of worker 0 of seed ``s + 1``).
"""

from __future__ import annotations

import functools
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from seglib.cache import check_size  # noqa: E402
from seglib.errors import ConfigError  # noqa: E402
from seglib.gpu_augment import BLUR_SIGMA, IMAGENET_MEAN, IMAGENET_STD, denormalize  # noqa: E402,F401 (.denormalize)
from seglib.masks import IGNORE_INDEX  # noqa: E402

MASK_INTERPOLATION = cv2.INTER_NEAREST_EXACT

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MASK_INTERPOLATION", "SegmentationTorchDataset",
           "denormalize", "eval_transform", "make_loader", "seed_transform", "train_transform",
           "worker_init_fn", "worker_seed"]


def seed_transform(transform: A.BaseCompose, seed: int | None) -> None:
    """Seed ``transform`` so that it and all its children draw from one stream built from ``seed``."""
    transform.set_random_seed(seed)
    # set_random_seed gives every child its own generator with the *same* seed; share the parent's
    transform.set_random_state(transform.random_generator, transform.py_random)


def train_transform(size: int, *, seed: int | None, scale: tuple[float, float] = (0.5, 1.0),
                    hflip: bool = True, color: bool = True, rotate: float = 0.0, jitter: float = 0.0,
                    blur: float = 0.0) -> A.Compose:
    """Random resized crop to ``size×size``, flip, rotation within ±``rotate`` degrees (corners black, mask
    void), brightness/contrast, on half the images saturation within 1 ± ``jitter`` and hue turned by up
    to ± ``jitter / 4``, Gaussian blur on a share ``blur`` of them, ImageNet normalize, to tensor."""
    size = check_size(size)
    steps: list = [A.RandomResizedCrop(size=(size, size), scale=scale, ratio=(3 / 4, 4 / 3),
                                       interpolation=cv2.INTER_LINEAR,
                                       mask_interpolation=MASK_INTERPOLATION,
                                       area_for_downscale="image")]
    if hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    if rotate:
        steps.append(A.Rotate(limit=rotate, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                              border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX, p=1.0))
    if color:
        steps.append(A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5))
    if jitter:
        steps.append(A.ColorJitter(brightness=0, contrast=0, saturation=jitter, hue=jitter / 4, p=0.5))
    if blur:
        steps.append(A.GaussianBlur(blur_limit=0, sigma_limit=BLUR_SIGMA, p=blur))
    steps += [A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), ToTensorV2()]
    transform = A.Compose(steps, seed=seed)  # a Compose-level mask_interpolation would override the rotation's
    seed_transform(transform, seed)
    return transform


def eval_transform(size: int) -> A.Compose:
    """Resize to ``size×size`` (area for downscaled images, nearest for masks), normalize, to tensor."""
    size = check_size(size)
    return A.Compose([A.Resize(size, size, interpolation=cv2.INTER_LINEAR,
                               mask_interpolation=MASK_INTERPOLATION, area_for_downscale="image"),
                      A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), ToTensorV2()],
                     mask_interpolation=MASK_INTERPOLATION, seed=0)


def worker_seed(seed: int, worker_id: int) -> int:
    """The seed of DataLoader worker ``worker_id``: a hash of ``(seed, worker_id)`` in [0, 2**32)."""
    return int(np.random.SeedSequence([int(seed) % 2**64, int(worker_id)]).generate_state(1)[0])


def _init_worker(transform, seed: int, worker_id: int) -> None:
    # under "spawn" too the worker gets this function and the dataset in one pickle, so ``transform`` is
    # still the object its dataset runs (tests/test_transforms.py checks it)
    if isinstance(transform, A.BaseCompose):
        seed_transform(transform, worker_seed(seed, worker_id))


def worker_init_fn(transform, seed: int):
    """A DataLoader ``worker_init_fn`` that gives worker ``k`` its own stream, ``worker_seed(seed, k)``."""
    return functools.partial(_init_worker, transform, int(seed))


class SegmentationTorchDataset(Dataset):
    """A protocol dataset (or cache) as a torch Dataset of ``(float32 3×H×W, int64 H×W)`` pairs."""

    def __init__(self, source, transform):
        if not callable(transform):
            raise ConfigError(f"transform must be callable (e.g. train_transform(size, seed=0)), "
                              f"got {transform!r}")
        self.source, self.transform = source, transform

    def __len__(self) -> int:
        return len(self.source)

    def __repr__(self) -> str:
        return f"SegmentationTorchDataset({self.source!r}, n={len(self)})"

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.source.load(int(i))
        out = self.transform(image=image, mask=mask)
        x, y = out["image"], out["mask"]
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
            raise ConfigError("the transform must end with ToTensorV2() so that it returns tensors; "
                              f"got {type(x).__name__} and {type(y).__name__}")
        return x.float(), y.long()


def make_loader(source, transform, *, batch_size: int, shuffle: bool, num_workers: int, seed: int,
                drop_last: bool, sampler=None) -> DataLoader:
    """A seeded DataLoader over ``source`` (a protocol dataset or cache) running ``transform``.

    The order comes from a ``torch.Generator`` seeded with ``seed`` (or is ``sampler``, a sequence
    of indices, with ``shuffle=False``) and the augmentations from
    :func:`worker_seed` ``(seed, k)`` in worker ``k``. With ``num_workers=0`` the transform runs in
    this process and is reseeded here with ``worker_seed(seed, 0)``, so 0 and 1 workers give the
    same batches and a loader rebuilt with the same seed repeats them exactly.
    """
    if num_workers < 0 or batch_size < 1:
        raise ConfigError(f"need batch_size >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
    dataset = SegmentationTorchDataset(source, transform)
    if num_workers == 0 and isinstance(dataset.transform, A.BaseCompose):
        seed_transform(dataset.transform, worker_seed(seed, 0))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(int(seed)),
                      worker_init_fn=worker_init_fn(dataset.transform, seed) if num_workers > 0 else None,
                      pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0,
                      drop_last=drop_last)
