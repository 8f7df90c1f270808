"""Pictures of images and label maps, and the licence rule for committed outputs.

Licensed datasets may not be redistributed, and a notebook's committed outputs are a copy. When
``cfg.publish`` is set (``scripts/run_notebooks.py`` sets it), images and label maps of datasets
that are not ``redistributable`` are drawn as grey placeholders; run the notebook yourself to see
them. Numbers (counts, sizes, class frequencies) are shown either way.

Evaluation pictures: ``four_panel`` (image | truth | prediction | probability), ``error_map`` and
``error_figure``, ``plot_history``, ``plot_confusion``, ``plot_per_class_iou`` and
``compare_models``. Every function returns its Figure; ``save_fig`` writes it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from seglib.errors import ConfigError, DataError
from seglib.masks import IGNORE_INDEX
from seglib.paths import FIGURES_DIR

IGNORE_COLOR = (255, 255, 255)

# Error colours: Okabe–Ito orange and blue stay distinct under every common colour-vision deficiency.
ERROR_COLORS = {
    "correct background": (0, 0, 0),
    "correct foreground": (255, 255, 255),
    "false positive": (230, 159, 0),    # orange: predicted foreground, truly background
    "false negative": (0, 114, 178),    # blue: predicted background, truly foreground
    "correct": (0, 0, 0),
    "wrong class": (213, 94, 0),        # vermilion
    "ignored": (128, 128, 128),
}
_BINARY_KINDS = ("correct background", "false negative", "false positive", "correct foreground")  # 2*pred + target
_MULTICLASS_KINDS = ("correct", "wrong class")


def colorize(labels: np.ndarray, palette: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """``HxW`` class indices → ``HxWx3`` colours; ignored pixels are white. A label the palette has no colour
    for is refused (it would be drawn black, like a background)."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "biu":
        raise ConfigError(f"colorize takes integer class indices, not {labels.dtype} values: take the argmax (or "
                          "round) first")
    if labels.dtype == bool:  # a mask: classes 0 and 1 (as indices, not as a boolean selection)
        labels = labels.view(np.uint8)
    beyond = ((labels < 0) | (labels >= len(palette))) & (labels != ignore_index)
    if beyond.any():
        raise ConfigError(f"label {int(labels[beyond][0])} has no colour: the palette has {len(palette)} (labels "
                          f"0..{len(palette) - 1}, and {ignore_index} ignored); pass the dataset's palette or "
                          "default_palette(num_classes)")
    table = np.zeros((256, 3), np.uint8)
    table[: len(palette)] = palette
    table[ignore_index] = IGNORE_COLOR
    return table[labels]


def background_class(class_names) -> int | None:
    """0 when class 0 is a background (nothing worth tinting: "background", "non-boundary"), else None
    (scene datasets: class 0 is sky, building or road)."""
    return 0 if class_names[0] in ("background", "non-boundary") else None


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5,
            ignore_index: int = IGNORE_INDEX, background: int | None = 0) -> np.ndarray:
    """The image with class colours blended in; ignored pixels and the ``background`` class (None: none, every
    class is tinted; :func:`background_class` says which) are left clear."""
    colours = colorize(labels, palette, ignore_index).astype(np.float32)
    blend = labels != ignore_index
    if background is not None:
        blend &= labels != background
    out = image.astype(np.float32)
    out[blend] = (1 - alpha) * out[blend] + alpha * colours[blend]
    return out.astype(np.uint8)


def show_image(ax, image: np.ndarray, *, hidden: bool = False, title: str | None = None,
               **imshow_kwargs) -> None:
    """``imshow`` without axes (extra keywords go to ``imshow``), or a placeholder when the image
    may not be published."""
    if hidden:
        ax.imshow(np.full((*image.shape[:2], 3), 200, np.uint8))
        ax.text(0.5, 0.5, "licensed image:\nrun the notebook\nto see it", ha="center",
                va="center", transform=ax.transAxes, fontsize=8)
    else:
        ax.imshow(image, interpolation="nearest", **imshow_kwargs)
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
        show_image(row[2], overlay(image, labels, ds.palette, background=background_class(ds.class_names)),
                   hidden=hidden, title="overlay")
    fig.tight_layout()
    return fig


