"""UNet (Ronneberger et al., 2015) and the Hourglass: the same network without skip connections.

Both pad the input to a multiple of ``2**depth`` and crop the logits back, so any H×W works.
"""

from __future__ import annotations

import torch
from torch import nn

from seglib.errors import ConfigError
from seglib.models.blocks import DoubleConv, Down, Up, check_choice, check_int, pad_to_multiple

UPSAMPLING = ("transpose", "bilinear")  # the decoder's way up: learned 2x2 transposed convs, or interpolation


class UNet(nn.Module):
    """Encoder–decoder with concatenation skips; widths ``base_channels * 2**level``.

    ``depth`` is the number of poolings. The defaults (base 32, depth 4) give about 7.8M
    parameters; ``big=True`` means base 64, the paper's widths 64..1024 (about 31.0M).
    ``upsample="bilinear"`` is milesial's ``bilinear=True`` variant: the decoder interpolates instead of
    learning transposed convolutions, and the bottleneck and each decoder level have half the channels
    (about 17.3M at base 64). Returns logits ``(N, num_classes, H, W)``.
    """

    skips = True

    def __init__(self, num_classes: int, *, in_channels: int = 3, base_channels: int | None = None,
                 depth: int = 4, big: bool = False, upsample: str = "transpose"):
        super().__init__()
        check_int("num_classes", num_classes, 1)
        check_int("in_channels", in_channels, 1)
        check_int("depth", depth, 1)
        check_choice("big", big, (False, True))
        check_choice("upsample", upsample, UPSAMPLING)
        if big and base_channels not in (None, 64):
            raise ConfigError(f"big=True means base_channels=64, not {base_channels!r}: "
                              "pass one or the other")
        base = check_int("base_channels", base_channels if base_channels is not None
                         else 64 if big else 32, 1)
        widths = [base * 2**level for level in range(depth + 1)]
        self.depth = depth
        self.inc = DoubleConv(in_channels, widths[0])
        skips = widths[:depth] if self.skips else [0] * depth
        if upsample == "transpose":
            self.downs = nn.ModuleList(Down(widths[i], widths[i + 1]) for i in range(depth))
            self.ups = nn.ModuleList(Up(widths[i + 1], widths[i], skips[i]) for i in reversed(range(depth)))
        else:  # level i's decoder gets level i's width from below and hands half of it (the last: all) up
            self.downs = nn.ModuleList(Down(widths[i], widths[min(i + 1, depth - 1)]) for i in range(depth))
            self.ups = nn.ModuleList(Up(widths[i], widths[max(i - 1, 0)], skips[i], bilinear=True)
                                     for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        features = [self.inc(pad_to_multiple(x, 2**self.depth))]
        for down in self.downs:
            features.append(down(features[-1]))
        x = features.pop()
        for up in self.ups:
            skip = features.pop()
            x = up(x, skip if self.skips else None)
        return self.head(x)[..., :h, :w]


class Hourglass(UNet):
    """The ``UNet`` without skip connections: decoder blocks see only the upsampled features."""

    skips = False
