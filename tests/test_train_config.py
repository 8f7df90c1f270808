"""TrainConfig: the flags made from its fields, old saved configs, and the rules between fields."""

import argparse

import pytest

from seglib.errors import ConfigError
from seglib.train_config import TrainConfig, add_train_arguments, given_options


def parsed(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return given_options(parser.parse_args(list(argv)))


def test_flags_given_as_zero_or_false_are_kept():
    assert parsed("--seed", "0", "--no-channels-last", "--rotate", "0") == {"seed": 0, "channels_last": False,
                                                                           "rotate": 0.0}
    assert parsed() == {}  # nothing given: every field keeps the config's default


def test_a_saved_config_of_an_older_version_is_renamed_and_trimmed():
    saved = {"dataset": "synthetic", "data_path": "workers", "an_option_since_removed": 3}
    cfg = TrainConfig.from_dict(saved)
    assert cfg.loader == "workers" and cfg.dataset == "synthetic"


@pytest.mark.parametrize("changes, match", [
    (dict(snapshot_every=3, val_every=2), "make it a multiple of val_every"),
    (dict(trunk_lr_mult=0.1, model="unet"), "trunk_lr_mult applies to deeplabv3plus"),
    (dict(ema_decay=1.0), "ema_decay must be between 0 and 1"),
    (dict(crop_scale=0.0), r"crop_scale must be in \(0, 1\]"),
    (dict(momentum=0.99), "momentum and nesterov are SGD's; --optimizer adamw has its own"),
    (dict(optimizer="sgd", momentum=1.0), r"momentum must be in \[0, 1\)"),
    (dict(optimizer="sgd", momentum=0.0), "Nesterov momentum needs a momentum"),
    (dict(schedule="step"), "--schedule step and --step-epochs N go together"),
    (dict(step_epochs=30), r"go together.*\(--schedule is cosine\)"),
    (dict(schedule="step", step_epochs=30, gamma=0.0), r"gamma must be in \(0, 1\]"),
    (dict(min_lr=0.01, lr=0.01), "min_lr 0.01 is where poly, cosine and onecycle decay to"),
    (dict(min_lr=1e-5, schedule="constant"), "not constant"),
    (dict(schedule="step", step_epochs=0), "step_epochs must be at least 1"),
    (dict(gamma=0.5), "gamma is the step schedule's factor; --schedule is cosine"),
])
def test_rules_between_and_within_fields(changes, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**changes)


def test_the_edges_the_rules_allow():
    TrainConfig(crop_scale=1.0, snapshot_every=4, val_every=2, ema_decay=0.999)  # no crop; every 2nd validation
    TrainConfig(model="deeplabv3plus", trunk_lr_mult=0.1)
    TrainConfig(optimizer="sgd", momentum=0.0, nesterov=False, schedule="step", step_epochs=60, gamma=1.0)
    TrainConfig(lr=1e-3, min_lr=1e-5, schedule="poly")
    TrainConfig(lr=1e-3, min_lr=1e-5, schedule="onecycle")
    TrainConfig(lr=1e-3, min_lr=1e-5, schedule="cosine")


def test_a_path_given_as_pretrained_is_kept_as_text():
    # a Path in the config trained, then could not be written to metrics.json nor read back from best.pt
    from pathlib import Path

    cfg = TrainConfig(model="deeplabv3plus", model_options={"pretrained": Path("weights") / "r18.pt"})
    assert cfg.model_options["pretrained"] == str(Path("weights") / "r18.pt")
