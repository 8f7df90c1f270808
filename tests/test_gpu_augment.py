"""The tensor augmentation path keeps labels hard and aligned, and is seeded."""

import numpy as np
import pytest
import torch

from seglib.gpu_augment import (BLUR_RADIUS, GpuAugment, denormalize, gaussian_blur, normalize, resize_batch, saturate,
                                shift_hue)
from seglib.masks import resize_mask
from seglib.synthetic import PALETTE, make_sample


def batch(n=6, size=(48, 64)):
    samples = [make_sample(i, size) for i in range(n)]
    masks = torch.from_numpy(np.stack([m for _, m in samples]))
    images = torch.from_numpy(PALETTE[masks.numpy()])  # each class painted in its own colour
    return images, masks


def test_shapes_dtypes_and_no_invented_labels():
    images, masks = batch()
    masks[:, :3] = 255
    x, y = GpuAugment(32)(images, masks, torch.Generator().manual_seed(0))
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (6, 32, 32) and y.dtype == torch.int64
    assert set(y.unique().tolist()) <= set(masks.unique().tolist())


def test_image_and_mask_stay_aligned():
    images, masks = batch()
    aug = GpuAugment(40, brightness=0, contrast=0)
    x, y = aug(images, masks, torch.Generator().manual_seed(1))
    colours = (x * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
               + torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) * 255
    dist = ((colours[:, None] - torch.from_numpy(PALETTE).float().view(1, 4, 3, 1, 1)) ** 2).sum(2)
    recovered = dist.argmin(1)
    assert (recovered == y).float().mean() > 0.97  # only bilinear edge pixels may disagree


def test_seeded_and_random():
    images, masks = batch()
    aug = GpuAugment(32)
    a = aug(images, masks, torch.Generator().manual_seed(5))
    b = aug(images, masks, torch.Generator().manual_seed(5))
    c = aug(images, masks, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_flip_mirrors_the_mask():
    images, masks = batch(1)
    no_flip = GpuAugment(48, scale=(1, 1), ratio=(4 / 3, 4 / 3), hflip=False, brightness=0, contrast=0)
    flips = GpuAugment(48, scale=(1, 1), ratio=(4 / 3, 4 / 3), brightness=0, contrast=0)
    _, y0 = no_flip(images, masks, torch.Generator().manual_seed(0))
    outs = [flips(images, masks, torch.Generator().manual_seed(s))[1] for s in range(8)]
    assert any(torch.equal(o, y0.flip(-1)) for o in outs) and any(torch.equal(o, y0) for o in outs)


@pytest.mark.parametrize("ratio, axis", [(2.0, -1), (0.5, -2)])
def test_a_crop_wider_or_taller_than_the_image_is_cut_to_it(ratio, axis):
    """A whole-area crop of aspect 2 (or 1/2) on a square image would reach past two edges; it is clamped to the
    image's width (height), so every column (row) appears once: no edge pixel smeared over the border."""
    coords = torch.arange(64, dtype=torch.uint8)
    masks = (coords.view(1, 1, 64) if axis == -1 else coords.view(1, 64, 1)).expand(4, 64, 64).contiguous()
    images = masks[..., None].expand(4, 64, 64, 3).contiguous()
    _, y = GpuAugment(64, scale=(1, 1), ratio=(ratio, ratio), hflip=False)(images, masks,
                                                                            torch.Generator().manual_seed(0))
    lines = y if axis == -1 else y.transpose(1, 2)  # the label runs along each output row
    assert all(sorted(line.tolist()) == list(range(64)) for line in lines.reshape(-1, 64))


def test_resize_batch_is_nearest_for_masks():
    images, masks = batch(2, size=(48, 48))
    masks = (masks > 0).to(torch.uint8) * 3  # labels 0 and 3 only: any interpolation would invent 1 and 2
    x, y = resize_batch(images, masks, 24)
    assert x.shape == (2, 3, 24, 24) and set(y.unique().tolist()) == {0, 3}
    for mask, resized in zip(masks.numpy(), y):  # the cache's pixel-centre sampling (OpenCV and torch may round
        np.testing.assert_array_equal(resized.numpy(), resize_mask(mask, (24, 24)))  # a centre on a tie apart)
    assert torch.allclose(normalize(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)).flatten(),
                          torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]))


