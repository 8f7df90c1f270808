"""Joint image + mask augmentation: alignment, label integrity, seeding, DataLoader workers."""

import albumentations as A
import numpy as np
import pytest
import torch

from seglib import transforms as T
from seglib.batches import WorkerBatches
from seglib.errors import ConfigError
from seglib.synthetic import make_sample

# distinct colours: class k is drawn in COLORS[k]; the last colour marks ignore (255) pixels
COLORS = np.array([(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)], np.uint8)
SIZES = [(90, 130), (200, 150), (64, 64), (300, 420)]


def coded_sample(seed, size):
    """A synthetic mask with an ignore band, and an image whose colour says each pixel's class."""
    _, mask = make_sample(seed, size)
    mask = mask.copy()
    mask[: size[0] // 10] = 255
    return COLORS[np.where(mask == 255, 4, mask)], mask


class PairsDataset:
    """The dataset protocol over a fixed list of (image, mask) pairs."""

    name, split, num_classes, ignore_index = "pairs", "train", 4, 255

    def __init__(self, pairs):
        self.pairs = pairs
        self.ids = [f"s{i}" for i in range(len(pairs))]

    def __len__(self):
        return len(self.pairs)

    def load(self, i):
        return self.pairs[i]

    def fingerprint(self):
        return "0" * 40


def decode_colors(x: torch.Tensor) -> np.ndarray:
    """Normalized 3×H×W → index of the nearest of COLORS per pixel."""
    rgb = T.denormalize(x).astype(int)
    return ((rgb[:, :, None] - COLORS.astype(int)) ** 2).sum(-1).argmin(-1)


def test_train_transform_keeps_image_and_mask_aligned():
    tf = T.train_transform(64, seed=1, color=False)
    for s in range(24):
        image, mask = coded_sample(s, SIZES[s % 4])
        out = tf(image=image, mask=mask)
        y = out["mask"].numpy()
        agree = (decode_colors(out["image"]) == np.where(y == 255, 4, y)).mean()
        assert agree >= 0.98, f"sample {s}: only {agree:.3f} of pixels agree"  # OpenCV's INTER_NEAREST fails this
    # crops and flips really happened: outputs differ from a plain resize of the same sample
    image, mask = coded_sample(0, (200, 150))
    plain = T.eval_transform(64)(image=image, mask=mask)["mask"]
    crops = [tf(image=image, mask=mask)["mask"] for _ in range(4)]
    assert not all(torch.equal(plain, c) for c in crops)


def test_eval_transform_keeps_image_and_mask_aligned():
    tf = T.eval_transform(48)
    for s, size in enumerate(SIZES):
        image, mask = coded_sample(s, size)
        out = tf(image=image, mask=mask)
        assert out["image"].shape == (3, 48, 48) and out["mask"].shape == (48, 48)
        y = out["mask"].numpy()
        assert (decode_colors(out["image"]) == np.where(y == 255, 4, y)).mean() >= 0.98


@pytest.mark.parametrize("make", [lambda: T.train_transform(32, seed=0), lambda: T.eval_transform(32)])
def test_mask_values_are_never_interpolated_and_image_is_normalized(make):
    _, base = make_sample(3, (97, 131))
    mask = np.choose(base, [0, 10, 20, 255]).astype(np.uint8)   # any in-between value is a bug
    image = COLORS[base]                                           # holds 0 and 255 in every channel
    ds = T.SegmentationTorchDataset(PairsDataset([(image, mask)] * 6), make())
    lows, highs = [], []
    for i in range(len(ds)):
        x, y = ds[i]
        lows.append(x.min().item())
        highs.append(x.max().item())
        assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
        assert y.dtype == torch.int64 and y.shape == (32, 32)
        assert set(y.unique().tolist()) <= {0, 10, 20, 255}
    assert min(lows) < -1.5 and max(highs) > 1.5                   # ImageNet-normalized, not 0..1


def test_same_seed_same_stream_different_seed_different():
    image, mask = coded_sample(5, (120, 160))

    def stream(seed):
        tf = T.train_transform(48, seed=seed)
        return [tf(image=image, mask=mask) for _ in range(5)]

    a, b, c = stream(7), stream(7), stream(8)
    assert all(torch.equal(p["image"], q["image"]) and torch.equal(p["mask"], q["mask"]) for p, q in zip(a, b))
    assert not all(torch.equal(p["image"], q["image"]) for p, q in zip(a, c))
    assert not torch.equal(a[0]["image"], a[1]["image"])          # the stream moves on between calls


def test_child_transforms_do_not_share_one_replayed_stream():
    # Compose.set_random_seed gives every child the same seed, so on the first call HorizontalFlip
    # fires exactly when RandomBrightnessContrast does; seed_transform decorrelates them
    image = np.zeros((8, 8, 3), np.uint8)
    same = []
    for s in range(60):
        tf = A.Compose([A.HorizontalFlip(p=0.5), A.RandomBrightnessContrast(p=0.5)], save_applied_params=True)
        T.seed_transform(tf, s)
        names = [n for n, _ in tf(image=image)["applied_transforms"]]
        same.append(("HorizontalFlip" in names) == ("RandomBrightnessContrast" in names))
    assert 0.2 < np.mean(same) < 0.8


def test_worker_seed_is_distinct_and_deterministic():
    seeds = {T.worker_seed(s, w) for s in range(50) for w in range(4)}
    assert len(seeds) == 200                                       # no seed + worker_id collisions
    assert T.worker_seed(3, 1) == T.worker_seed(3, 1) and 0 <= T.worker_seed(3, 1) < 2**32


def first_batches(loader, n):
    return [x for _, (x, _) in zip(range(n), loader)]


def test_two_workers_produce_different_augmentations():
    image, mask = coded_sample(2, (100, 140))
    source = PairsDataset([(image, mask)] * 4)                     # every index is the same sample
    tf = T.train_transform(32, seed=0)
    # worker 0 serves batches 0 and 2, worker 1 batches 1 and 3
    x = first_batches(T.make_loader(source, tf, batch_size=1, shuffle=False, num_workers=2, seed=0,
                                    drop_last=False), 4)
    assert not torch.equal(x[0], x[1]) and not torch.equal(x[2], x[3])
    # without worker_init_fn both workers replay the same stream: the bug this guards against
    plain = torch.utils.data.DataLoader(T.SegmentationTorchDataset(source, T.train_transform(32, seed=0)),
                                        batch_size=1, num_workers=2)
    y = first_batches(plain, 4)
    assert torch.equal(y[0], y[1]) and torch.equal(y[2], y[3])


def test_worker_batches_keep_image_and_mask_aligned_through_crops_flips_and_rotation():
    """The training batches of the workers loader, set up as build_data sets them up (colour changes on too)."""
    pairs = [coded_sample(s, SIZES[s % 4]) for s in range(8)]
    plain = [T.eval_transform(64)(image=image, mask=mask)["mask"] for image, mask in pairs]
    for rank, world, workers in ((0, 1, 2), (1, 2, 0)):
        augment = T.train_transform(64, seed=0, scale=(0.5, 1.0), rotate=15)
        batches = WorkerBatches(PairsDataset(pairs), augment, 3, "cpu", seed=0, shuffle=True, drop_last=False,
                                num_workers=workers, rank=rank, world=world, even=True)
        agree = []
        for x, y in batches:
            assert x.shape[1:] == (3, 64, 64) and y.shape[1:] == (64, 64) and y.dtype == torch.int64
            for image, mask in zip(x, y):
                assert not any(torch.equal(mask, p) for p in plain)  # cropped, flipped or turned
                keep = mask.numpy() != 255  # the ignore band, and the corners a rotation voids
                agree.append((decode_colors(image)[keep] == mask.numpy()[keep]).mean())
        assert len(agree) == 8 // world
        assert min(agree) >= 0.97, f"rank {rank}/{world}: an image agrees with its mask on only {min(agree):.3f}"
        assert np.mean(agree) >= 0.98


def test_make_loader_is_reproducible():
    pairs = [coded_sample(s, SIZES[s % 4]) for s in range(6)]

    def batches(seed, workers):
        loader = T.make_loader(PairsDataset(pairs), T.train_transform(32, seed=0), batch_size=2,
                               shuffle=True, num_workers=workers, seed=seed, drop_last=True)
        assert len(loader) == 3 and loader.pin_memory == torch.cuda.is_available()
        assert loader.persistent_workers == (workers > 0)
        out = list(loader)
        assert out[0][0].shape == (2, 3, 32, 32) and out[0][1].dtype == torch.int64
        return out

    a, b, c = batches(1, 2), batches(1, 2), batches(2, 2)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(a, c))
    zero, one = batches(4, 0), batches(4, 1)                       # 0 and 1 workers agree
    assert all(torch.equal(p[0], q[0]) for p, q in zip(zero, one))


