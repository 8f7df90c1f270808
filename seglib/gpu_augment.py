"""Augmentation as batched tensor ops on data that already sits on the GPU.

All our datasets fit in GPU memory at training resolution as uint8. Keeping them there and
augmenting whole batches with ``affine_grid`` + ``grid_sample`` removes the CPU decode/augment
pipeline from the training loop. The transforms mirror ``seglib.transforms.train_transform``:

========================  ============================================  ==================================
step                      albumentations (CPU workers)                  here (GPU, per batch)
========================  ============================================  ==================================
random resized crop       ``RandomResizedCrop`` (scale, ratio)          same scale/ratio sampling, one
                                                                        affine grid per sample
horizontal flip           ``HorizontalFlip(p=0.5)``                     sign of the grid's x axis
rotation (``rotate=d``)   ``Rotate(limit=d, p=1)`` after the crop:      the grid turned by the same angle;
                          corners filled black, mask void (255)         the crop's surroundings where the
                                                                        image has them, black and void
                                                                        beyond its edges
brightness / contrast     ``RandomBrightnessContrast(0.2, 0.2)``        ``x * c + 255 * b``, same ranges,
                          p=0.5: ``x * c + 255 * b``, clipped           on a random half of the batch
colour (``jitter=j``)     ``ColorJitter`` p=0.5: saturation within      the same two steps (:func:`saturate`,
                          1 ± j, hue turned by up to ± j / 4            :func:`shift_hue`), saturation
                          (in random order)                             first, on a random half
blur (``blur=p``)         ``GaussianBlur`` p=p, sigma 0.1–2 px          :func:`gaussian_blur`, 15 taps
normalize                 ``Normalize`` (ImageNet mean/std)             same
mask                      nearest                                       ``grid_sample(mode="nearest")``
========================  ============================================  ==================================

Differences: albumentations retries crops that don't fit and falls back to a centre crop; here the
crop is clamped inside the image. Interpolation is bilinear for images in both, but antialiasing
differs when the crop is much larger than the output. ``ColorJitter`` turns the hue of uint8 images
in OpenCV's 8-bit HSV (steps of 2°), here in floats. Its blur kernel has ``2 * int(3.5 * sigma) + 1``
taps, here always 15 (what lies beyond 3.5 sigma weighs under 0.1 %). Random numbers come from a
``torch.Generator`` on the data's device, so the whole step stays on the GPU (no host syncs).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from seglib.errors import ConfigError
from seglib.masks import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 or 0..255 float ``N×3×H×W`` → ImageNet-normalized float32."""
    mean = images.new_tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1) * 255
    std = images.new_tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1) * 255
    return (images.float() - mean) / std


