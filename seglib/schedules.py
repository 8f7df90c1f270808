"""Learning-rate schedules stepped once per iteration, each with a linear warmup.

``lr(step) = base_lr * factor(step)``; ``factor`` rises linearly from ``warmup_start`` to 1 over
``warmup_steps``, then decays to ``floor`` at ``total_steps``: ``poly`` as ``(1 - t) ** 0.9`` (DeepLab,
torchvision), ``cosine`` as ``(1 + cos(pi t)) / 2`` (``floor``: ``CosineAnnealingLR``'s ``eta_min`` over the
base rate), ``onecycle`` as cosine from the peak with a longer (30 %) warmup; ``step`` multiplies it by
``gamma`` every ``step_every`` iterations (``StepLR``, ``MultiStepLR`` with one milestone), ``constant`` not at all.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from seglib.errors import ConfigError

SCHEDULES = ("poly", "cosine", "onecycle", "step", "constant")


def lr_factor(step: int, total_steps: int, name: str = "cosine", warmup_steps: int = 0,
              warmup_start: float = 0.01, *, floor: float = 0.0, step_every: int | None = None,
              gamma: float = 0.1) -> float:
    """The multiplier of the base learning rate at iteration ``step`` (0-based)."""
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")
    if name == "step" and not step_every:
        raise ConfigError("schedule 'step' needs its period: step_every (--step-epochs N)")
    if name == "onecycle":
        warmup_steps = max(warmup_steps, int(0.3 * total_steps))
    if step < warmup_steps:
        return warmup_start + (1 - warmup_start) * step / warmup_steps
    t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if name == "poly":
        return floor + (1 - floor) * (1 - t) ** 0.9
    if name in ("cosine", "onecycle"):
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    if name == "step":
        return gamma ** (step // step_every)
    return 1.0


def build_scheduler(optimizer: Optimizer, name: str, total_steps: int, warmup_steps: int = 0, *,
                    floor: float = 0.0, step_every: int | None = None, gamma: float = 0.1) -> LambdaLR:
    """A ``LambdaLR`` to call ``.step()`` after every optimizer step."""
    shape = {"floor": floor, "step_every": step_every, "gamma": gamma}
    lr_factor(0, total_steps, name, warmup_steps, **shape)  # validate the name now
    return LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, name, warmup_steps, **shape))


def follow_schedule(scheduler: LambdaLR) -> None:
    """Set each parameter group's learning rate to the schedule's at the step ``scheduler`` has reached (after
    ``load_state_dict``: the saved rates follow the curve of the run that saved them, which a resume with
    another ``--epochs`` has changed)."""
    for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]  # what get_last_lr() reads