def test_workers_started_by_spawn_draw_what_forked_ones_draw():
    """Under "spawn" (macOS' and Windows' default) each worker unpickles its own copy of the transform: that copy
    must be the one seeded, or every run draws fresh augmentations."""
    pairs = [coded_sample(s, SIZES[s % 4]) for s in range(4)]

    def batches(context):
        loader = T.make_loader(PairsDataset(pairs), T.train_transform(32, seed=0), batch_size=2, shuffle=False,
                               num_workers=2, seed=3, drop_last=False)
        loader.multiprocessing_context = context
        return [x for x, _ in loader]

    forked, spawned = batches("fork"), batches("spawn")
    assert all(torch.equal(a, b) for a, b in zip(forked, spawned, strict=True))


def test_denormalize_inverts_normalize():
    image = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    x = T.eval_transform(20)(image=image[:20, :20], mask=np.zeros((20, 20), np.uint8))["image"]
    assert np.array_equal(T.denormalize(x), image[:20, :20])
    assert T.denormalize(x[None].repeat(2, 1, 1, 1)).shape == (2, 20, 20, 3)
    with pytest.raises(ConfigError):
        T.denormalize(torch.zeros(4, 5))


def test_bad_arguments_explain_themselves():
    with pytest.raises(ConfigError, match="size"):
        T.train_transform(0, seed=0)
    with pytest.raises(ConfigError, match="transform must be callable"):
        T.SegmentationTorchDataset(PairsDataset([coded_sample(0, (16, 16))]), "train")
    with pytest.raises(ConfigError, match="num_workers >= 0, got 2, -1"):
        T.make_loader(PairsDataset([coded_sample(0, (16, 16))]), T.eval_transform(16), batch_size=2, shuffle=False,
                      num_workers=-1, seed=0, drop_last=False)