def legend(ax, class_names, palette) -> None:
    """A colour legend of the classes beside a plot."""
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(facecolor=np.asarray(c) / 255, edgecolor="0.5", linewidth=0.5, label=n)
                       for n, c in zip(class_names, palette)],
              loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)


def save_fig(fig, name: str, settings) -> None:
    """Write ``figures/<name>.png`` in full runs only (``settings.smoke`` false), so smoke runs never
    overwrite figures."""
    if not settings.smoke:
        FIGURES_DIR.mkdir(exist_ok=True)
        fig.savefig(FIGURES_DIR / f"{name}.png", dpi=100, bbox_inches="tight")


def _check_shape(name: str, shape, other: str, other_shape) -> None:
    if tuple(shape) != tuple(other_shape):
        raise ValueError(f"{name} shape {tuple(shape)} does not match {other} shape {tuple(other_shape)}")


def default_palette(num_classes: int) -> np.ndarray:
    """Black background, then matplotlib's tab10 colours (tab20 for up to 20 classes more, evenly spaced hues
    beyond: no two classes share a colour)."""
    n = num_classes - 1
    steps = np.arange(n) if n <= 20 else np.arange(n) / n
    colours = plt.get_cmap("tab10" if n <= 10 else "tab20" if n <= 20 else "hsv")(steps)[:, :3] * 255
    return np.vstack([[0, 0, 0], colours]).astype(np.uint8)


def _architecture_stages(model):
    """Stage names, kinds and modules of a UNet / Hourglass (``inc``, ``downs``, ``ups``, ``head``) or a
    DeepLabV3+ (``backbone``, ``aspp``, ``decoder``), and its possible shortcuts ``(label, source, target,
    main, fuse)``: stage ``source`` feeds stage ``target`` if ``fuse`` takes more channels than ``main`` gives."""
    if hasattr(model, "downs"):
        depth = len(model.downs)
        names = ["inc", *(f"down{i + 1}" for i in range(depth)), *(f"up{i + 1}" for i in range(depth)), "head"]
        kinds = ["encoder"] * depth + ["bottleneck"] + ["decoder"] * depth + ["head"]
        modules = [model.inc, *model.downs, *model.ups, model.head]
        paths = [("skip", depth - 1 - k, depth + 1 + k, up.up, up.conv) for k, up in enumerate(model.ups)]
    else:
        trunk, decoder = model.backbone, model.decoder
        names = ["stem", "layer1", "layer2", "layer3", "layer4", "ASPP", "decoder", "head"]
        kinds = ["trunk"] * 5 + ["ASPP", "decoder", "head"]
        modules = [trunk.maxpool, trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4, model.aspp,
                   decoder.fuse, decoder.classifier]
        paths = [("low-level", 1, 6, model.aspp, decoder.fuse)]
    return names, kinds, modules, paths


