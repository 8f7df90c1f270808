"""ImageNet weights for the ResNet trunks, through torchvision's weights API.

``pretrained="imagenet"`` reads torchvision's cache (``<torch hub dir>/checkpoints``) and, when the
file is not there, downloads it with a progress bar (``ResNet50_Weights.IMAGENET1K_V1.get_state_dict``),
giving up after :data:`CONNECT_TIMEOUT` seconds without an answer. Offline and uncached, it stops with
one line that says how to get the file. A path reads a state dict file instead.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from textwrap import shorten
from typing import TYPE_CHECKING

import torch

from seglib.errors import ConfigError

if TYPE_CHECKING:
    import torchvision

CONNECT_TIMEOUT = 15.0  # seconds: offline, a download fails this fast instead of hanging


def imagenet_weights(backbone: str) -> torchvision.models.WeightsEnum:
    """torchvision's original ImageNet weights of ``backbone`` (``IMAGENET1K_V1``)."""
    import torchvision  # imported when needed: it takes seconds

    return torchvision.models.get_model_weights(backbone).IMAGENET1K_V1


def imagenet_weights_file(backbone: str) -> Path:
    """Where torchvision caches the ImageNet weights of ``backbone``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / imagenet_weights(backbone).url.rsplit("/", 1)[-1]


@contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """New sockets give up after ``seconds`` without an answer (torch.hub's download sets none)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def download_imagenet_state_dict(backbone: str, progress: bool = True) -> dict[str, torch.Tensor]:
    """Download the ImageNet weights of ``backbone`` into torchvision's cache (hash checked) and read them."""
    path = imagenet_weights_file(backbone)
    try:
        with socket_timeout(CONNECT_TIMEOUT):
            return imagenet_weights(backbone).get_state_dict(progress=progress, check_hash=True,
                                                             weights_only=True)
    except (OSError, RuntimeError) as error:  # no network, refused, timed out, cut off, bad hash
        raise ConfigError(
            f"ImageNet weights for {backbone} are not cached and could not be downloaded ({error}). Fix: run once "
            f"with a network, or copy {path.name} (from {imagenet_weights(backbone).url}) into {path.parent}/, "
            "or pass --pretrained PATH (pretrained=PATH); or drop --pretrained to train from scratch") from error


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict saved with ``torch.save``; a missing or unreadable file is a ``ConfigError``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pretrained={str(path)!r}: no such file. Pass None (train from scratch), 'imagenet', "
                          "or the path of a torchvision ResNet state dict")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and weights_only errors all mean "not a state dict"
        raise ConfigError(f"{path}: cannot be read as a state dict ({shorten(str(error), 200)}); pass a file "
                          "written by torch.save(resnet.state_dict(), path), or --pretrained imagenet") from error


def trunk_state_dict(backbone: str, pretrained: str | Path, progress: bool = True) -> dict[str, torch.Tensor]:
    """The weights ``pretrained`` names: ``"imagenet"`` (cache, else download) or a file."""
    if pretrained != "imagenet":
        return read_state_dict(pretrained)
    cached = imagenet_weights_file(backbone)
    return read_state_dict(cached) if cached.is_file() else download_imagenet_state_dict(backbone, progress)


def load_trunk_weights(resnet: torch.nn.Module, backbone: str, pretrained: str | Path) -> None:
    """Load ``pretrained`` into a torchvision ``resnet``; weights of another architecture are a ``ConfigError``.
    The classifier (``fc``), which the trunk never uses, is not read: a ResNet fine-tuned for other classes, or
    one saved without its head, loads too."""
    own_head = {k: v for k, v in resnet.state_dict().items() if k.startswith("fc.")}
    state = {k: v for k, v in trunk_state_dict(backbone, pretrained).items() if not k.startswith("fc.")}
    try:
        resnet.load_state_dict({**state, **own_head})
    except RuntimeError as error:  # wrong or missing keys, wrong shapes
        raise ConfigError(f"pretrained={str(pretrained)!r} does not fit torchvision's {backbone} (weights of "
                          f"another architecture?): {shorten(str(error), 300)}") from error
