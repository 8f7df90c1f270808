"""Optimizers over parameter groups: a DeepLabV3+ trunk may learn at a fraction of the rate."""

from __future__ import annotations

import torch
from torch import nn

from seglib.errors import ConfigError


def param_groups(model: nn.Module, lr: float, trunk_lr_mult: float = 1.0) -> list[dict]:
    """Trainable parameters as optimizer groups: the model's ``backbone`` (the DeepLabV3+ trunk) at
    ``lr × trunk_lr_mult``, the rest at ``lr`` (always the last group: the one logged as "lr"). Each
    group keeps its ``lr_mult`` for the LR finder, which sets rates outright (a schedule multiplies each
    group's own rate, so it keeps the ratio by itself)."""
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


def build_optimizer(cfg, model: nn.Module, device) -> torch.optim.Optimizer:
    """AdamW (fused on CUDA) or SGD with ``cfg.momentum`` (Nesterov's unless ``cfg.nesterov`` is off), over
    trainable parameters only (grouped by :func:`param_groups`)."""
    params = param_groups(model, cfg.lr, cfg.trunk_lr_mult)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    fused = torch.device(device).type == "cuda"
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
