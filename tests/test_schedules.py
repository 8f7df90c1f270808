"""Schedules step per iteration as documented: warmup, then decay to zero at the last step."""

import math

import pytest
import torch

from seglib.errors import ConfigError
from seglib.schedules import build_scheduler, lr_factor


@pytest.mark.parametrize("name", ["poly", "cosine"])
def test_warmup_then_decay(name):
    total, warm = 100, 10
    f = [lr_factor(s, total, name, warm) for s in range(total + 1)]
    assert f[0] == pytest.approx(0.01) and f[warm] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(f[:warm], f[1:warm + 1]))         # rising
    assert all(a >= b for a, b in zip(f[warm:], f[warm + 1:]))          # falling
    assert f[total] == pytest.approx(0.0, abs=1e-12)


def test_poly_and_cosine_values():
    assert lr_factor(50, 100, "poly") == pytest.approx(0.5 ** 0.9)
    assert lr_factor(50, 100, "cosine") == pytest.approx(0.5)
    assert lr_factor(30, 100, "onecycle") == pytest.approx(1.0)  # peak after a 30 % warmup
    assert lr_factor(65, 100, "onecycle") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_scheduler_steps_per_iteration():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = build_scheduler(opt, "cosine", total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.001) and lrs[2] == pytest.approx(0.1)
    assert lrs == sorted(lrs[:3]) + sorted(lrs[3:], reverse=True)


def test_unknown_schedule():
    with pytest.raises(ConfigError, match="poly, cosine, onecycle, constant"):
        lr_factor(0, 10, "step")
