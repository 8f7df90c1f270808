"""Losses: ignore_index is honoured, focal is per pixel, sums add up, bad names are refused."""

import pytest
import torch
import torch.nn.functional as F

from seglib.errors import ConfigError
from seglib.losses import DiceLoss, FocalLoss, build_loss


def batch(c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, c, 5, 6, generator=g, requires_grad=True)
    target = torch.randint(0, c, (2, 5, 6), generator=g)
    target[:, 0] = 255
    return logits, target


@pytest.mark.parametrize("name", ["ce", "focal", "dice", "ce+dice"])
def test_ignored_pixels_get_no_gradient(name):
    logits, target = batch()
    build_loss(name, 4)(logits, target).backward()
    assert logits.grad[:, :, 0].abs().max() == 0
    assert logits.grad[:, :, 1:].abs().max() > 0


def test_bce_ignores_and_matches_torch_on_valid_pixels():
    logits = torch.randn(2, 1, 4, 4, requires_grad=True)
    target = torch.randint(0, 2, (2, 4, 4))
    target[0, 0, 0] = 255
    loss = build_loss("bce", 1)(logits, target)
    valid = target != 255
    expected = F.binary_cross_entropy_with_logits(logits[:, 0][valid], target[valid].float())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_focal_with_gamma_zero_is_cross_entropy_and_downweights_easy_pixels():
    logits, target = batch()
    ce = F.cross_entropy(logits, target, ignore_index=255)
    assert FocalLoss(gamma=0)(logits, target).item() == pytest.approx(ce.item(), rel=1e-6)
    easy = torch.zeros(1, 2, 1, 2)
    easy[0, 0, 0, 0], easy[0, 1, 0, 1] = 5.0, 0.2  # pixel 0 confident and right, pixel 1 unsure
    target = torch.tensor([[[0, 1]]])
    per_pixel_ce = F.cross_entropy(easy, target, reduction="none")[0, 0]
    focal = FocalLoss(gamma=2)(easy[..., :1], target[..., :1]), FocalLoss(gamma=2)(easy[..., 1:], target[..., 1:])
    assert focal[0] / per_pixel_ce[0] < focal[1] / per_pixel_ce[1]  # the easy pixel is damped more


def test_focal_with_gamma_below_one_keeps_finite_gradients_on_confident_and_ignored_pixels():
    # (1 - p_t) ** 0.5 has an infinite slope at p_t = 1: a confident pixel (or an ignored one) made every
    # gradient NaN
    logits = torch.tensor([[[[30.0, 0.1]], [[-30.0, 0.0]]]], requires_grad=True)  # (1, 2, 1, 2)
    for target in (torch.tensor([[[0, 1]]]), torch.tensor([[[255, 1]]])):
        logits.grad = None
        FocalLoss(gamma=0.5)(logits, target).backward()
        assert torch.isfinite(logits.grad).all() and logits.grad[0, :, 0, 1].abs().max() > 0


def test_class_weights_give_torchs_weighted_mean_for_ce_and_focal():
    logits, target = batch()
    weight = torch.tensor([0.2, 1.0, 3.0, 0.5])
    expected = F.cross_entropy(logits, target, weight=weight, ignore_index=255).item()
    assert build_loss("ce", 4, class_weights=weight)(logits, target).item() == pytest.approx(expected, rel=1e-6)
    assert FocalLoss(gamma=0, weight=weight)(logits, target).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name,channels", [("ce", 4), ("focal", 4), ("dice", 4), ("ce+dice", 4), ("bce", 1)])
def test_a_batch_with_no_labelled_pixel_gives_zero_not_nan(name, channels):
    logits = torch.randn(2, channels, 5, 6, requires_grad=True)
    loss = build_loss(name, channels)(logits, torch.full((2, 5, 6), 255))  # a crop of pure void
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", ["ce", "focal", "dice", "ce+dice"])
def test_losses_never_wait_for_the_host(name):
    """No op that copies a value to the host (``.item()``, ``if tensor``, boolean indexing): on a
    GPU each would stall the training step until the device catches up."""
    logits, target = batch()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        build_loss(name, 4)(logits, target).backward()
    syncing = {"aten::_local_scalar_dense", "aten::nonzero", "aten::is_nonzero", "aten::masked_select"}
    assert not syncing & {event.key for event in prof.key_averages()}


def test_dice_is_zero_for_a_perfect_prediction():
    target = torch.randint(0, 3, (1, 8, 8))
    logits = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 100
    assert DiceLoss(eps=0)(logits, target).item() == pytest.approx(0, abs=1e-5)


def test_dice_by_hand_over_the_batch_and_the_classes_present():
    """One Dice per class over the whole batch (not per image), averaged over the classes the batch holds."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    target = torch.randint(0, 2, (2, 4, 5), generator=g)  # class 2 absent from both images
    target[1, 0, 0] = 255
    p, valid = logits.softmax(1), (target != 255)
    dices = []
    for c in (0, 1):
        inter = (p[:, c] * (target == c) * valid).sum()
        dices.append((2 * inter + 1) / ((p[:, c] * valid).sum() + ((target == c) & valid).sum() + 1))
    expected = 1 - torch.stack(dices).mean()
    assert DiceLoss()(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_binary_dice_reads_the_logit_as_the_foreground():
    target = torch.randint(0, 2, (1, 8, 8))
    logit = (target[:, None].float() * 2 - 1) * 100  # +100 on the foreground, -100 on the background
    assert DiceLoss(eps=0)(logit, target).item() == pytest.approx(0, abs=1e-5)
    assert DiceLoss(eps=0)(-logit, target).item() == pytest.approx(1, abs=1e-5)  # every pixel wrong


def test_build_loss_passes_class_weights_to_focal():
    logits, target = batch()
    weight = torch.tensor([0.2, 1.0, 3.0, 0.5])
    weighted = build_loss("focal", 4, class_weights=weight)(logits, target)
    assert weighted.item() == pytest.approx(FocalLoss(2.0, weight=weight)(logits, target).item(), rel=1e-6)
    assert weighted.item() != pytest.approx(build_loss("focal", 4)(logits, target).item(), rel=1e-3)


def test_sum_is_the_sum_of_its_parts():
    logits, target = batch()
    total = build_loss("ce+dice", 4)(logits, target)
    parts = build_loss("ce", 4)(logits, target) + build_loss("dice", 4)(logits, target)
    assert total.item() == pytest.approx(parts.item())


@pytest.mark.parametrize("spec,classes,match", [("iou", 3, "unknown loss 'iou'"), ("bce", 3, "1-channel"),
                                                ("ce", 1, "2\\+ output channels")])
def test_bad_loss_specs_are_refused(spec, classes, match):
    with pytest.raises(ConfigError, match=match):
        build_loss(spec, classes)
