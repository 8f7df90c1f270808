"""The quickstart's choice of the photo it draws (the command itself: test_cli.py)."""

import numpy as np
import pytest
import torch

from seglib.quickstart import median_photo

RASTER = np.arange(16).reshape(4, 4)


def photo(truth_pixels: int, predicted_pixels: int):
    """A 4×4 photo whose pet is its first ``truth_pixels`` pixels (raster order); the red channel holds the
    prediction, its first ``predicted_pixels`` pixels: IoU min/max of the two when both are pets."""
    image = np.zeros((4, 4, 3), np.uint8)
    image[RASTER < predicted_pixels] = 255
    return image, (RASTER < truth_pixels).astype(np.uint8)


class RedIsPet:
    """A predictor stub: p(pet) is the red channel."""

    def probabilities(self, images):
        return [torch.stack([1 - q, q]) for q in (torch.from_numpy(im[..., 0] / 255).float() for im in images)]


class Photos:
    def __init__(self, pairs):
        self.samples = [photo(*pair) for pair in pairs]

    def __len__(self):
        return len(self.samples)

    def load(self, i):
        return self.samples[i]


def test_median_photo_is_the_middle_one_by_pet_iou_leaving_out_photos_without_a_pet():
    # IoUs 0.75, 0.25, none, 1, 0.5, none, 0.125: of the five scored the middle is 0.5, photo 4 (counting the two
    # photos without a pet as 0 would make it 0.25)
    ds = Photos([(8, 6), (8, 2), (0, 0), (8, 8), (8, 4), (0, 0), (8, 1)])
    i, iou, p = median_photo(RedIsPet(), ds)
    assert (i, iou) == (4, 0.5)
    np.testing.assert_array_equal(p, ds.load(4)[0][..., 0] / 255)  # the pet probability of that photo


def test_median_photo_of_an_even_count_is_the_lower_middle_one_and_a_false_alarm_counts():
    # IoUs 0.75, 0.25, 0 (a pet predicted where there is none), 1, 0.5, 0.875: sorted 0, 0.25, 0.5 | 0.75, ...
    i, iou, _ = median_photo(RedIsPet(), Photos([(8, 6), (8, 2), (0, 4), (8, 8), (8, 4), (8, 7)]))
    assert (i, iou) == (4, 0.5)


def test_median_photo_of_a_single_photo_is_that_photo():
    assert median_photo(RedIsPet(), Photos([(0, 0), (8, 2), (0, 0)]))[:2] == (1, pytest.approx(0.25))
