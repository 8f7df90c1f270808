"""A synthetic shapes dataset that ships with the workbook (it is generated, so it is free to share).

Each image is a textured background with discs, squares and triangles of random colours, sizes
and positions; the mask holds the class of each pixel (0 background, 1 disc, 2 square,
3 triangle). It lets every notebook and test run on a fresh clone with no downloaded data.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = ("background", "disc", "square", "triangle")
PALETTE = np.array([(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200)], dtype=np.uint8)


def _triangle(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    """Upward triangle inscribed in a circle of radius ``r`` centred at (cy, cx)."""
    top, base = cy - r, cy + r / 2
    half = (yy - top) / (base - top) * r * 0.866
    return (yy >= top) & (yy <= base) & (np.abs(xx - cx) <= half)


def make_sample(seed: int | np.random.Generator, size: tuple[int, int] = (128, 128),
                max_shapes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """One (image ``HxWx3`` uint8, mask ``HxW`` uint8) pair, fully determined by ``seed``."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gradient = (yy / h)[..., None] * rng.uniform(-60, 60, 3) + (xx / w)[..., None] * rng.uniform(-60, 60, 3)
    background = rng.uniform(60, 190, 3)
    image = background + gradient + rng.normal(0, 12, (h, w, 3))
    mask = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(1, max_shapes + 1)):
        cls = int(rng.integers(1, len(CLASS_NAMES)))
        r = rng.uniform(0.06, 0.22) * min(h, w)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        if cls == 1:
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        elif cls == 2:
            inside = (np.abs(yy - cy) <= r * 0.8) & (np.abs(xx - cx) <= r * 0.8)
        else:
            inside = _triangle(yy, xx, cy, cx, r)
        color = rng.uniform(0, 255, 3)
        while np.abs(color - background).sum() < 150:  # keep every shape visible
            color = rng.uniform(0, 255, 3)
        image[inside] = color + rng.normal(0, 8, (int(inside.sum()), 3))
        mask[inside] = cls
    return np.clip(image, 0, 255).astype(np.uint8), mask
