"""Segmentation models behind one factory: ``create_model(name, num_classes, **options)``.

Every model returns logits ``(N, num_classes, H, W)`` at the input resolution for any H×W
(inputs are padded inside ``forward`` and the logits cropped back). ``num_classes=1`` is a binary
model for ``BCEWithLogitsLoss``.
"""

from __future__ import annotations

import inspect
from os import PathLike

from torch import nn

from seglib.errors import ConfigError
from seglib.models.deeplabv3plus import DeepLabV3Plus
from seglib.models.unet import UPSAMPLING, Hourglass, UNet

_MODELS: dict[str, type[nn.Module]] = {"unet": UNet, "hourglass": Hourglass,
                                       "deeplabv3plus": DeepLabV3Plus}
MODEL_NAMES = tuple(_MODELS)

__all__ = ["MODEL_NAMES", "OPTION_RULES", "DeepLabV3Plus", "Hourglass", "UNet", "check_options", "create_model",
           "model_options", "whole"]


def whole(low: int, high: int):
    """A rule: None for an int (not a bool) in ``low..high``, else what is wrong."""
    return lambda v: (None if isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
                      else f"must be an integer in {low}..{high}")


OPTION_RULES = {  # the models' options, with the widths and depths of sane models (a checkpoint holds no others)
    "in_channels": whole(1, 64), "base_channels": lambda v: None if v is None else whole(1, 256)(v),
    "depth": whole(1, 6),
    "big": lambda v: None if isinstance(v, bool) else "must be True or False",
    "upsample": lambda v: None if v in UPSAMPLING else f"must be one of {', '.join(UPSAMPLING)}",
    "train_trunk": lambda v: None if isinstance(v, bool) else "must be True or False",
    "backbone": lambda v: None if isinstance(v, str) else "must be a backbone name",
    "output_stride": lambda v: None if v in (8, 16) and isinstance(v, int) and not isinstance(v, bool)
    else "must be 8 or 16",
    "pretrained": lambda v: None if v is None or isinstance(v, str | PathLike) else "must be None, 'imagenet' or "
    "the path of a ResNet state dict",
}


def model_options(name: str) -> tuple[str, ...]:
    """The keyword options that model ``name`` accepts (besides ``num_classes``)."""
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}: choose one of {', '.join(MODEL_NAMES)}")
    return tuple(p for p in inspect.signature(_MODELS[name]).parameters if p != "num_classes")


def check_options(name: str, options: dict) -> None:
    """Refuse options that model ``name`` does not take (``ConfigError``), before anything is built."""
    valid = model_options(name)
    if "pretrained" in options and "pretrained" not in valid:
        raise ConfigError(f"{name} has no ImageNet trunk: it always trains from scratch. Drop --pretrained "
                          "(pretrained=...), or use --model deeplabv3plus, whose ResNet trunk can start from "
                          "ImageNet weights")
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"{name} has no option {', '.join(unknown)}: valid options are "
                          f"{', '.join(valid)}")
    for key, value in options.items():  # what a checkpoint may hold: a model beyond it could not be loaded again
        problem = OPTION_RULES[key](value)
        if problem:
            raise ConfigError(f"{name}: {key}={value!r} {problem}")


def create_model(name: str, num_classes: int, **options) -> nn.Module:
    """Build model ``name`` (one of ``MODEL_NAMES``); bad names or options raise ``ConfigError``.

    Options: unet / hourglass take ``in_channels``, ``base_channels``, ``depth``, ``big``, ``upsample``;
    deeplabv3plus takes ``backbone``, ``output_stride``, ``pretrained``, ``train_trunk``.
    """
    check_options(name, options)
    return _MODELS[name](num_classes, **options)
