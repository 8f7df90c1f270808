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
    with pytest.raises(ConfigError, match="poly, cosine, onecycle, step, constant"):
        lr_factor(0, 10, "exponential")
    with pytest.raises(ConfigError, match="needs its period"):
        lr_factor(0, 10, "step")


def run_lrs(sched, opt, steps):
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_step_is_torchs_steplr_and_a_cosine_floor_is_cosine_annealings_eta_min():
    # the Penn-Fudan project's MultiStepLR([60]) is StepLR(60) within 120 epochs; the person-mask project's
    # CosineAnnealingLR(eta_min=1e-5) is cosine with a floor
    ours, theirs = (torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1) for _ in range(2))
    steplr = torch.optim.lr_scheduler.StepLR(theirs, step_size=7, gamma=0.3)
    assert run_lrs(build_scheduler(ours, "step", 40, step_every=7, gamma=0.3), ours, 40) == \
        pytest.approx(run_lrs(steplr, theirs, 40), rel=1e-12)
    ours, theirs = (torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3) for _ in range(2))
    annealing = torch.optim.lr_scheduler.CosineAnnealingLR(theirs, T_max=50, eta_min=1e-5)
    lrs = run_lrs(build_scheduler(ours, "cosine", 50, floor=1e-5 / 1e-3), ours, 51)
    assert lrs == pytest.approx(run_lrs(annealing, theirs, 51), rel=1e-9)
    assert lrs[-1] == pytest.approx(1e-5) and lr_factor(100, 100, "poly", floor=0.2) == pytest.approx(0.2)
