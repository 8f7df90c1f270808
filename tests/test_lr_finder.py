"""The LR range test sweeps exponentially, stops on divergence and restores the model."""

import math

import pytest
import torch

from seglib.errors import ConfigError
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


class OnHost:
    """A batch tensor that is unusable until moved, like a CPU batch meeting a model on a GPU."""

    def __init__(self, tensor, moves):
        self.tensor, self.moves = tensor, moves

    def to(self, device, non_blocking=False):
        self.moves.append(torch.device(device))
        return self.tensor.to(device, non_blocking=non_blocking)


def test_moves_each_batch_to_the_models_device():
    moves = []
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = lr_find(model, [(OnHost(x, moves), OnHost(y, moves))] * 3, torch.nn.functional.mse_loss, opt,
                     steps=5)
    assert len(result["lrs"]) == 5
    assert moves == [torch.device("cpu")] * 10  # x and y of every step, to where the parameters live


def test_a_one_shot_or_empty_iterable_ends_the_test_instead_of_hanging():
    # it used to loop for ever: the inner for-loop over a used-up generator never advanced the step
    torch.manual_seed(0)
    x = torch.randn(16, 8)
    model = torch.nn.Linear(8, 1).eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    one_shot = ((x, x.sum(1, keepdim=True)) for _ in range(3))
    result = lr_find(model, one_shot, torch.nn.functional.mse_loss, opt, start_lr=1e-5, end_lr=1e-3, steps=10)
    assert len(result["lrs"]) == 3  # what the generator held
    assert not model.training  # the mode it came in
    with pytest.raises(ConfigError, match="yielded no batch"):
        lr_find(model, [], torch.nn.functional.mse_loss, opt, steps=10)


@pytest.mark.parametrize("bad", [dict(start_lr=1e-3, end_lr=1e-3), dict(start_lr=0.0), dict(steps=1),
                                 dict(smooth=1.0), dict(diverge=1.0)])
def test_settings_that_cannot_sweep_are_refused(bad):
    model = torch.nn.Linear(4, 1)
    with pytest.raises(ConfigError, match="lr_find needs 0 < start_lr < end_lr"):
        lr_find(model, [(torch.randn(4, 4), torch.randn(4, 1))], torch.nn.functional.mse_loss,
                torch.optim.SGD(model.parameters(), lr=0.1), **bad)


def test_a_loss_that_is_never_finite_suggests_nothing():
    model = torch.nn.Linear(4, 1)
    nan = lambda out, y: out.sum() * float("nan")  # noqa: E731
    with pytest.raises(ConfigError, match="0 finite loss"):
        lr_find(model, [(torch.randn(4, 4), torch.randn(4, 1))] * 5, nan, torch.optim.SGD(model.parameters(), lr=0.1))


def test_a_negative_loss_is_swept_until_it_diverges():
    """The divergence rule once read smoothed > 4 x best, always true for a negative minimum: one step only."""
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    model = torch.nn.Linear(8, 1)
    target = x @ torch.randn(8, 1)
    shifted = lambda out, y: torch.nn.functional.mse_loss(out, y) - 100.0  # noqa: E731
    result = lr_find(model, [(x, target)], shifted, torch.optim.SGD(model.parameters(), lr=0.1),
                     start_lr=1e-4, end_lr=100, steps=60)
    assert 10 < len(result["lrs"]) < 60 and 1e-3 < result["suggestion"] < 2.0  # as for the unshifted loss