def plot_architecture(model, x, *, title: str | None = None):
    """An architecture diagram measured on one forward pass of ``x`` (a ``1×C×H×W`` tensor) with forward
    hooks: one box per stage, its height ∝ the feature map's height, its width ∝ log2(channels), labelled
    "C × H × W".

    Red arrows join a stage to a later one that concatenates its features (the UNet's skips, DeepLabV3+'s
    low-level path), labelled with the channels added. They are drawn only where the hooks see those extra
    channels, so an Hourglass gets none. Works for ``create_model("unet" | "hourglass" | "deeplabv3plus")``
    and for hand-built models with the same attribute names.
    """
    import torch
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch, Patch, Rectangle
    from matplotlib.path import Path as MplPath

    names, kinds, modules, paths = _architecture_stages(model)
    shapes = {}  # what the hooks see: stage -> C×H×W, (path, "main" | "fuse") -> channels

    def record(key, inputs=False):  # a hook must return None (a value would replace the output)
        def hook(module, args, output=None):
            shapes[key] = tuple((args[0] if inputs else output).shape[1:])
        return hook

    hooks = [m.register_forward_hook(record(k)) for k, m in enumerate(modules)]
    for k, (_, _, _, main, fuse) in enumerate(paths):
        hooks += [main.register_forward_hook(record((k, "main"))),
                  fuse.register_forward_pre_hook(record((k, "fuse"), inputs=True))]
    training = model.training
    try:
        with torch.no_grad():
            output = model.eval()(x)
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    boxes = [("input", "input", tuple(x.shape[1:]))] + [(name, kind, shapes[k])
                                                        for k, (name, kind) in enumerate(zip(names, kinds))]
    if tuple(output.shape[1:]) != boxes[-1][2]:  # DeepLabV3+ upsamples its stride-4 logits
        boxes.append(("output", "head", tuple(output.shape[1:])))

    colours = {"input": "0.85", "encoder": "#9ecae1", "trunk": "#9ecae1", "bottleneck": "#fdae6b",
               "ASPP": "#fdae6b", "decoder": "#a1d99b", "head": "#bcbddc"}
    tallest = max(h for _, _, (_, h, _) in boxes)
    fig, ax = plt.subplots(figsize=(0.9 * len(boxes) + 1.5, 3.4), layout="constrained")
    centres, widths, heights, left = [], [], [], 0.0
    for name, kind, (c, h, w) in boxes:
        width, height = 0.12 * np.log2(c + 1), 2.0 * h / tallest
        centre = left + max(width, 0.6) / 2
        ax.add_patch(Rectangle((centre - width / 2, -height / 2), width, height, facecolor=colours[kind],
                               edgecolor="k", linewidth=0.6))
        ax.text(centre, -1.12, f"{name}\n{c} × {h} × {w}", ha="center", va="top", fontsize=7)
        if centres:  # the main path, box to box
            ax.annotate("", (centre - width / 2, 0), (centres[-1] + widths[-1] / 2, 0),
                        arrowprops=dict(arrowstyle="->", color="0.5", lw=0.7))
        centres.append(centre), widths.append(width), heights.append(height)
        left += max(width, 0.6) + 0.35
    shortcuts = [(label, s + 1, t + 1, shapes[k, "fuse"][0] - shapes[k, "main"][0])  # +1: the input box
                 for k, (label, s, t, _, _) in enumerate(paths) if shapes[k, "fuse"][0] > shapes[k, "main"][0]]
    for level, (label, s, t, extra) in enumerate(sorted(shortcuts, key=lambda p: p[2] - p[1])):
        y = 1.15 + 0.3 * level
        path = MplPath([(centres[s], heights[s] / 2), (centres[s], y), (centres[t], y), (centres[t], heights[t] / 2)])
        ax.add_patch(FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=8, color="C3", lw=0.9, gid=label))
        ax.text((centres[s] + centres[t]) / 2, y + 0.02, f"{label} +{extra} ch", ha="center", va="bottom",
                fontsize=6, color="C3")
    ax.set(xlim=(-0.1, left - 0.25), ylim=(-1.7, 1.45 + 0.3 * len(shortcuts)))
    ax.axis("off")
    handles = [Patch(facecolor=colours[k], edgecolor="k", label=k) for k in dict.fromkeys(k for _, k, _ in boxes)]
    if shortcuts:
        handles.append(Line2D([], [], color="C3", marker=">", markersize=4, label="concatenated later"))
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    ax.set_title(title or f"{type(model).__name__} on a {' × '.join(map(str, x.shape[1:]))} input "
                 "(box height ∝ H, width ∝ log2 C)", fontsize=9)
    return fig


