"""An exponential moving average of a model's weights (validated and saved instead of the weights)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from seglib.parallel import unwrap


class WeightEMA:
    """An exponential moving average of a model's weights, updated after every optimizer step.

    ``ema = d·ema + (1 − d)·w`` for parameters and floating-point buffers (BatchNorm statistics);
    integer buffers are copied. The decay warms up as ``min(d, (1 + t) / (10 + t))`` at step ``t``
    (as timm does), so the average does not drag the random initial weights along for thousands of
    steps. The updates are ``foreach`` ops on the device: no host synchronisation.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.steps = decay, 0
        self.model = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)

    def _pairs(self, model: nn.Module):
        ema, live = self.model.state_dict(keep_vars=True), unwrap(model).state_dict(keep_vars=True)
        return [(ema[k], live[k]) for k in ema]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        self.steps += 1
        pairs = self._pairs(model)
        floats = [(e, w) for e, w in pairs if e.is_floating_point()]
        torch._foreach_lerp_([e for e, _ in floats], [w.detach() for _, w in floats], 1 - d)
        for e, w in pairs:
            if not e.is_floating_point():
                e.copy_(w)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.steps = state["steps"]
