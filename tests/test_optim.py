"""The optimizers a TrainConfig asks for (the trunk's learning rate inside a training run: test_engine.py)."""

import pytest
import torch
from torch import nn

from seglib.models import create_model
from seglib.optim import build_optimizer
from seglib.train_config import TrainConfig


class TrunkAndHead(nn.Module):
    """The shape param_groups looks for in a DeepLabV3+: a ``backbone``, and the rest; one layer is frozen."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2).requires_grad_(False)


def ids(params) -> list[int]:
    return [id(p) for p in params]


def test_sgd_is_nesterov_momentum_with_the_weight_decay_in_every_group():
    model = TrunkAndHead()
    cfg = TrainConfig(model="deeplabv3plus", optimizer="sgd", lr=0.1, weight_decay=3e-3, trunk_lr_mult=0.5)
    optimizer = build_optimizer(cfg, model, "cpu")
    assert type(optimizer) is torch.optim.SGD
    trunk, rest = optimizer.param_groups
    assert ids(trunk["params"]) == ids(model.backbone.parameters())
    assert ids(rest["params"]) == ids(model.head.parameters())  # frozen weights are in no group
    assert (trunk["lr"], rest["lr"]) == (pytest.approx(0.05), 0.1)
    for group in (trunk, rest):  # biases too: the decay is not limited to some of the parameters
        assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 3e-3)


def test_sgd_takes_the_reference_projects_momentum_plain_or_nesterov():
    model = create_model("unet", 2, base_channels=4, depth=2)
    for momentum, nesterov in ((0.99, False), (0.5, True), (0.0, False)):  # the CamVid project's: 0.99, plain
        cfg = TrainConfig(optimizer="sgd", momentum=momentum, nesterov=nesterov)
        (group,) = build_optimizer(cfg, model, "cpu").param_groups
        assert (group["momentum"], group["nesterov"]) == (momentum, nesterov)


def test_adamw_gets_the_weight_decay_of_the_config():
    model = create_model("unet", 2, base_channels=4, depth=2)
    optimizer = build_optimizer(TrainConfig(optimizer="adamw", lr=2e-3, weight_decay=0.02), model, "cpu")
    assert type(optimizer) is torch.optim.AdamW
    (group,) = optimizer.param_groups
    assert ids(group["params"]) == ids(model.parameters())
    assert (group["lr"], group["weight_decay"]) == (2e-3, 0.02)
    assert not group["fused"]  # fused AdamW is for CUDA tensors