def four_panel(image, target, probability, *, threshold: float = 0.5, hidden: bool = False,
               titles=None, palette=None, last: str = "confidence", background: int | None = 0):
    """image | ground truth | prediction | probability (viridis, 0..1), or the prediction laid over
    the image with ``last="overlay"`` (the person-mask project's plot; ``background`` as in :func:`overlay`).

    ``probability`` is the ``HxW`` foreground probability of a binary task (prediction:
    ``p > threshold``) or a ``CxHxW`` softmax (prediction: argmax; last panel: the confidence,
    i.e. the max probability).
    """
    if last not in ("confidence", "overlay"):
        raise ValueError(f"last must be 'confidence' or 'overlay', got {last!r}")
    image, target, probability = np.asarray(image), np.asarray(target), np.asarray(probability, np.float32)
    if probability.ndim not in (2, 3):
        raise ValueError(f"probability must be HxW or CxHxW, got shape {probability.shape}")
    _check_shape("target", target.shape, "image", image.shape[:2])
    _check_shape("probability", probability.shape[-2:], "target", target.shape)
    if probability.ndim == 2:
        pred, confidence = (probability > threshold).astype(np.uint8), probability
        names = ("image", "ground truth", f"prediction (p > {threshold:g})", "P(foreground)")
    else:
        pred, confidence = probability.argmax(0).astype(np.uint8), probability.max(0)
        names = ("image", "ground truth", "prediction (argmax)", "confidence (max probability)")
    if palette is None:
        palette = default_palette(len(probability) if probability.ndim == 3 else 2)
    if last == "overlay":
        names = (*names[:3], "overlay")
    titles = titles or names
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.2), layout="constrained")
    for ax, panel, title in zip(axes, (image, colorize(target, palette), colorize(pred, palette)), titles):
        show_image(ax, panel, hidden=hidden, title=title)
    if last == "overlay":
        show_image(axes[3], overlay(image, pred, palette, background=background), hidden=hidden, title=titles[3])
    else:
        show_image(axes[3], confidence, hidden=hidden, title=titles[3], cmap="viridis", vmin=0, vmax=1)
        fig.colorbar(plt.cm.ScalarMappable(plt.Normalize(0, 1), "viridis"), ax=axes[3], fraction=0.046)
    return fig


def _error_codes(pred, target, ignore_index: int, num_classes: int | None):
    """Per-pixel index into the error kinds, and the kinds (the last is "ignored")."""
    pred, target = np.asarray(pred), np.asarray(target)
    _check_shape("pred", pred.shape, "target", target.shape)
    valid = target != ignore_index
    binary = num_classes == 2 or (num_classes is None and np.isin(pred, (0, 1)).all()
                                  and np.isin(target[valid], (0, 1)).all())
    if binary:
        kinds, codes = _BINARY_KINDS, 2 * (pred == 1) + (target == 1)
    else:
        kinds, codes = _MULTICLASS_KINDS, (pred != target).astype(int)
    return np.where(valid, codes, len(kinds)), (*kinds, "ignored")


def _paint(codes, kinds) -> np.ndarray:
    return np.array([ERROR_COLORS[k] for k in kinds], np.uint8)[codes]


def error_map(pred, target, ignore_index: int = IGNORE_INDEX, num_classes: int | None = None) -> np.ndarray:
    """``HxWx3`` uint8 picture of the errors (colours in ``ERROR_COLORS``).

    Binary (``num_classes == 2``, or labels within {0, 1}): correct background black, correct
    foreground white, false positive orange, false negative blue. Multiclass: correct black, wrong
    class vermilion. Ignored pixels are mid grey either way.
    """
    return _paint(*_error_codes(pred, target, ignore_index, num_classes))


