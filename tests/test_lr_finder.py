"""The LR range test sweeps exponentially, stops on divergence and restores the model."""

import math

import pytest
import torch

from seglib.lr_finder import lr_find


def test_sweeps_stops_on_divergence_and_restores_state():
    torch.manual_seed(0)
    w_true = torch.randn(8, 1)
    x = torch.randn(64, 8)
    batches = [(x, x @ w_true)]
    model = torch.nn.Linear(8, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.123)
    result = lr_find(model, batches, torch.nn.functional.mse_loss, opt, start_lr=1e-4, end_lr=100, steps=60)
    lrs = result["lrs"]
    assert lrs[0] == pytest.approx(1e-4)
    assert all(b / a == pytest.approx(lrs[1] / lrs[0]) for a, b in zip(lrs, lrs[1:]))
    assert len(lrs) < 60  # SGD on this problem diverges well before lr=100
    assert 1e-3 < result["suggestion"] < 2.0  # stable SGD needs lr < 2 / largest eigenvalue (~2)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert opt.param_groups[0]["lr"] == 0.123
    assert all(math.isfinite(v) for v in result["losses"][:-1])
