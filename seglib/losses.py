"""Losses for segmentation, all honouring the ignore index, and sums of them.

``build_loss("ce+dice", num_classes=12)`` returns one callable ``loss(logits, target)``. For a
single output channel (binary tasks) ``"bce"`` is BCE-with-logits on the foreground channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seglib.errors import ConfigError
from seglib.masks import IGNORE_INDEX


class CrossEntropy(nn.Module):
    """Cross-entropy over classes with ``ignore_index`` and optional class weights."""

    def __init__(self, ignore_index: int = IGNORE_INDEX, weight: torch.Tensor | None = None):
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits, target):
        ce = F.cross_entropy(logits.float(), target, weight=self.weight, ignore_index=self.ignore_index,
                             reduction="none")
        return mean_over_valid(ce, target, self.ignore_index, self.weight)


def mean_over_valid(loss: torch.Tensor, target: torch.Tensor, ignore_index: int,
                    weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pixel ``loss`` summed over the valid pixels and divided by their count (or summed class
    weights): ``F.cross_entropy``'s mean, except that a batch with no valid pixel gives 0, not NaN."""
    valid = target != ignore_index
    count = valid.float() if weight is None else weight[torch.where(valid, target, 0)] * valid
    return torch.where(valid, loss, 0).sum() / count.sum().clamp_min(1e-12)


class BinaryCrossEntropy(nn.Module):
    """BCE-with-logits for one foreground channel; targets are 0/1, ignored pixels are skipped."""

    def __init__(self, ignore_index: int = IGNORE_INDEX, pos_weight: float | None = None):
        super().__init__()
        self.ignore_index, self.pos_weight = ignore_index, pos_weight

    def forward(self, logits, target):
        pos_weight = None if self.pos_weight is None else logits.new_tensor(self.pos_weight)
        loss = F.binary_cross_entropy_with_logits(logits[:, 0].float(), (target == 1).float(),
                                                  pos_weight=pos_weight, reduction="none")
        return mean_over_valid(loss, target, self.ignore_index)


class FocalLoss(nn.Module):
    """Per-pixel focal loss ``(1 - p_t)^gamma * CE`` (Lin et al. 2017), averaged over valid pixels.

    The focal factor weighs each pixel by its own confidence. (One reference project applied it
    to the batch-mean CE instead, which only rescales the loss.)
    """

    def __init__(self, gamma: float = 2.0, ignore_index: int = IGNORE_INDEX, weight: torch.Tensor | None = None):
        super().__init__()
        self.gamma, self.ignore_index = gamma, ignore_index
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits, target):
        logits = logits.float()
        ce = F.cross_entropy(logits, target, weight=self.weight, ignore_index=self.ignore_index,
                             reduction="none")
        valid = target != self.ignore_index
        safe = torch.where(valid, target, 0)
        p_t = torch.where(valid, logits.softmax(1).gather(1, safe[:, None])[:, 0], 0)
        # clamped: for gamma < 1 the factor's derivative is infinite at p_t = 1 (a confident pixel), 0 * inf = NaN
        factor = (1 - p_t).clamp_min(1e-6).pow(self.gamma)
        return mean_over_valid(factor * ce, target, self.ignore_index, self.weight)


class DiceLoss(nn.Module):
    """``1 - soft Dice``, averaged over classes present in the batch; ignored pixels excluded."""

    def __init__(self, ignore_index: int = IGNORE_INDEX, eps: float = 1.0):
        super().__init__()
        self.ignore_index, self.eps = ignore_index, eps

    def forward(self, logits, target):
        logits = logits.float()
        valid = (target != self.ignore_index)[:, None].float()
        if logits.shape[1] == 1:  # binary: foreground and background channels
            fg = logits.sigmoid()
            probs = torch.cat([1 - fg, fg], 1)
        else:
            probs = logits.softmax(1)
        classes = torch.arange(probs.shape[1], device=target.device).view(1, -1, 1, 1)
        one_hot = (target[:, None] == classes).float() * valid  # F.one_hot checks its range on the host
        probs = probs * valid
        dims = (0, 2, 3)
        inter = (probs * one_hot).sum(dims)
        denom = probs.sum(dims) + one_hot.sum(dims)
        dice = (2 * inter + self.eps) / (denom + self.eps)
        present = (one_hot.sum(dims) > 0).float()  # a mask, not an index: no host sync
        return ((1 - dice) * present).sum() / present.sum().clamp_min(1)


class SumOfLosses(nn.Module):
    """``sum(weight * loss)`` of several losses."""

    def __init__(self, losses: list[nn.Module], weights: list[float] | None = None):
        super().__init__()
        self.losses = nn.ModuleList(losses)
        self.weights = weights or [1.0] * len(losses)

    def forward(self, logits, target):
        return sum(w * loss(logits, target) for w, loss in zip(self.weights, self.losses))


LOSS_NAMES = ("ce", "bce", "dice", "focal")


def build_loss(spec: str, num_classes: int, ignore_index: int = IGNORE_INDEX,
               class_weights: torch.Tensor | None = None) -> nn.Module:
    """A loss from a name or a sum of names, e.g. ``"ce"``, ``"bce+dice"``, ``"focal+dice"``.

    ``num_classes=1`` means a single-logit binary model: use ``bce`` (``ce`` and ``focal`` need
    at least two output channels).
    """
    parts = [p.strip() for p in spec.split("+")]
    losses = []
    for name in parts:
        if name not in LOSS_NAMES:
            raise ConfigError(f"unknown loss {name!r}; use {', '.join(LOSS_NAMES)} or a sum like 'ce+dice'")
        if name in ("ce", "focal") and num_classes == 1:
            raise ConfigError(f"loss {name!r} needs 2+ output channels; use 'bce' for a 1-channel model")
        if name == "bce" and num_classes != 1:
            raise ConfigError("loss 'bce' needs a 1-channel model (num_classes=1); use 'ce' otherwise")
        losses.append({"ce": lambda: CrossEntropy(ignore_index, class_weights),
                       "bce": lambda: BinaryCrossEntropy(ignore_index),
                       "dice": lambda: DiceLoss(ignore_index),
                       "focal": lambda: FocalLoss(2.0, ignore_index, class_weights)}[name]())
    return losses[0] if len(losses) == 1 else SumOfLosses(losses)
