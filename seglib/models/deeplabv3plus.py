"""DeepLabV3+ (Chen et al., 2018): a dilated ResNet trunk, ASPP, and a light decoder.

``pretrained="imagenet"`` loads torchvision's ImageNet weights into the trunk: from the torch hub
cache, downloaded there when missing (see :mod:`seglib.models.pretrained`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from seglib.errors import ConfigError
from seglib.models.blocks import check_choice, check_int, conv_bn_relu, pad_to_multiple
from seglib.models.pretrained import load_trunk_weights

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
OUTPUT_STRIDES = (8, 16)


def dilate(layer: nn.Sequential, dilation: int, previous_dilation: int) -> None:
    """Make a stride-2 ResNet stage keep its input size: stride 1 and atrous 3×3 convs.

    Each 3×3 conv keeps the spacing its taps had on the input image: the conv that carried the
    stride keeps ``previous_dilation``, every conv after it gets ``dilation``, so the receptive field
    is the undilated network's. For Bottleneck blocks this is torchvision's
    ``replace_stride_with_dilation``; it refuses BasicBlock, whose second 3×3 conv comes after the
    stride. Weights are unchanged.
    """
    for index, block in enumerate(layer):
        d = previous_dilation if index == 0 else dilation
        for conv in block.modules():
            if isinstance(conv, nn.Conv2d):
                strided = conv.stride != (1, 1)
                conv.stride = (1, 1)
                if conv.kernel_size == (3, 3):
                    conv.dilation, conv.padding = (d, d), (d, d)
                if strided:
                    d = dilation  # the convs after the stride worked on a map half as fine


class ResNetTrunk(nn.Module):
    """A torchvision ResNet without its classifier; returns (layer1 features, layer4 features)."""

    def __init__(self, backbone: str, output_stride: int, pretrained: str | Path | None):
        super().__init__()
        import torchvision  # here, not at the top: importing it takes seconds that `seglib --help` need not wait

        resnet = getattr(torchvision.models, backbone)(weights=None)
        if pretrained is not None:
            load_trunk_weights(resnet, backbone, pretrained)
        if output_stride == 8:
            dilate(resnet.layer3, 2, 1)
            dilate(resnet.layer4, 4, 2)
        else:
            dilate(resnet.layer4, 2, 1)
        self.conv1, self.bn1, self.relu, self.maxpool = (resnet.conv1, resnet.bn1, resnet.relu,
                                                         resnet.maxpool)
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4
        self.low_channels = 64 * type(resnet.layer1[0]).expansion
        self.out_channels = resnet.fc.in_features

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        return low, self.layer4(self.layer3(self.layer2(low)))


class ImagePooling(nn.Sequential):
    """ASPP's global branch: average the whole map, 1×1 conv, ReLU, broadcast back.

    No BatchNorm: on a 1×1 map it would fail for batch size 1 in training mode.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1),
                         nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).expand(-1, -1, *x.shape[-2:])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1×1, three atrous 3×3, image pooling; concat; 1×1."""

    def __init__(self, in_channels: int, rates: tuple[int, int, int], out_channels: int = 256):
        super().__init__()
        self.branches = nn.ModuleList([
            conv_bn_relu(in_channels, out_channels, kernel_size=1),
            *(conv_bn_relu(in_channels, out_channels, dilation=rate) for rate in rates),
            ImagePooling(in_channels, out_channels),
        ])
        self.project = nn.Sequential(*conv_bn_relu(5 * out_channels, out_channels, kernel_size=1),
                                     nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class Decoder(nn.Module):
    """Upsample ASPP output to layer1's size, concat a 48-channel projection of layer1, refine."""

    def __init__(self, low_channels: int, num_classes: int, channels: int = 256):
        super().__init__()
        self.reduce = conv_bn_relu(low_channels, 48, kernel_size=1)
        self.fuse = nn.Sequential(*conv_bn_relu(channels + 48, channels),
                                  *conv_bn_relu(channels, channels))
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([x, self.reduce(low)], dim=1)))


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ on a torchvision ResNet; returns logits ``(N, num_classes, H, W)``.

    ``backbone`` defaults to resnet18: trained from scratch (the default) on the small datasets
    of this workbook, deeper trunks gain little and resnet18 runs about 2–3× faster than resnet50.
    ``output_stride`` 16 dilates layer4 (ASPP rates 6/12/18); 8 also dilates layer3 (rates
    12/24/36): with resnet18 at 512 px, 2.1× the multiply-adds in all (3× in the trunk, 4× in ASPP; the
    decoder stays at stride 4). ``pretrained``: None (from scratch), ``"imagenet"``
    (torchvision's weights: the cache, else a download; inputs then need ImageNet normalisation) or the
    path of a torchvision ResNet state dict. ``train_trunk=False`` freezes the backbone: no
    gradients, and its BatchNorm stays in eval mode during ``train()``.
    """

    def __init__(self, num_classes: int, *, backbone: str = "resnet18", output_stride: int = 16,
                 pretrained: str | Path | None = None, train_trunk: bool = True):
        super().__init__()
        check_int("num_classes", num_classes, 1)
        check_choice("backbone", backbone, BACKBONES)
        check_choice("output_stride", output_stride, OUTPUT_STRIDES)
        check_choice("train_trunk", train_trunk, (True, False))
        if not (pretrained is None or isinstance(pretrained, (str, Path))):
            raise ConfigError(f"pretrained={pretrained!r} is invalid: use None, 'imagenet' or "
                              "a path")
        self.output_stride = output_stride
        self.train_trunk = train_trunk
        self.backbone = ResNetTrunk(backbone, output_stride, pretrained)
        self.backbone.requires_grad_(train_trunk)
        rates = tuple(r * 16 // output_stride for r in (6, 12, 18))
        self.aspp = ASPP(self.backbone.out_channels, rates)
        self.decoder = Decoder(self.backbone.low_channels, num_classes)

    def train(self, mode: bool = True) -> DeepLabV3Plus:
        """Set training mode, keeping a frozen backbone (``train_trunk=False``) in eval mode."""
        super().train(mode)
        if not self.train_trunk:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.output_stride)
        low, high = self.backbone(x)
        logits = self.decoder(self.aspp(high), low)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear",
                             align_corners=False)[..., :h, :w]