def test_without_hflip_no_crop_is_mirrored():
    image, mask = coded_sample(0, (64, 64))  # square: a crop of the whole area is the whole image
    expected = T.eval_transform(48)(image=image, mask=mask)["mask"]
    tf = T.train_transform(48, seed=0, color=False, hflip=False, scale=(1, 1))
    masks = [tf(image=image, mask=mask)["mask"] for _ in range(8)]  # a flip would show in 8 draws (p=0.5 each)
    assert all(torch.equal(m, expected) for m in masks)
    with pytest.raises(ConfigError, match="ToTensorV2"):
        T.SegmentationTorchDataset(PairsDataset([coded_sample(0, (16, 16))]), A.Compose([A.NoOp()]))[0]


def test_rotation_turns_image_and_mask_together_and_voids_the_corners():
    tf = T.train_transform(64, seed=3, color=False, rotate=30)
    for s in range(8):
        image, mask = coded_sample(s, SIZES[s % 4])
        out = tf(image=image, mask=mask)
        y = out["mask"].numpy()
        labelled = y != 255
        assert (decode_colors(out["image"])[labelled] == y[labelled]).mean() >= 0.97
    whole = T.train_transform(48, seed=0, color=False, hflip=False, rotate=30, scale=(1, 1))
    image, mask = COLORS[np.ones((60, 60), np.uint8)], np.ones((60, 60), np.uint8)
    outs = [whole(image=image, mask=mask) for _ in range(6)]
    ys = [o["mask"].numpy() for o in outs]
    assert all(set(np.unique(y)) <= {1, 255} and y[24, 24] == 1 for y in ys)
    assert sum((y == 255).any() for y in ys) >= 5
    void = np.concatenate([T.denormalize(o["image"])[o["mask"].numpy() == 255] for o in outs])
    assert (void.sum(-1) < 60).mean() > 0.8  # filled black in the image (its edge blends with the photo)


def test_jitter_and_blur_change_the_picture_not_the_mask():
    """Drawn after the crop and flip: with the same seed the mask is the same, the picture recoloured."""
    image, mask = coded_sample(0, (90, 130))
    plain = T.train_transform(48, seed=5, color=False)(image=image, mask=mask)
    blurred = T.train_transform(48, seed=5, color=False, jitter=1.0, blur=1.0)(image=image, mask=mask)
    assert torch.equal(blurred["mask"], plain["mask"])
    assert (blurred["image"] - plain["image"]).abs().amax() > 0.5  # blur=1 blurs every picture
