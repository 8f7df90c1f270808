"""seglib.masks: decoding every mask encoding into a label map, and the classic mistakes caught."""

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from seglib import masks
from seglib.errors import ConfigError, DataError

PATH = Path("data/demo/masks/frame_0042.png")
COLORS = np.array([(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48),
                   (145, 30, 180), (70, 240, 240), (250, 250, 250)], np.uint8)


def blocks(h=48, w=64, classes=len(COLORS), seed=0):
    """A label map of random 8x8 blocks, every class present."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, classes, (h // 8, w // 8))
    small.flat[:classes] = np.arange(classes)
    return np.kron(small, np.ones((8, 8), int)).astype(np.uint8)


def raises_named(fn, *fragments):
    """``fn()`` raises a DataError naming PATH, with a fix and every fragment in its message."""
    with pytest.raises(DataError) as err:
        fn()
    message = str(err.value)
    assert str(PATH) in message and "Fix:" in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# ------------------------------------------------------------------ validate_mask


def test_validate_accepts_a_clean_mask_and_returns_uint8():
    mask = np.array([[0, 1, 2], [255, 2, 0]], np.int64)
    out = masks.validate_mask(mask, num_classes=3, image_size=(2, 3, 3), path=PATH)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, mask)
    bits = masks.validate_mask(np.array([[True, False]]), num_classes=2)  # 1-bit input
    assert bits.dtype == np.uint8 and bits.tolist() == [[1, 0]]


def test_float_mask_is_rejected_with_a_hint():
    soft = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)  # what ToTensor / bilinear produce
    message = raises_named(lambda: masks.validate_mask(soft, num_classes=2, path=PATH),
                           "float32", "ToTensor", "bilinear", "resize_mask")
    assert "2 pixels fractional" in message


def test_zero_255_mask_is_detected():
    mask = np.zeros((4, 4), np.uint8)
    mask[1:3, 1:3] = 255
    fix = "this looks like a 0/255 mask; divide by 255 or use binarize"
    raises_named(lambda: masks.validate_mask(mask, num_classes=2, path=PATH), fix)  # 255 = ignore
    raises_named(lambda: masks.validate_mask(mask, num_classes=2, ignore_index=254, path=PATH), fix)
    # a multi-class mask of background + void is legitimate
    assert masks.validate_mask(mask, num_classes=19).max() == 255


def test_out_of_range_labels_are_listed_with_counts():
    mask = np.zeros((10, 10), np.uint8)
    mask[0, :7] = 40
    mask[1, :3] = 19
    mask[2, :2] = 255  # the ignore index is fine
    message = raises_named(lambda: masks.validate_mask(mask, num_classes=19, path=PATH),
                           "10 pixels", "40 (7 px)", "19 (3 px)", "labelids_to_trainids")
    assert "255 (" not in message
    negative = np.array([[0, -1], [1, 1]], np.int32)
    raises_named(lambda: masks.validate_mask(negative, num_classes=2, path=PATH), "-1 (1 px)")


def test_size_mismatch_names_both_sizes():
    mask = np.zeros((30, 56), np.uint8)
    raises_named(lambda: masks.validate_mask(mask, num_classes=2, image_size=(32, 56), path=PATH),
                 "30x56", "32x56", "resize_mask")


@pytest.mark.parametrize("shape, fragment", [((6, 6, 3), "rgb_to_index"), ((6, 6, 1), "squeeze"),
                                             ((1, 6, 6), "squeeze"), ((2, 2, 6, 6), "4 dimensions"),
                                             ((6,), "1 dimensions")])
def test_wrong_ndim(shape, fragment):
    mask = np.zeros(shape, np.uint8)
    raises_named(lambda: masks.validate_mask(mask, num_classes=2, path=PATH), fragment)


def test_a_mask_of_the_right_height_but_another_width_is_refused():
    raises_named(lambda: masks.validate_mask(np.zeros((4, 5), np.uint8), num_classes=2, image_size=(4, 6),
                                             path=PATH), "mask is 4x5 but the image is 4x6")


def test_ignore_index_inside_the_classes_is_a_config_error():
    with pytest.raises(ConfigError, match="ignore_index 3"):
        masks.validate_mask(np.zeros((2, 2), np.uint8), num_classes=5, ignore_index=3)


def test_ignore_index_0_is_refused_when_class_0_is_a_class():
    """ignore_index=0 would silently drop the background from the loss and the counts."""
    with pytest.raises(ConfigError, match="ignore_index 0 is a class index"):
        masks.validate_mask(np.zeros((2, 2), np.uint8), num_classes=2, ignore_index=0)
    with pytest.raises(ConfigError, match="ignore_index 0 is a class index"):
        masks.class_histogram(np.zeros((2, 2), np.uint8), 2, ignore_index=0)


def test_is_zero_255():
    assert masks.is_zero_255(np.array([[0, 255], [255, 0]], np.uint8))
    assert masks.is_zero_255(np.full((2, 2), 255, np.int32))
    assert not masks.is_zero_255(np.zeros((2, 2), np.uint8))  # all background: valid as it is
    assert not masks.is_zero_255(np.array([[0, 1], [255, 0]], np.uint8))
    assert not masks.is_zero_255(np.array([[0, 128], [255, 0]], np.uint8))  # soft mask
    assert not masks.is_zero_255(np.ones((2, 2), bool))


def test_class_histogram():
    mask = np.array([[0, 0, 1], [2, 255, 2]], np.uint8)
    np.testing.assert_array_equal(masks.class_histogram(mask, 4), [2, 1, 2, 0])
    batch = np.stack([mask, mask]).astype(np.int64)
    np.testing.assert_array_equal(masks.class_histogram(batch, 3), [4, 2, 4])
    raises_named(lambda: masks.class_histogram(mask, 2, path=PATH), "2 (2 px)")


# ------------------------------------------------------------------ binary masks


def test_binarize_thresholds_soft_masks():
    soft = np.array([[0, 1, 127, 128, 200, 255]], np.uint8)
    out = masks.binarize(soft)
    assert out.dtype == np.uint8 and out.tolist() == [[0, 0, 0, 1, 1, 1]]
    assert masks.binarize(soft, threshold=200).tolist() == [[0, 0, 0, 0, 0, 1]]
    assert masks.binarize(soft, threshold=0).tolist() == [[0, 1, 1, 1, 1, 1]]
    grey_rgb = np.repeat(soft[..., None], 3, axis=2)  # a binary mask saved as RGB
    assert masks.binarize(grey_rgb).tolist() == out.tolist()


def test_binarize_accepts_one_bit_and_rejects_probabilities_with_a_byte_threshold():
    bits = np.array([[True, False], [False, True]])
    out = masks.binarize(bits)
    assert out.dtype == np.uint8 and out.tolist() == [[1, 0], [0, 1]]
    probs = np.array([[0.1, 0.9]], np.float32)
    raises_named(lambda: masks.binarize(probs, path=PATH), "threshold=0.5")
    assert masks.binarize(probs, threshold=0.5).tolist() == [[0, 1]]
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[0, 0] = (255, 0, 0)
    raises_named(lambda: masks.binarize(colour, path=PATH), "rgb_to_index")


def test_binarize_refuses_a_mask_of_exactly_0_1_and_255_or_negative_values():
    voc_like = np.array([[0, 1, 1], [0, 255, 1]], np.uint8)  # 0/1 labels with a void border, as Pascal VOC's
    raises_named(lambda: masks.binarize(voc_like, path=PATH), "validate_mask")
    assert masks.validate_mask(voc_like, num_classes=2).tolist() == voc_like.tolist()  # the fix it names works
    assert masks.binarize(voc_like, threshold=0).tolist() == [[0, 1, 1], [0, 1, 1]]  # an explicit 0 is obeyed
    assert masks.binarize(np.array([[0, 1, 2, 255]], np.uint8)).tolist() == [[0, 0, 0, 1]]  # soft: thresholded
    raises_named(lambda: masks.binarize(np.array([[-1, 0, 1]], np.int16), path=PATH), "down to -1")


def test_colour_helpers_refuse_an_ignore_index_among_the_classes_and_draw_unknown_labels_in_the_ignore_colour():
    colours = [(0, 0, 0), (10, 0, 0), (20, 0, 0), (30, 0, 0), (40, 0, 0)]
    with pytest.raises(ConfigError, match="5 classes with ignore_index 3"):
        masks.rgb_to_index(np.zeros((2, 2, 3), np.uint8), colours, ignore_index=3)
    drawn = masks.index_to_rgb(np.array([[0, 256, -1, 1]]), [(10, 20, 30), (1, 2, 3)])
    assert drawn.tolist() == [[[10, 20, 30], [0, 0, 0], [0, 0, 0], [1, 2, 3]]]  # 256 and -1 do not wrap to 0 or 255


def test_resize_mask_always_returns_a_new_array():
    mask = np.zeros((4, 6), np.uint8)
    out = masks.resize_mask(mask, mask.shape)
    out[0, 0] = 9
    assert mask[0, 0] == 0


def test_instances_to_binary():
    instances = np.array([[0, 1, 1], [2, 2, 0], [0, 3, 0]], np.uint8)  # Penn-Fudan: k = k-th person
    out = masks.instances_to_binary(instances)
    assert out.dtype == np.uint8 and out.tolist() == [[0, 1, 1], [1, 1, 0], [0, 1, 0]]


# ------------------------------------------------------------------ geometry


def test_resize_mask_never_invents_labels():
    mask = np.zeros((40, 40), np.uint8)
    mask[:, 20:] = 12  # two classes, far apart in value
    mask[10:30, 5:15] = 3
    for size in [(97, 61), (13, 17), (40, 40), (80, 80)]:
        out = masks.resize_mask(mask, size)
        assert out.shape == size and out.dtype == np.uint8
        assert set(np.unique(out)) <= set(np.unique(mask))
    bilinear = cv2.resize(mask, (61, 97), interpolation=cv2.INTER_LINEAR)
    assert set(np.unique(bilinear)) - set(np.unique(mask))  # bilinear makes up in-between labels
    positional = cv2.resize(mask, (61, 97), cv2.INTER_NEAREST)  # flag lands in `dst`: bilinear
    assert set(np.unique(positional)) - set(np.unique(mask))


def test_resize_mask_dtypes_agree_and_samples_pixel_centres():
    rng = np.random.default_rng(1)
    mask = rng.integers(0, 19, (37, 53)).astype(np.uint8)
    ref = masks.resize_mask(mask, (64, 20))
    for dtype in (np.int64, np.int32, np.uint16):
        out = masks.resize_mask(mask.astype(dtype), (64, 20))
        assert out.dtype == dtype
        np.testing.assert_array_equal(out, ref)
    bits = masks.resize_mask(mask > 9, (64, 20))
    assert bits.dtype == bool
    np.testing.assert_array_equal(bits, ref > 9)
    tall = rng.integers(0, 2, (500, 3)).astype(np.uint8)  # 500 -> 750 rows: many pixel centres are ties
    for dtype in (bool, np.int64, np.uint32):
        np.testing.assert_array_equal(masks.resize_mask(tall.astype(dtype), (750, 3)),
                                      masks.resize_mask(tall, (750, 3)))
    row = np.arange(6)[None]  # output pixel centres sit at input x = 1.5 and 4.5
    np.testing.assert_array_equal(masks.resize_mask(row, (1, 2)), [[1, 4]])
    np.testing.assert_array_equal(masks.resize_mask(np.arange(2)[None], (1, 4)), [[0, 0, 1, 1]])


def test_fit_mask_to_image_crops_one_extra_row():
    mask = np.zeros((137, 100), np.uint8)
    mask[-1] = 1  # the extra last row
    mask[:5] = 2
    fitted = masks.fit_mask_to_image(mask, (136, 100), path=PATH)
    assert fitted.shape == (136, 100)
    np.testing.assert_array_equal(fitted, mask[:136])
    short = masks.fit_mask_to_image(mask[:135], (136, 101))  # pads by repeating the edge
    assert short.shape == (136, 101)
    np.testing.assert_array_equal(short[135], short[134])
    np.testing.assert_array_equal(short[:, 100], short[:, 99])
    same = masks.fit_mask_to_image(mask, (137, 100))
    assert same.shape == (137, 100)


def test_fit_mask_to_image_rejects_bigger_mismatches():
    mask = np.zeros((141, 100), np.uint8)
    raises_named(lambda: masks.fit_mask_to_image(mask, (136, 100), path=PATH), "141x100", "136x100")
    raises_named(lambda: masks.fit_mask_to_image(mask[:136], (136, 98), path=PATH), "136x100")
    assert masks.fit_mask_to_image(mask, (136, 100), max_offset=5).shape == (136, 100)


# ------------------------------------------------------------------ palettes


def test_palette_round_trip_is_exact():
    labels = blocks()
    labels[:8, :8] = 255
    rgb = masks.index_to_rgb(labels, COLORS, ignore_color=(1, 2, 3))
    assert rgb.shape == labels.shape + (3,) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (1, 2, 3)
    back, report = masks.rgb_to_index(rgb, COLORS, ignore_colors=[(1, 2, 3)])
    np.testing.assert_array_equal(back, labels)
    assert report.total == labels.size and report.exact == labels.size
    assert report.unmatched == 0 and report.ignored == 64 and report.unmatched_colors == ()
    np.testing.assert_array_equal(masks.index_to_rgb(back, COLORS, ignore_color=(1, 2, 3)), rgb)


def test_unmatched_colours_are_counted_exactly():
    labels = blocks(seed=3)
    rgb = masks.index_to_rgb(labels, COLORS)
    rgb[0, :5] = (10, 20, 30)
    rgb[1, :3] = (99, 99, 99)
    rgb[2, :1] = (1, 1, 1)
    out, report = masks.rgb_to_index(rgb, COLORS, top=2)
    assert report.unmatched == 9 and report.unmatched_fraction == pytest.approx(9 / labels.size)
    assert report.unmatched_colors == (((10, 20, 30), 5), ((99, 99, 99), 3))
    assert report.exact == labels.size - 9 and report.approximate == 0
    assert (out[0, :5] == 255).all() and (out[1, :3] == 255).all() and out[2, 0] == 255
    assert (out[3:] == labels[3:]).all()
    raises_named(lambda: masks.rgb_to_index(rgb, COLORS, strict=True, path=PATH),
                 "9 pixels", "(10, 20, 30) (5 px)", "(99, 99, 99) (3 px)", "ignore_colors")
    custom, _ = masks.rgb_to_index(rgb, COLORS, ignore_index=200)
    assert custom[0, 0] == 200


def test_tolerance_recovers_jpeg_like_noise():
    labels = blocks(96, 128, seed=5)
    rgb = masks.index_to_rgb(labels, COLORS)
    rng = np.random.default_rng(0)
    noisy = np.clip(rgb.astype(int) + rng.integers(-3, 4, rgb.shape), 0, 255).astype(np.uint8)
    exact, report0 = masks.rgb_to_index(noisy, COLORS)
    assert report0.unmatched_fraction > 0.9  # exact lookup fails on JPEG masks
    for metric, tol in (("linf", 3), ("l2", 3 * 3**0.5)):
        out, report = masks.rgb_to_index(noisy, COLORS, tolerance=tol, metric=metric)
        assert (out == labels).mean() >= 0.999
        assert report.unmatched == 0 and report.exact + report.approximate == labels.size


def test_noise_beyond_tolerance_becomes_ignore():
    labels = blocks(seed=6)
    rgb = masks.index_to_rgb(labels, COLORS).astype(int)
    rgb[:8] += np.array([0, 0, 20]) * np.where(rgb[:8] > 128, -1, 1)  # 20 levels off
    out, report = masks.rgb_to_index(rgb.astype(np.uint8), COLORS, tolerance=10)
    assert (out[:8] == 255).all() and (out[8:] == labels[8:]).all()
    assert report.unmatched == 8 * labels.shape[1]
    with pytest.raises(DataError, match=f"{8 * labels.shape[1]} pixels"):
        masks.rgb_to_index(rgb.astype(np.uint8), COLORS, tolerance=10, strict=True, path=PATH)


def test_void_colours_and_the_palette_object():
    pal = masks.Palette(("sky", "grass"), [(0, 0, 255), (0, 255, 0)], void_colors=[(0, 0, 0)])
    assert pal.num_classes == len(pal) == 2
    rgb = np.array([[[0, 0, 255], [0, 255, 0], [0, 0, 0], [2, 1, 0], [0, 3, 252]]], np.uint8)
    labels, report = pal.to_index(rgb, tolerance=4)
    assert labels.tolist() == [[0, 1, 255, 255, 0]]
    assert report.ignored == 2 and report.approximate == 2 and report.unmatched == 0
    labels, report = pal.to_index(rgb, tolerance=4, void_tolerance=0)  # void colours exact only
    assert labels.tolist() == [[0, 1, 255, 255, 0]]
    assert report.ignored == 1 and report.unmatched == 1
    np.testing.assert_array_equal(pal.to_rgb(pal.to_index(rgb[:, :3])[0]), rgb[:, :3])
    with pytest.raises(ConfigError):
        masks.rgb_to_index(rgb, [(1, 2, 3), (1, 2, 3)])
    with pytest.raises(ConfigError):
        masks.rgb_to_index(rgb, [(1, 2, 3)], ignore_colors=[(1, 2, 3)])
    with pytest.raises(DataError, match="validate_mask"):
        masks.rgb_to_index(np.zeros((4, 4), np.uint8), COLORS)
    with pytest.raises(DataError, match="validate_mask"):
        masks.rgb_to_index(np.zeros((4, 3), np.uint8), COLORS)


# ------------------------------------------------------------------ K-means


def test_kmeans_on_mask_colours_recovers_the_palette():
    rng = np.random.default_rng(0)
    truth = [blocks(48, 64, seed=s) for s in range(4)]
    noisy = [np.clip(masks.index_to_rgb(t, COLORS) + rng.integers(-3, 4, t.shape + (3,)), 0, 255)
             .astype(np.uint8) for t in truth]
    km = masks.kmeans_colors(noisy, k=len(COLORS), seed=0)
    mapping = masks.match_clusters_to_palette(km.centers, COLORS)
    assert sorted(mapping.tolist()) == list(range(len(COLORS)))
    assert np.abs(km.centers - COLORS[mapping]).max() < 2
    assert km.sizes.sum() == sum(t.size for t in truth)
    for t, rgb in zip(truth, noisy):
        assert (mapping[km.predict(rgb)] == t).mean() >= 0.999
    again = masks.kmeans_colors(noisy, k=len(COLORS), seed=0)
    np.testing.assert_array_equal(again.centers, km.centers)  # deterministic for a seed


def test_kmeans_on_random_rgb_is_not_the_palette():
    """The reference-project bug: clusters of uniform random triplets are Voronoi cells of RGB."""
    truth = blocks(96, 128, seed=2)
    rgb = masks.index_to_rgb(truth, COLORS)
    random_rgb = np.random.default_rng(0).integers(0, 256, (20000, 3), dtype=np.uint8)
    km = masks.kmeans_colors(random_rgb, k=len(COLORS), seed=0)
    mapping = masks.match_clusters_to_palette(km.centers, COLORS)
    assert np.abs(km.centers - COLORS[mapping]).max() > 40
    assert (mapping[km.predict(rgb)] == truth).mean() < 0.9


def test_kmeans_guards_and_extra_clusters():
    rgb = masks.index_to_rgb(blocks(classes=3), COLORS)
    with pytest.raises(ConfigError, match="3 distinct colours"):
        masks.kmeans_colors(rgb, k=4)
    km = masks.kmeans_colors(rgb, k=3)
    np.testing.assert_allclose(np.sort(km.centers, 0), np.sort(COLORS[:3].astype(float), 0))
    assert km.inertia == pytest.approx(0)
    extra = np.vstack([km.centers, [[128, 128, 128]]])  # more clusters than classes
    mapping = masks.match_clusters_to_palette(extra, COLORS[:3])
    assert mapping[-1] == 255 and sorted(mapping[:3].tolist()) == [0, 1, 2]


# ------------------------------------------------------------------ Cityscapes

# cityscapesScripts helpers/labels.py: labelId -> trainId for the 19 evaluated classes
OFFICIAL = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
            25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def test_labelids_to_trainids_matches_the_official_table():
    ids = np.arange(256, dtype=np.uint8).reshape(16, 16)
    train = masks.labelids_to_trainids(ids)
    assert train.dtype == np.uint8
    for label_id in range(256):
        assert train.flat[label_id] == OFFICIAL.get(label_id, 255), label_id
    wide = np.array([[-1, 7, 33, 34, 1000]], np.int64)  # -1 = license plate
    assert masks.labelids_to_trainids(wide).tolist() == [[255, 0, 18, 255, 255]]
    assert len(masks.CITYSCAPES_LABELS) == 35
    assert sorted(lab.id for lab in masks.CITYSCAPES_LABELS) == list(range(-1, 34))


def test_cityscapes_classes_and_colours():
    assert masks.CITYSCAPES_CLASSES == (
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
        "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
        "motorcycle", "bicycle")
    pal = masks.CITYSCAPES_PALETTE
    assert pal.shape == (19, 3) and pal.dtype == np.uint8
    assert tuple(pal[0]) == (128, 64, 128) and tuple(pal[1]) == (244, 35, 232)
    assert tuple(pal[10]) == (70, 130, 180) and tuple(pal[13]) == (0, 0, 142)
    assert tuple(pal[18]) == (119, 11, 32)
    assert (0, 0, 0) in masks.CITYSCAPES_VOID_COLORS and (81, 0, 81) in masks.CITYSCAPES_VOID_COLORS
    assert not set(masks.CITYSCAPES_VOID_COLORS) & {tuple(c) for c in pal.tolist()}


def test_cityscapes_colour_masks_decode_to_trainids():
    train = np.arange(20, dtype=np.uint8).reshape(4, 5)
    train[train == 19] = 255
    rgb = masks.index_to_rgb(train, masks.CITYSCAPES_PALETTE, ignore_color=(81, 0, 81))  # ground
    report = Counter()
    out = masks.cityscapes_colors_to_trainids(rgb, report=report)
    np.testing.assert_array_equal(out, train)
    assert report["colour-mask pixels of void colours (ignored)"] == 1
    noisy = rgb.astype(int)
    noisy[0, 0] += (5, -5, 5)                   # road + JPEG noise
    noisy[3, 3] = (0, 0, 112)                   # a blurred car edge near trailer (0, 0, 110)
    out = masks.cityscapes_colors_to_trainids(noisy.astype(np.uint8), tolerance=40, report=report)
    assert out[0, 0] == 0 and out[3, 3] == 13   # not ignored as "trailer"
    assert report["colour-mask pixels matched within tolerance"] == 2


@pytest.mark.parametrize("call", [
    lambda m: masks.class_histogram(m, 3, path=PATH),
    lambda m: masks.instances_to_binary(m, path=PATH),
    lambda m: masks.validate_mask(m, num_classes=3, path=PATH),
])
def test_float_labels_are_rejected_everywhere(call):
    raises_named(lambda: call(np.full((4, 4), 1.5, np.float64)), "float64", "16 pixels fractional")


def test_a_full_size_cityscapes_colour_mask_with_jpeg_like_noise_decodes_to_its_train_ids():
    """A 1024x2048 colour mask, every channel off by up to 3, within the tolerance of 10 (its speed: about 0.3 s on a
    laptop core, vectorised; not timed here)."""
    rng = np.random.default_rng(0)
    train = rng.integers(0, 19, (128, 256)).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    rgb = masks.index_to_rgb(train, masks.CITYSCAPES_PALETTE).astype(np.int16)
    rgb = np.clip(rgb + rng.integers(-3, 4, rgb.shape, dtype=np.int16), 0, 255).astype(np.uint8)
    out = masks.cityscapes_colors_to_trainids(rgb, tolerance=10)
    assert (out == train).mean() > 0.999


def test_kmeans_refuses_colours_beyond_8_bits_and_the_mapping_an_ignore_beyond_uint8():
    sixteen_bit = np.array([[[300, 0, 0], [0, 0, 0]]], np.uint16)  # 300 would have become 44
    with pytest.raises(ConfigError, match="colours must be 8-bit"):
        masks.kmeans_colors(sixteen_bit, k=2)
    with pytest.raises(ConfigError, match="ignore_index 300 does not fit a uint8"):
        masks.match_clusters_to_palette(np.zeros((3, 3)), COLORS, ignore_index=300)
