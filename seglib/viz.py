"""Pictures of images and label maps, and the licence rule for committed outputs.

Licensed datasets may not be redistributed, and a notebook's committed outputs are a copy. When
``cfg.publish`` is set (``scripts/run_notebooks.py`` sets it), images and label maps of datasets
that are not ``redistributable`` are drawn as grey placeholders; run the notebook yourself to see
them. Numbers (counts, sizes, class frequencies) are shown either way.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from seglib.paths import FIGURES_DIR

IGNORE_COLOR = (255, 255, 255)


def colorize(labels: np.ndarray, palette: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """``HxW`` class indices → ``HxWx3`` colours; ignored pixels are white."""
    table = np.zeros((256, 3), np.uint8)
    table[: len(palette)] = palette
    table[ignore_index] = IGNORE_COLOR
    return table[labels]


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5,
            ignore_index: int = 255) -> np.ndarray:
    """The image with class colours blended in (background class 0 and ignore left clear)."""
    colours = colorize(labels, palette, ignore_index).astype(np.float32)
    blend = (labels > 0) & (labels != ignore_index)
    out = image.astype(np.float32)
    out[blend] = (1 - alpha) * out[blend] + alpha * colours[blend]
    return out.astype(np.uint8)


def show_image(ax, image: np.ndarray, *, hidden: bool = False, title: str | None = None) -> None:
    """``imshow`` without axes, or a placeholder when the image may not be published."""
    if hidden:
        ax.imshow(np.full((*image.shape[:2], 3), 200, np.uint8))
        ax.text(0.5, 0.5, "licensed image:\nrun the notebook\nto see it", ha="center",
                va="center", transform=ax.transAxes, fontsize=8)
    else:
        ax.imshow(image, interpolation="nearest")
    if title:
        ax.set_title(title, fontsize=9)
    ax.axis("off")


def show_samples(ds, indices, *, publish: bool = False, size: float = 2.4):
    """A grid: one row per sample with image, colour-coded labels and overlay."""
    hidden = publish and not ds.spec.redistributable
    fig, axes = plt.subplots(len(indices), 3, figsize=(3 * size, len(indices) * size * 0.8),
                             squeeze=False)
    for row, i in zip(axes, indices):
        image, labels = ds.load(i)
        show_image(row[0], image, hidden=hidden, title=ds.ids[i])
        show_image(row[1], colorize(labels, ds.palette), hidden=hidden, title="labels")
        show_image(row[2], overlay(image, labels, ds.palette), hidden=hidden, title="overlay")
    fig.tight_layout()
    return fig


def legend(ax, class_names, palette) -> None:
    """A colour legend of the classes beside a plot."""
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=np.asarray(c) / 255, label=n) for n, c in zip(class_names, palette)],
              loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)


def save_fig(fig, name: str, cfg) -> None:
    """Write ``figures/<name>.png`` in full runs only, so smoke runs never overwrite figures."""
    if not cfg.smoke:
        FIGURES_DIR.mkdir(exist_ok=True)
        fig.savefig(FIGURES_DIR / f"{name}.png", dpi=100, bbox_inches="tight")
