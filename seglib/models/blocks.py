"""Building blocks shared by the models, and the option checks their constructors use.

Notebook 03 builds ``DoubleConv``, ``Down`` and ``Up`` by hand and shows they equal these.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import nn

from seglib.errors import ConfigError


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3,
                 dilation: int = 1) -> nn.Sequential:
    """Conv (no bias: BatchNorm has one) → BatchNorm → ReLU, padded to keep the spatial size."""
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation,
                  bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DoubleConv(nn.Sequential):
    """Two 3×3 conv → BatchNorm → ReLU layers: the UNet's basic block (size preserved); the first one
    outputs ``mid_channels`` (default ``out_channels``)."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None):
        mid = mid_channels or out_channels
        super().__init__(*conv_bn_relu(in_channels, mid), *conv_bn_relu(mid, out_channels))


class Down(nn.Sequential):
    """2×2 max-pool (halves H and W) followed by a ``DoubleConv``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))


class Up(nn.Module):
    """2×2 transposed conv (doubles H and W, halves channels), optional skip concat, ``DoubleConv``.

    ``skip_channels=0`` builds the Hourglass variant: the block sees only the upsampled features.
    ``bilinear=True`` doubles H and W by bilinear interpolation instead (no weights, channels kept), and the
    ``DoubleConv`` halves the channels of the concatenation in its first conv (milesial's Pytorch-UNet).
    """

    def __init__(self, in_channels: int, out_channels: int, skip_channels: int, *, bilinear: bool = False):
        super().__init__()
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            self.conv = DoubleConv(in_channels + skip_channels, out_channels, (in_channels + skip_channels) // 2)
        else:
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
            self.conv = DoubleConv(in_channels // 2 + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            x = torch.cat([skip, x], dim=1)
        return self.conv(x)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom and right (repeating edge pixels) so that H and W are multiples of ``multiple``.

    Models call this first and crop their logits back to the input size, so any H×W works.
    """
    pad_h, pad_w = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    if not (pad_h or pad_w):
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


def check_int(name: str, value, minimum: int) -> int:
    """``value`` if it is an int ≥ ``minimum``, else a ``ConfigError`` naming the valid range."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r} is invalid: use an integer >= {minimum}")
    return value


def check_choice(name: str, value, choices: Collection):
    """``value`` if it is one of ``choices``, else a ``ConfigError`` listing them."""
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{name}={value!r} is not supported: choose one of {valid}")
    return value