def test_brightness_and_contrast_stay_within_the_pixel_range():
    white = torch.full((8, 16, 16, 3), 255, dtype=torch.uint8)
    x, _ = GpuAugment(16, brightness=0.5, contrast=0.5)(white, torch.zeros(8, 16, 16, dtype=torch.uint8),
                                                         torch.Generator().manual_seed(0))
    ceiling = normalize(torch.full((1, 3, 1, 1), 255.0)).view(1, 3, 1, 1)
    assert (x <= ceiling + 1e-5).all() and (x < ceiling - 0.1).any()  # clipped at white; some darkened
    assert (denormalize(torch.full((3, 2, 2), 10.0)) == 255).all()  # far above white is white, not wrapped


def test_brightness_contrast_draws_what_albumentations_draws():
    """On a uniform grey image both paths leave half the images alone and move the others to
    ``100 * c + 255 * b`` with c in [0.8, 1.2] and b in [-0.2, 0.2]: the same distribution."""
    import albumentations as A

    n = 2000
    grey = np.full((8, 8, 3), 100, np.uint8)
    albu = A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5)
    albu.set_random_seed(0)
    theirs = np.array([albu(image=grey)["image"][0, 0, 0] for _ in range(n)], float)
    x, _ = GpuAugment(8, scale=(1, 1), ratio=(1, 1), hflip=False)(
        torch.from_numpy(np.repeat(grey[None], n, 0)), torch.zeros(n, 8, 8, dtype=torch.uint8),
        torch.Generator().manual_seed(0))
    ours = (x[:, 0, 0, 0] * 0.229 + 0.485).numpy() * 255
    for values in (theirs, ours):
        changed = np.abs(values - 100) > 0.5
        assert 0.45 < changed.mean() < 0.55
        assert 100 * 0.8 - 51 - 1 <= values.min() and values.max() <= 100 * 1.2 + 51 + 1
    quantiles = [0.1, 0.25, 0.75, 0.9]
    changed_theirs, changed_ours = theirs[np.abs(theirs - 100) > 0.5], ours[np.abs(ours - 100) > 0.5]
    assert np.allclose(np.quantile(changed_theirs, quantiles), np.quantile(changed_ours, quantiles), atol=6)


def test_rotation_turns_image_and_mask_together_and_voids_what_leaves_the_image():
    images, masks = batch()
    x, y = GpuAugment(40, brightness=0, contrast=0, rotate=30)(images, masks, torch.Generator().manual_seed(2))
    colours = (x * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
               + torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) * 255
    recovered = ((colours[:, None] - torch.from_numpy(PALETTE).float().view(1, 4, 3, 1, 1)) ** 2).sum(2).argmin(1)
    labelled = y != 255
    assert (recovered == y)[labelled].float().mean() > 0.97
    # the whole image, turned: its corners fall outside it, the centre stays, no label is invented
    whole = GpuAugment(32, scale=(1, 1), ratio=(1, 1), hflip=False, brightness=0, contrast=0, rotate=30)
    x, y = whole(images[:, :48, :48], torch.ones(6, 48, 48, dtype=torch.uint8), torch.Generator().manual_seed(0))
    assert set(y.unique().tolist()) == {1, 255} and (y[:, 16, 16] == 1).all()
    assert sum(bool((m == 255).any()) for m in y) >= 5
    assert torch.allclose(x.permute(0, 2, 3, 1)[y == 255], normalize(torch.zeros(1, 3, 1, 1)).view(3))  # black
    _, y = GpuAugment(32, scale=(1, 1), ratio=(1, 1), hflip=False)(
        images[:, :48, :48], torch.ones(6, 48, 48, dtype=torch.uint8), torch.Generator().manual_seed(0))
    assert (y == 1).all()  # rotate=0 (the default): nothing turns, nothing is void


