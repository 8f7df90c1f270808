"""The confusion matrix against hand-computed cases and an independent NumPy implementation."""

import math

import numpy as np
import pytest
import torch

from seglib.metrics import ConfusionMatrix, logits_to_labels


def numpy_metrics(preds, targets, num_classes, ignore=255):
    """Straightforward per-class IoU over the whole dataset, written independently."""
    p = np.concatenate([x.ravel() for x in preds])
    t = np.concatenate([x.ravel() for x in targets])
    keep = t != ignore
    p, t = p[keep], t[keep]
    ious = []
    for c in range(num_classes):
        inter = np.sum((p == c) & (t == c))
        union = np.sum((p == c) | (t == c))
        ious.append(inter / union if union else np.nan)
    return np.array(ious), float(np.mean(p == t))


def test_hand_computed_toy_case():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 2]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    m = cm.compute()
    # class 0: tp 1, fp 1 (a 2 predicted as 0), fn 1 -> 1/3; class 1: tp 2, fp 1 -> 2/3; class 2: 1/2
    assert m["iou"] == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert m["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert m["pixel_accuracy"] == pytest.approx(4 / 6)
    assert m["pixels"] == 6  # the two ignored pixels never count
    assert m["dice"] == pytest.approx([2 * 1 / 4, 2 * 2 / 5, 2 * 1 / 3])
    assert m["mdice"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    # accuracy is tp over the true pixels of a class (2 each), not over its predicted ones (2, 3, 1)
    assert m["class_accuracy"] == pytest.approx([1 / 2, 2 / 2, 1 / 2])
    assert m["mean_class_accuracy"] == pytest.approx(2 / 3)


def test_matches_numpy_over_many_batches_and_is_batch_size_independent():
    rng = np.random.default_rng(0)
    targets = [rng.integers(0, 5, (3, 17, 13)) for _ in range(6)]
    for t in targets:
        t[rng.random(t.shape) < 0.1] = 255
    preds = [np.where(rng.random(t.shape) < 0.6, np.where(t == 255, 0, t), rng.integers(0, 5, t.shape))
             for t in targets]
    expected_iou, expected_acc = numpy_metrics(preds, targets, 5)
    cm = ConfusionMatrix(5)
    for p, t in zip(preds, targets):
        cm.update(torch.from_numpy(p), torch.from_numpy(t))
    m = cm.compute()
    np.testing.assert_allclose(m["iou"], expected_iou)
    assert m["pixel_accuracy"] == pytest.approx(expected_acc)
    whole = ConfusionMatrix(5)
    whole.update(torch.from_numpy(np.concatenate(preds)), torch.from_numpy(np.concatenate(targets)))
    assert torch.equal(whole.mat, cm.mat)


def test_absent_class_is_nan_and_left_out_of_the_mean():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 1]))
    m = cm.compute()
    assert math.isnan(m["iou"][2]) and m["miou"] == 1.0


def test_labels_outside_the_classes_are_refused_and_the_ignore_index_is_not():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 7]), torch.tensor([0, 255, 2]))  # clamped, the 7 used to be a correct class 2
    with pytest.raises(ValueError, match=r"outside 0\.\.2 .*: 1 predicted pixels\. Fix"):
        cm.compute()
    cm.reset()
    cm.update(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 7, -1, 255]))  # these targets were silently left out
    with pytest.raises(ValueError, match=r": 2 target pixels\. Fix"):
        cm.compute()
    cm.reset()
    cm.update(torch.tensor([0, 1, 2]), torch.tensor([0, 255, 2]))
    assert cm.compute()["pixels"] == 2
    cm.reset()
    cm.update(torch.tensor([0, 255, 2]), torch.tensor([0, 255, 2]))  # predictions painted void where the truth is
    assert cm.compute()["pixels"] == 2  # it used to count as a bad prediction
    for pred, target, which in (([3], [0], "predicted"), ([0], [3], "target")):  # the first label past the classes
        cm.reset()
        cm.update(torch.tensor(pred), torch.tensor(target))
        with pytest.raises(ValueError, match=f"1 {which} pixels"):
            cm.compute()


def test_logits_to_labels_binary_and_multiclass():
    one = torch.tensor([[[[-1.0, 2.0]]]])
    assert logits_to_labels(one).tolist() == [[[0, 1]]]
    many = torch.tensor([[[[0.0]], [[3.0]], [[1.0]]]])
    assert logits_to_labels(many).tolist() == [[[1]]]
