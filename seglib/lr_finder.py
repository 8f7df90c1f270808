"""The learning-rate range test (Smith 2017; fastai's ``lr_find``).

Train for a few dozen steps while the learning rate grows exponentially from tiny to huge, and
record the loss. The loss falls, flattens, then explodes; the suggested learning rate is where the
smoothed loss falls fastest (another common rule, ten times below the minimum, is often close).
The model and optimizer are restored afterwards.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import torch
from torch import nn

from seglib.errors import ConfigError


def lr_find(model: nn.Module, batches: Iterable, loss_fn, optimizer: torch.optim.Optimizer, *,
            start_lr: float = 1e-6, end_lr: float = 1.0, steps: int = 100, smooth: float = 0.9,
            diverge: float = 4.0) -> dict:
    """Run the range test; returns ``{"lrs", "losses", "suggestion"}``.

    ``batches`` yields ``(x, y)`` on any device; each is moved to the model's. ``losses`` are
    exponentially smoothed (factor ``smooth``); the test stops early once the smoothed loss exceeds
    ``diverge`` times its minimum, or when ``batches`` (read again for as many passes as ``steps`` needs)
    runs dry. ``suggestion`` is the learning rate at the steepest descent of the smoothed loss. The
    weights, the optimizer and train/eval mode are restored.
    """
    if not (0 < start_lr < end_lr and steps >= 2 and 0 <= smooth < 1 and diverge > 1):
        raise ConfigError(f"lr_find needs 0 < start_lr < end_lr, steps >= 2, 0 <= smooth < 1 and diverge > 1; got "
                          f"start_lr={start_lr}, end_lr={end_lr}, steps={steps}, smooth={smooth}, diverge={diverge}")
    was_training = model.training
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(optimizer.state_dict())
    factor = (end_lr / start_lr) ** (1 / max(1, steps - 1))
    lrs, losses, avg, best = [], [], 0.0, math.inf
    device = next(model.parameters()).device
    model.train()
    step = 0
    while step < steps:
        before = step
        for x, y in batches:
            lr = start_lr * factor**step
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_mult", 1.0)  # a slower trunk stays proportionally slower
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = loss.item()  # the range test needs each value on the host
            avg = smooth * avg + (1 - smooth) * value
            smoothed = avg / (1 - smooth ** (step + 1))
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            step += 1
            # diverged: above the minimum by (diverge - 1) times its size (diverge times it, for a positive loss)
            if step >= steps or not math.isfinite(smoothed) or smoothed - best > (diverge - 1) * abs(best):
                step = steps
                break
        if step == before:  # a pass without a batch: an empty loader, or a one-shot iterator used up
            if not lrs:
                raise ConfigError("lr_find: batches yielded no batch; pass a DataLoader or a list of (x, y)")
            break
    model.load_state_dict(saved_model)
    optimizer.load_state_dict(saved_opt)
    model.train(was_training)
    slopes = [(losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i]))
              for i in range(len(lrs) - 1) if math.isfinite(losses[i + 1])]
    if not slopes:
        raise ConfigError(f"lr_find: {sum(map(math.isfinite, losses))} finite loss(es) in {len(lrs)} step(s), too few "
                          "to suggest a learning rate; pass more batches, and check that the loss is finite at "
                          f"lr {start_lr:g}")
    suggestion = lrs[min(range(len(slopes)), key=slopes.__getitem__)]
    return {"lrs": lrs, "losses": losses, "suggestion": suggestion}