def error_figure(image, pred, target, *, hidden: bool = False, class_names=None, ignore_index: int = IGNORE_INDEX):
    """image | error map, with a legend of the error colours and the error pixel counts in the title."""
    _check_shape("target", np.shape(target), "image", np.shape(image)[:2])
    codes, kinds = _error_codes(pred, target, ignore_index, len(class_names) if class_names else None)
    counts = np.bincount(codes.ravel(), minlength=len(kinds))
    title = ", ".join(f"{k} {counts[kinds.index(k)]:,} px" for k in ("false positive", "false negative", "wrong class")
                      if k in kinds)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    show_image(axes[0], image, hidden=hidden, title="image")
    show_image(axes[1], _paint(codes, kinds), hidden=hidden, title=title)
    legend(axes[1], kinds, [ERROR_COLORS[k] for k in kinds])
    fig.tight_layout()
    return fig


def _read_history(source) -> list[dict]:
    """Rows of a history list, or of a ``history.json`` / ``history.csv`` written by ``seglib.engine``."""
    if not isinstance(source, (str, Path)):
        return list(source)
    path = Path(source)
    if path.suffix == ".json":
        try:
            return json.loads(path.read_text())
        except ValueError as exc:  # half copied, or not seglib's
            raise DataError(path, f"is not a readable history ({exc})", "pass the history.json a run wrote; "
                            "while a run trains, it is replaced whole at each validation") from exc
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _column(rows, key: str) -> np.ndarray:
    """One column of the history as floats; an empty cell (a CSV row without that value) is NaN."""
    if any(key not in row for row in rows):
        raise ConfigError(f"the history has no {key!r} column (it has {', '.join(rows[0])}): pass one written by "
                          "seglib.engine (history.json or history.csv), or other metrics=")
    return np.array([float(row[key]) if row[key] not in ("", None) else np.nan for row in rows])


def plot_history(history, metrics=("loss", "miou", "pixel_accuracy")):
    """One subplot per metric over epochs ("loss": train and val; others: the ``val_`` column), with
    the best val mIoU epoch marked by a dotted line. ``history``: rows, a path to ``history.json`` /
    ``history.csv``, or ``{run name: either}`` to overlay several runs."""
    runs = {name: _read_history(source) for name, source in (history if isinstance(history, dict)
                                                             else {"": history}).items()}
    for name, rows in runs.items():
        if not rows:
            raise ConfigError(f"the history{f' of {name}' if name else ''} has no rows: no validation has run yet")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3), squeeze=False, layout="constrained")
    for i, (name, rows) in enumerate(runs.items()):
        colour, prefix = f"C{i}", f"{name} " if name else ""
        epochs, miou = _column(rows, "epoch"), _column(rows, "val_miou")
        best = epochs[np.nanargmax(miou)] if np.isfinite(miou).any() else None  # all NaN: every pixel void
        for ax, metric in zip(axes[0], metrics):
            for key in ("train_loss", "val_loss") if metric == "loss" else (f"val_{metric}",):
                ax.plot(epochs, _column(rows, key), color=colour, ls="--" if key.startswith("train") else "-",
                        label=prefix + key)
            if best is not None:
                ax.axvline(best, color=colour, ls=":", label=f"{prefix}best mIoU (epoch {best:g})")
    for ax, metric in zip(axes[0], metrics):
        ax.set(title=metric, xlabel="epoch")
        ax.legend(fontsize=7)
    return fig