@pytest.mark.parametrize("options, draws", [({}, 8), ({"rotate": 30}, 9), ({"jitter": 0.4}, 11),
                                            ({"blur": 0.5}, 10), ({"rotate": 30, "jitter": 0.4, "blur": 0.5}, 14)])
def test_options_left_off_draw_nothing_so_old_seeds_replay(options, draws):
    """Off, rotate, jitter and blur draw no random numbers: a seed gives the crops, flips and colours it
    gave before they existed. Base draws: area, ratio, x, y, flip, apply, contrast, brightness; rotate
    adds an angle, jitter apply, saturation and hue, blur apply and sigma."""
    images, masks = batch()
    used, fresh = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    GpuAugment(32, **options)(images, masks, used)
    for _ in range(draws):
        torch.rand(len(masks), generator=fresh)
    assert torch.equal(used.get_state(), fresh.get_state())


def test_saturation_and_hue_are_albumentations_own_steps():
    """Against albumentations' functions on float images (its uint8 path quantizes hue to 2°)."""
    fp = pytest.importorskip("albumentations.augmentations.pixel.functional")
    rng = np.random.default_rng(0)
    image = rng.random((3, 24, 20, 3), dtype=np.float32)
    image[0, :4] = 0.5  # greys keep no hue
    x = torch.from_numpy(image).permute(0, 3, 1, 2) * 255
    factors, turns = [0.0, 0.6, 1.4], [-0.1, 0.25, 0.5]
    ours = saturate(x, torch.tensor(factors)).permute(0, 2, 3, 1).numpy() / 255
    theirs = np.stack([fp.adjust_saturation_torchvision(im, f) for im, f in zip(image, factors)])
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    ours = shift_hue(x, torch.tensor(turns)).permute(0, 2, 3, 1).numpy() / 255
    theirs = np.stack([fp.adjust_hue_torchvision(im.copy(), t) for im, t in zip(image, turns)])
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert torch.allclose(shift_hue(x, torch.zeros(3)), x, atol=1e-3)  # no turn, no change
    assert torch.allclose(shift_hue(x, torch.ones(3)), x, atol=1e-3)  # a whole turn, none either


def test_blur_is_albumentations_kernel_with_mirrored_edges():
    fb = pytest.importorskip("albumentations.augmentations.blur.functional")
    fp = pytest.importorskip("albumentations.augmentations.pixel.functional")
    image = np.random.default_rng(1).random((2, 30, 26, 3), dtype=np.float32)
    sigmas = [0.3, 2.0]
    ours = gaussian_blur(torch.from_numpy(image).permute(0, 3, 1, 2), torch.tensor(sigmas))
    theirs = np.stack([fp.separable_convolve(im, fb.create_gaussian_kernel_1d(s, 2 * BLUR_RADIUS + 1))
                       for im, s in zip(image, sigmas)])
    np.testing.assert_allclose(ours.permute(0, 2, 3, 1).numpy(), theirs, atol=1e-5)


def test_jitter_and_blur_change_colours_only():
    """Same seed with and without them: the same crops and masks; only the pictures differ, about half
    of them recoloured; a grey picture stays grey."""
    images, masks = batch(32)
    plain = GpuAugment(32, brightness=0, contrast=0)
    x0, y0 = plain(images, masks, torch.Generator().manual_seed(3))
    x1, y1 = GpuAugment(32, brightness=0, contrast=0, jitter=0.8)(images, masks, torch.Generator().manual_seed(3))
    assert torch.equal(y0, y1)
    recoloured = ((x1 - x0).abs().amax((1, 2, 3)) > 0.05).float().mean()
    assert 0.25 < recoloured < 0.75
    _, y2 = GpuAugment(32, brightness=0, contrast=0, blur=1.0)(images, masks, torch.Generator().manual_seed(3))
    assert torch.equal(y0, y2)
    grey = torch.full_like(images, 90)
    x, _ = GpuAugment(32, brightness=0, contrast=0, jitter=1.0, blur=1.0)(grey, masks, torch.Generator().manual_seed(0))
    assert torch.allclose(x, normalize(torch.full((1, 3, 1, 1), 90.0)).expand_as(x), atol=1e-4)