def denormalize(tensor: torch.Tensor) -> np.ndarray:
    """ImageNet-normalized ``3×H×W`` (or ``N×3×H×W``) tensor → uint8 ``H×W×3`` (``N×H×W×3``) for display."""
    x = torch.as_tensor(tensor).detach().float().cpu()
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ConfigError(f"denormalize needs a 3×H×W or N×3×H×W tensor, got shape {tuple(x.shape)}")
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    x = ((x * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def resize_batch(images: torch.Tensor, masks: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluation transform: ``N×H×W×3`` uint8 images and ``N×H×W`` masks → normalized
    ``N×3×size×size`` and ``N×size×size`` int64 (bilinear for images, nearest for masks)."""
    x = F.interpolate(images.permute(0, 3, 1, 2).float(), size=(size, size), mode="bilinear",
                      align_corners=False, antialias=True)
    y = F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest-exact")[:, 0]  # as the cache
    return normalize(x), y.long()


BLUR_SIGMA = (0.1, 2.0)  # pixels, as torchvision's GaussianBlur
BLUR_RADIUS = 7  # int(3.5 * 2.0): the kernel albumentations uses for the largest sigma


def saturate(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend 0..255 ``N×3×H×W`` images with their grey (ITU-R 601 luma) by ``factor`` (``N``): 0 grey,
    1 unchanged, 2 twice as colourful; clipped (albumentations' ``adjust_saturation_torchvision``)."""
    grey = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    f = factor.view(-1, 1, 1, 1)
    return (x * f + grey * (1 - f)).clamp(0, 255)


def shift_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Turn the HSV hue of 0..255 ``N×3×H×W`` images by ``turns`` (``N``, 0.5 = 180°), keeping their
    saturation and value (albumentations' ``adjust_hue_torchvision``); greys stay grey."""
    r, g, b = x.unbind(1)
    value, lowest = x.amax(1), x.amin(1)
    chroma = value - lowest
    c = chroma.clamp(min=1e-12)
    hue = torch.where(value == r, ((g - b) / c) % 6,
                      torch.where(value == g, (b - r) / c + 2, (r - g) / c + 4))  # in sixths of a turn
    hue = (hue + 6 * turns.view(-1, 1, 1)) % 6
    # back to RGB: channel n (5 for red, 3 green, 1 blue) is value - chroma * clamp(min(k, 4 - k), 0, 1)
    k = (x.new_tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1) + hue[:, None]) % 6
    return value[:, None] - chroma[:, None] * torch.minimum(k, 4 - k).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur ``N×3×H×W`` images with a Gaussian of ``sigma`` pixels each (``N``): one separable
    ``2 * BLUR_RADIUS + 1``-tap kernel per image, edges mirrored (OpenCV's ``BORDER_REFLECT_101``)."""
    n, ch, h, w = x.shape
    taps = torch.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (taps / sigma.view(-1, 1)) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(ch, 0)  # one per image and channel
    y = x.reshape(1, n * ch, h, w)  # every channel of every image its own group
    y = F.conv2d(F.pad(y, (BLUR_RADIUS, BLUR_RADIUS, 0, 0), mode="reflect"), kernel[:, None, None], groups=n * ch)
    y = F.conv2d(F.pad(y, (0, 0, BLUR_RADIUS, BLUR_RADIUS), mode="reflect"), kernel[:, None, :, None],
                 groups=n * ch)
    return y.view(n, ch, h, w)


class GpuAugment:
    """Random resized crop, horizontal flip, rotation (off by default), brightness/contrast, colour jitter
    and blur (both off by default) and normalization of a batch."""

    def __init__(self, size: int, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), hflip: bool = True,
                 brightness: float = 0.2, contrast: float = 0.2, rotate: float = 0.0, jitter: float = 0.0,
                 blur: float = 0.0):
        self.size, self.scale, self.ratio = size, scale, ratio
        self.hflip, self.brightness, self.contrast, self.rotate = hflip, brightness, contrast, rotate
        self.jitter, self.blur = jitter, blur

    def _uniform(self, n, low, high, g, device):
        return low + (high - low) * torch.rand(n, generator=g, device=device)

    def __call__(self, images: torch.Tensor, masks: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``N×H×W×3`` uint8 images, ``N×H×W`` uint8 masks → ``N×3×S×S`` float, ``N×S×S`` int64."""
        n, h, w = masks.shape
        dev = images.device
        g = generator
        # 1. crop size: a fraction of the image area, with a random aspect ratio (log-uniform)
        area = self._uniform(n, *self.scale, g, dev)
        log_r = self._uniform(n, math.log(self.ratio[0]), math.log(self.ratio[1]), g, dev)
        aspect = torch.exp(log_r) * h / w  # in normalized coordinates
        cw = torch.sqrt(area * aspect).clamp(max=1.0)
        ch = torch.sqrt(area / aspect).clamp(max=1.0)
        # 2. crop centre anywhere that keeps the crop inside the image ([-1, 1] coordinates)
        cx = (1 - cw) * (2 * torch.rand(n, generator=g, device=dev) - 1)
        cy = (1 - ch) * (2 * torch.rand(n, generator=g, device=dev) - 1)
        flip = torch.where(torch.rand(n, generator=g, device=dev) < 0.5, -1.0, 1.0) if self.hflip \
            else torch.ones(n, device=dev)
        # the output square turned by a random angle (in output coordinates: the resized crop rotates);
        # no draw when rotate=0, so the other draws stay those of runs made before rotation existed
        angle = torch.deg2rad(self._uniform(n, -self.rotate, self.rotate, g, dev)) if self.rotate \
            else torch.zeros(n, device=dev)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.zeros(n, 2, 3, device=dev)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cw * flip * cos, -cw * flip * sin, cx
        theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = ch * sin, ch * cos, cy
        grid = F.affine_grid(theta, (n, 3, self.size, self.size), align_corners=False)
        # 3. sample: bilinear for the image, nearest for the mask (labels are never interpolated);
        #    where a turned grid leaves the image, the image is black and the mask void (as albumentations)
        x = F.grid_sample(images.permute(0, 3, 1, 2).float(), grid, mode="bilinear",
                          padding_mode="border", align_corners=False)
        y = F.grid_sample(masks[:, None].float(), grid, mode="nearest", padding_mode="border",
                          align_corners=False)[:, 0].long()
        if self.rotate:
            outside = (grid.abs() > 1).any(-1)
            x, y = x.masked_fill(outside[:, None], 0), y.masked_fill(outside, IGNORE_INDEX)
        # 4. photometric, on half the images (p=0.5): contrast scales, brightness shifts by a share
        #    of 255, then clip (albumentations' RandomBrightnessContrast with brightness_by_max)
        apply = (torch.rand(n, generator=g, device=dev) < 0.5).view(n, 1, 1, 1)
        c = self._uniform(n, 1 - self.contrast, 1 + self.contrast, g, dev).view(n, 1, 1, 1)
        b = self._uniform(n, -self.brightness, self.brightness, g, dev).view(n, 1, 1, 1) * 255
        x = torch.where(apply, (x * c + b).clamp(0, 255), x)
        # 5. colour jitter and blur, each drawing nothing when off (so older seeds replay exactly)
        if self.jitter:
            apply = (torch.rand(n, generator=g, device=dev) < 0.5).view(n, 1, 1, 1)
            s = self._uniform(n, 1 - self.jitter, 1 + self.jitter, g, dev)
            turns = self._uniform(n, -self.jitter / 4, self.jitter / 4, g, dev)
            x = torch.where(apply, shift_hue(saturate(x, s), turns), x)
        if self.blur:
            apply = (torch.rand(n, generator=g, device=dev) < self.blur).view(n, 1, 1, 1)
            sigma = self._uniform(n, *BLUR_SIGMA, g, dev)
            x = torch.where(apply, gaussian_blur(x, sigma), x)
        return normalize(x), y