def plot_confusion(matrix, class_names, normalize: str | None = "true"):
    """Heatmap of a ``KxK`` confusion matrix ``matrix[true, pred]``, normalized by rows ("true"), by
    columns ("pred") or not (None). Rows/columns without pixels stay blank (NaN)."""
    m, k = np.asarray(matrix, np.float64), len(class_names)
    _check_shape("matrix", m.shape, "class_names", (k, k))
    if normalize not in ("true", "pred", None):
        raise ValueError(f"normalize must be 'true', 'pred' or None, not {normalize!r}")
    if normalize:
        totals = m.sum(axis=1 if normalize == "true" else 0, keepdims=True)
        m = np.divide(m, totals, out=np.full_like(m, np.nan), where=totals > 0)
    fig, ax = plt.subplots(figsize=(3 + 0.5 * k, 2.5 + 0.45 * k), layout="constrained")
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set(xlabel="predicted", ylabel="true",
           title=f"confusion matrix ({f'normalized by {normalize} class' if normalize else 'pixels'})")
    if k <= 12:
        high = np.nanmax(m) / 2 if np.isfinite(m).any() else 0
        for (t, p), value in np.ndenumerate(m):
            if np.isfinite(value):
                ax.text(p, t, f"{value:.2f}" if normalize else f"{value:,.0f}", ha="center", va="center",
                        fontsize=7, color="white" if value > high else "black")
    return fig


def plot_per_class_iou(iou, class_names, palette=None, *, title=None, compare=None, name: str = "model"):
    """Horizontal bars of per-class IoU, coloured by ``palette``, a dashed line at the mean (mIoU).
    NaN (class absent) gets no bar, only the word "absent". ``compare`` ({model: iou}) adds grouped
    bars, one colour per model, ``iou`` being labelled ``name``."""
    series, k = {name: iou, **(compare or {})}, len(class_names)
    series = {label: np.asarray(values, np.float64) for label, values in series.items()}
    for label, values in series.items():  # before the figure: a refused input leaves no figure behind
        _check_shape(f"IoU of {label}", values.shape, "class_names", (k,))
    if palette is not None and len(palette) < k:
        raise ConfigError(f"the palette has {len(palette)} colours for {k} classes: pass the dataset's palette, "
                          "or default_palette(len(class_names))")
    single, height = len(series) == 1, 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(6, 1 + 0.3 * k * len(series) ** 0.5), layout="constrained")
    for j, (label, values) in enumerate(series.items()):
        y, present = np.arange(k) + (j - (len(series) - 1) / 2) * height, ~np.isnan(values)
        colour = np.asarray(palette)[:k][present] / 255 if single and palette is not None else f"C{j}"
        ax.barh(y[present], values[present], height, color=colour, edgecolor="k", linewidth=0.5,
                label=None if single else label)
        for yy in y[~present]:
            ax.text(0.01, yy, "absent", va="center", fontsize=7, color="grey")
        mean = np.nanmean(values)
        ax.axvline(mean, ls="--", color="k" if single else f"C{j}",
                   label=f"{'' if single else label + ' '}mIoU {mean:.3f}")
    ax.set_yticks(range(k), class_names)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="IoU", title=title or "per-class IoU")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def compare_models(images, targets, predictions, *, palette, class_names=None, hidden: bool = False, titles=None):
    """One row per image: image | ground truth | each model's prediction (``predictions``:
    ``{model name: list of HxW label maps}``), with a class legend when ``class_names`` is given."""
    for what, maps in {"targets": targets, **predictions}.items():
        if len(maps) != len(images):
            raise ValueError(f"{len(maps)} {what} for {len(images)} images")
        for image, labels in zip(images, maps):
            _check_shape(what, np.shape(labels), "image", np.shape(image)[:2])
    columns = ["ground truth", *predictions]
    fig, axes = plt.subplots(len(images), len(columns) + 1, squeeze=False,
                             figsize=(2.4 * (len(columns) + 1), 2.2 * len(images)))
    for i, row in enumerate(axes):
        show_image(row[0], images[i], hidden=hidden, title=titles[i] if titles else "image")
        for ax, column, labels in zip(row[1:], columns, [targets[i], *(p[i] for p in predictions.values())]):
            show_image(ax, colorize(labels, palette), hidden=hidden, title=column)
    if class_names:
        legend(axes[0, -1], class_names, palette)
    fig.tight_layout()
    return fig
