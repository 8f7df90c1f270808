"""Class weights (weighted cross-entropy, the MSRC / DeepLabV3+ reference's loss): median-frequency
balancing counted by hand, a weight file, the loss they make, and a run that stores them."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seglib.checkpoint import load_checkpoint
from seglib.class_balance import median_frequency_weights, read_weights_file
from seglib.engine import fit
from seglib.errors import ConfigError, DataError
from seglib.losses import build_loss
from seglib.masks import resize_mask
from seglib.train_config import TrainConfig


def test_median_frequency_balancing_by_hand():
    masks = np.array([[[0, 0], [0, 1]],        # class 0: 3 px, class 1: 1 px
                      [[0, 2], [2, 255]]], np.uint8)  # class 0: 1, class 2: 2, one void pixel
    # freq_c = pixels of c / valid pixels of the images holding c
    freq = np.array([4 / (4 + 3), 1 / 4, 2 / 3])
    expected = np.median(freq) / freq
    torch.testing.assert_close(median_frequency_weights(masks, 4)[:3], torch.tensor(expected, dtype=torch.float32))
    assert median_frequency_weights(masks, 4)[3] == 1  # a class in no image keeps weight 1
    with pytest.raises(ConfigError, match="no labelled pixel"):
        median_frequency_weights(np.full((1, 2, 2), 255, np.uint8), 3)


def test_a_class_weighted_k_times_changes_the_loss_as_by_hand():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 5, 5), torch.randint(0, 3, (2, 5, 5))
    target[0, 0, 0] = 255
    k = 4.0
    weights = torch.tensor([1.0, k, 1.0])
    nll = F.cross_entropy(logits, target.clamp_max(2), reduction="none")  # per pixel, void masked below
    valid = target != 255
    w = torch.where(valid, weights[target.clamp_max(2)], 0)
    by_hand = (w * nll).sum() / w.sum()
    torch.testing.assert_close(build_loss("ce", 3, class_weights=weights)(logits, target), by_hand)
    assert not torch.isclose(build_loss("ce", 3)(logits, target), by_hand)


def test_a_weights_file_is_read_and_a_wrong_one_named(tmp_path):
    good = tmp_path / "weights.json"
    good.write_text(json.dumps([1, 2.5, 0.5]))
    torch.testing.assert_close(read_weights_file(good, 3), torch.tensor([1, 2.5, 0.5]))
    for text, problem in [("[1, 2]", "not 3 positive finite numbers"), ("[1, 0, 2]", "not 3 positive finite"),
                          ("[1, Infinity, 2]", "not 3 positive finite"), ("[true, 1, 2]", "not 3 positive finite"),
                          ("[1, NaN, 2]", "not 3 positive finite"), ("{", "is not JSON")]:
        good.write_text(text)
        with pytest.raises(DataError, match=problem) as err:
            read_weights_file(good, 3)
        assert str(good) in str(err.value)


def test_class_weights_need_a_loss_that_uses_them():
    with pytest.raises(ConfigError, match="has neither"):
        TrainConfig.smoke(loss="dice", class_weights="auto")


def test_a_run_with_auto_weights_stores_them_in_its_checkpoint(tmp_path):
    cfg = TrainConfig.smoke(loader="gpu", epochs=1, class_weights="auto", out=str(tmp_path))
    fit(cfg, device="cpu", verbose=False)
    meta = load_checkpoint(tmp_path / "best.pt")["meta"]
    from seglib.batches import build_data
    train, _, _ = build_data(cfg, "cpu")
    assert meta["class_weights"] == pytest.approx(median_frequency_weights(train.label_maps(), 4).tolist())
    assert len(set(meta["class_weights"])) > 1  # the shapes are not balanced: the weights differ
    weights = tmp_path / "w.json"
    weights.write_text("[1, 1, 1, 3]")
    fit(replace(cfg, class_weights=str(weights), out=str(tmp_path / "file")), device="cpu", verbose=False)
    assert load_checkpoint(tmp_path / "file" / "best.pt")["meta"]["class_weights"] == [1, 1, 1, 3]


@pytest.mark.parametrize("loader", ["gpu", "workers"])
def test_auto_weights_are_counted_from_every_training_mask(loader):
    """``label_maps`` feeds class_weights="auto": it must be all of the training masks, at the training size."""
    from seglib.batches import build_data
    from seglib.data import load_dataset

    cfg = TrainConfig.smoke(loader=loader)
    train, _, _ = build_data(cfg, "cpu")
    ds = load_dataset("synthetic", "train", max_samples=cfg.max_samples)
    expected = np.stack([resize_mask(ds.load(i)[1], (cfg.image_size,) * 2) for i in range(len(ds))])
    assert len(expected) == cfg.max_samples
    np.testing.assert_array_equal(train.label_maps(), expected)
