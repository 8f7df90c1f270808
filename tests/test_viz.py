"""The evaluation pictures, checked through the pixel data and lines they draw."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from seglib import viz  # noqa: E402
from seglib.data import SPECS  # noqa: E402
from seglib.history import write_history  # noqa: E402

PALETTE = np.array([[0, 0, 0], [200, 0, 0], [0, 150, 0]], np.uint8)
PLACEHOLDER = 200  # the grey of show_image(hidden=True)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def image_data(ax) -> np.ndarray:
    """The array of the (single) image drawn in ``ax``."""
    (im,) = ax.get_images()
    return np.asarray(im.get_array())


def image_axes(fig):
    return [ax for ax in fig.axes if ax.get_images() and ax.get_label() != "<colorbar>"]


def is_placeholder(ax) -> bool:
    data = image_data(ax)
    return data.ndim == 3 and bool((data == PLACEHOLDER).all())


def rgb_image(h=4, w=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_colorize_palette_and_white_ignore():
    out = viz.colorize(np.array([[0, 1], [2, 255]], np.uint8), PALETTE)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert (out[0, 1] == PALETTE[1]).all() and (out[1, 0] == PALETTE[2]).all()
    assert tuple(out[1, 1]) == (255, 255, 255)


def test_error_map_binary_colours():
    target = np.array([[0, 1, 0, 1, 255]], np.uint8)
    pred = np.array([[0, 0, 1, 1, 1]], np.uint8)
    out = viz.error_map(pred, target)
    c = viz.ERROR_COLORS
    expected = ["correct background", "false negative", "false positive", "correct foreground", "ignored"]
    assert out.dtype == np.uint8 and out.shape == (1, 5, 3)
    for x, kind in enumerate(expected):
        assert tuple(out[0, x]) == c[kind], kind
    assert c["false positive"] != c["false negative"]


def test_error_map_multiclass_colours():
    target = np.array([[0, 1, 2, 2, 255]], np.uint8)
    pred = np.array([[0, 2, 2, 1, 0]], np.uint8)
    out = viz.error_map(pred, target)
    c = viz.ERROR_COLORS
    for x, kind in enumerate(["correct", "wrong class", "correct", "wrong class", "ignored"]):
        assert tuple(out[0, x]) == c[kind], kind


def test_error_map_num_classes_decides_binary_or_not():
    target = np.array([[0, 1]], np.uint8)
    pred = np.array([[1, 1]], np.uint8)
    c = viz.ERROR_COLORS
    assert tuple(viz.error_map(pred, target)[0, 0]) == c["false positive"]
    assert tuple(viz.error_map(pred, target, num_classes=3)[0, 0]) == c["wrong class"]
    assert tuple(viz.error_map(pred, target, num_classes=3)[0, 1]) == c["correct"]


def test_error_map_shape_mismatch():
    with pytest.raises(ValueError, match="pred shape"):
        viz.error_map(np.zeros((3, 4), np.uint8), np.zeros((4, 3), np.uint8))


def test_error_figure_counts_legend_and_hidden():
    target = np.array([[0, 1, 0, 1], [0, 0, 255, 1]], np.uint8)
    pred = np.array([[1, 0, 1, 1], [0, 1, 1, 0]], np.uint8)  # 3 false positives, 2 false negatives
    image = rgb_image(2, 4)
    fig = viz.error_figure(image, pred, target)
    ax_img, ax_err = fig.axes
    assert "false positive 3 px" in ax_err.get_title() and "false negative 2 px" in ax_err.get_title()
    assert (image_data(ax_err) == viz.error_map(pred, target)).all()
    assert (image_data(ax_img) == image).all()
    labels = [t.get_text() for t in ax_err.get_legend().get_texts()]
    assert labels == ["correct background", "false negative", "false positive", "correct foreground", "ignored"]

    hidden = viz.error_figure(image, pred, target, hidden=True)
    assert all(is_placeholder(ax) for ax in hidden.axes)
    assert "false positive 3 px" in hidden.axes[1].get_title()  # numbers are shown either way


def test_four_panel_binary():
    rng = np.random.default_rng(1)
    image, prob = rgb_image(), rng.random((4, 5)).astype(np.float32)
    target = (rng.random((4, 5)) > 0.5).astype(np.uint8)
    target[0, 0] = 255
    fig = viz.four_panel(image, target, prob, threshold=0.3, palette=PALETTE)
    axes = image_axes(fig)
    assert len(axes) == 4
    assert (image_data(axes[0]) == image).all()
    assert (image_data(axes[1]) == viz.colorize(target, PALETTE)).all()
    assert tuple(image_data(axes[1])[0, 0]) == (255, 255, 255)
    assert (image_data(axes[2]) == viz.colorize((prob > 0.3).astype(np.uint8), PALETTE)).all()
    assert "0.3" in axes[2].get_title()
    (im,) = axes[3].get_images()
    assert np.allclose(im.get_array(), prob) and im.get_clim() == (0, 1) and im.get_cmap().name == "viridis"
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)


def test_four_panel_multiclass_softmax():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3, 4, 5))
    prob = np.exp(logits) / np.exp(logits).sum(0)
    target = rng.integers(0, 3, (4, 5)).astype(np.uint8)
    axes = image_axes(viz.four_panel(rgb_image(), target, prob, palette=PALETTE))
    assert (image_data(axes[2]) == viz.colorize(prob.argmax(0).astype(np.uint8), PALETTE)).all()
    assert np.allclose(image_data(axes[3]), prob.max(0))
    assert "confidence" in axes[3].get_title()


def test_four_panel_overlay_last():
    rng = np.random.default_rng(3)
    image, prob = rgb_image(), rng.random((4, 5)).astype(np.float32)
    fig = viz.four_panel(image, np.zeros((4, 5), np.uint8), prob, palette=PALETTE, last="overlay")
    axes = image_axes(fig)
    pred = (prob > 0.5).astype(np.uint8)
    assert (image_data(axes[3]) == viz.overlay(image, pred, PALETTE)).all()
    assert axes[3].get_title() == "overlay" and not any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    with pytest.raises(ValueError, match="overlay"):
        viz.four_panel(image, np.zeros((4, 5), np.uint8), prob, last="probabilities")


def test_four_panel_default_palette_and_titles():
    titles = ("a", "b", "c", "d")
    axes = image_axes(viz.four_panel(rgb_image(), np.zeros((4, 5), np.uint8), np.zeros((4, 5)), titles=titles))
    assert [ax.get_title() for ax in axes] == list(titles)


def architecture_labels(fig) -> list[str]:
    """The "C × H × W" line of each box label, left to right."""
    return [t.get_text().split("\n")[1] for t in fig.axes[0].texts if " × " in t.get_text()
            and "\n" in t.get_text()]


def shortcut_arrows(fig) -> list[str]:
    return [p.get_gid() for p in fig.axes[0].patches if p.get_gid()]


def hooked_shapes(model, x, modules) -> list[str]:
    """The output shapes of ``modules`` on one forward pass, seen by the test's own hooks."""
    import torch

    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, out, k=k: seen.__setitem__(k, out.shape[1:]) or None)
             for k, m in enumerate(modules)]
    with torch.no_grad():
        model.eval()(x)
    for hook in hooks:
        hook.remove()
    return [" × ".join(map(str, seen[k])) for k in range(len(modules))]


@pytest.mark.parametrize("name, skips", [("unet", ["skip", "skip"]), ("hourglass", [])])
def test_plot_architecture_boxes_are_the_hooks_shapes_and_skips_only_for_the_unet(name, skips):
    import torch
    from seglib.models import create_model

    model = create_model(name, 2, base_channels=4, depth=2).train()
    x = torch.randn(1, 3, 16, 24)
    fig = viz.plot_architecture(model, x)
    assert isinstance(fig, plt.Figure) and model.training  # its mode is given back
    expected = hooked_shapes(model, x, [model.inc, *model.downs, *model.ups, model.head])
    assert architecture_labels(fig) == ["3 × 16 × 24", *expected]
    assert expected[2] == "16 × 4 × 6"  # the bottleneck: 4 · 2² channels, 16×24 / 2²
    assert shortcut_arrows(fig) == skips
    arrow_labels = sorted(t.get_text() for t in fig.axes[0].texts if t.get_text().startswith("skip"))
    assert arrow_labels == (["skip +4 ch", "skip +8 ch"] if skips else [])


def test_plot_architecture_deeplab_low_level_path_and_upsampled_output():
    import torch
    from seglib.models import create_model

    model = create_model("deeplabv3plus", 2, backbone="resnet18")
    x = torch.randn(1, 3, 32, 48)
    fig = viz.plot_architecture(model, x)
    trunk, decoder = model.backbone, model.decoder
    expected = hooked_shapes(model, x, [trunk.maxpool, trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4,
                                        model.aspp, decoder.fuse, decoder.classifier])
    assert architecture_labels(fig) == ["3 × 32 × 48", *expected, "2 × 32 × 48"]  # the last: the logits, ×4
    assert expected[4] == "512 × 2 × 3" and expected[-1] == "2 × 8 × 12"  # output stride 16, decoder at 4
    assert shortcut_arrows(fig) == ["low-level"]
    assert any(t.get_text() == "low-level +48 ch" for t in fig.axes[0].texts)


def test_four_panel_hidden_shows_only_placeholders():
    image = rgb_image()
    fig = viz.four_panel(image, np.ones((4, 5), np.uint8), np.full((4, 5), 0.9), hidden=True)
    axes = image_axes(fig)
    assert len(axes) == 4 and all(is_placeholder(ax) for ax in axes)


@pytest.mark.parametrize("target_shape, prob_shape, match", [
    ((4, 6), (4, 5), "target shape"),
    ((4, 5), (4, 6), "probability shape"),
    ((4, 5), (3, 4, 6), "probability shape"),
    ((4, 5), (1, 3, 4, 5), "HxW or CxHxW"),
])
def test_four_panel_shape_mismatch(target_shape, prob_shape, match):
    with pytest.raises(ValueError, match=match):
        viz.four_panel(rgb_image(), np.zeros(target_shape, np.uint8), np.zeros(prob_shape))


def history_rows(mious):
    return [{"epoch": i + 1, "train_loss": 1.0 / (i + 1), "val_loss": 1.2 / (i + 1), "val_miou": m,
             "val_pixel_accuracy": 0.5 + m / 2, "val_mdice": m, "lr": 1e-3, "seconds": 1.0}
            for i, m in enumerate(mious)]


def vlines_at(ax):
    return [line.get_xdata()[0] for line in ax.get_lines() if len(set(line.get_xdata())) == 1]


@pytest.mark.parametrize("name", ["history.json", "history.csv"])
def test_plot_history_reads_engine_files_and_marks_best(tmp_path, name):
    rows = history_rows([0.2, 0.5, 0.4])
    write_history(tmp_path, rows)
    fig = viz.plot_history(tmp_path / name)
    loss_ax, miou_ax, acc_ax = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["loss", "miou", "pixel_accuracy"]
    curves = {line.get_label(): line for line in loss_ax.get_lines()}
    assert np.allclose(curves["train_loss"].get_ydata(), [r["train_loss"] for r in rows])
    assert np.allclose(curves["val_loss"].get_ydata(), [r["val_loss"] for r in rows])
    miou = next(line for line in miou_ax.get_lines() if line.get_label() == "val_miou")
    assert np.allclose(miou.get_xdata(), [1, 2, 3]) and np.allclose(miou.get_ydata(), [0.2, 0.5, 0.4])
    for ax in fig.axes:
        assert vlines_at(ax) == [2]
    assert any("epoch 2" in t.get_text() for t in miou_ax.get_legend().get_texts())


def test_plot_history_overlays_runs():
    fig = viz.plot_history({"unet": history_rows([0.1, 0.3]), "fcn": history_rows([0.4, 0.2, 0.1])},
                           metrics=("miou",))
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "unet val_miou" in labels and "fcn val_miou" in labels
    assert sorted(vlines_at(ax)) == [1, 2]


CONFUSION = np.array([[8, 2, 0], [0, 0, 0], [1, 1, 2]])


def confusion_data(fig) -> np.ndarray:
    return np.ma.filled(np.ma.asarray(image_axes(fig)[0].get_images()[0].get_array(), float), np.nan)


def test_plot_confusion_normalized_by_true_class():
    fig = viz.plot_confusion(CONFUSION, ["a", "b", "c"])
    m = confusion_data(fig)
    assert np.allclose(m[[0, 2]].sum(1), 1) and np.isnan(m[1]).all()
    assert np.allclose(m[2], [0.25, 0.25, 0.5])
    ax = image_axes(fig)[0]
    assert len(ax.texts) == 6  # the NaN row is not annotated
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert ax.get_xticklabels()[0].get_rotation() == 45


def test_plot_confusion_by_prediction_and_raw():
    m = confusion_data(viz.plot_confusion(CONFUSION, ["a", "b", "c"], normalize="pred"))
    assert np.allclose(m.sum(0), 1)
    raw = viz.plot_confusion(CONFUSION, ["a", "b", "c"], normalize=None)
    assert (confusion_data(raw) == CONFUSION).all()
    assert "8" in [t.get_text() for t in image_axes(raw)[0].texts]


def test_plot_confusion_no_annotations_above_12_classes_and_bad_input():
    k = 13
    fig = viz.plot_confusion(np.eye(k) * 5, [str(i) for i in range(k)])
    assert not image_axes(fig)[0].texts
    with pytest.raises(ValueError, match="matrix shape"):
        viz.plot_confusion(np.eye(3), ["a", "b"])
    with pytest.raises(ValueError, match="normalize"):
        viz.plot_confusion(np.eye(2), ["a", "b"], normalize="all")


def test_plot_per_class_iou_skips_absent_classes():
    iou = [0.9, np.nan, 0.3]
    fig = viz.plot_per_class_iou(iou, ["bg", "cat", "dog"], PALETTE, title="val")
    (ax,) = fig.axes
    bars = ax.patches
    assert [b.get_width() for b in bars] == [0.9, 0.3]
    assert np.allclose(bars[1].get_facecolor()[:3], PALETTE[2] / 255)
    assert [t.get_text() for t in ax.texts] == ["absent"]
    (mean,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert np.isclose(mean.get_xdata()[0], 0.6)
    assert ax.get_title() == "val"


def test_plot_per_class_iou_grouped_comparison():
    fig = viz.plot_per_class_iou([0.9, 0.5], ["bg", "fg"], compare={"fcn": [0.8, np.nan]}, name="unet")
    (ax,) = fig.axes
    assert len(ax.patches) == 3 and [t.get_text() for t in ax.texts] == ["absent"]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "unet" in labels and "fcn" in labels and "fcn mIoU 0.800" in labels
    with pytest.raises(ValueError, match="IoU of fcn"):
        viz.plot_per_class_iou([0.9, 0.5], ["bg", "fg"], compare={"fcn": [0.8]})


def test_compare_models_grid():
    images = [rgb_image(seed=0), rgb_image(seed=1)]
    targets = [np.zeros((4, 5), np.uint8), np.full((4, 5), 2, np.uint8)]
    preds = {"unet": [np.ones((4, 5), np.uint8)] * 2, "fcn": [np.full((4, 5), 2, np.uint8)] * 2}
    fig = viz.compare_models(images, targets, preds, palette=PALETTE, class_names=["bg", "a", "b"],
                             titles=["x", "y"])
    axes = np.array(fig.axes).reshape(2, 4)
    assert [ax.get_title() for ax in axes[0]] == ["x", "ground truth", "unet", "fcn"]
    assert (image_data(axes[1, 0]) == images[1]).all()
    assert (image_data(axes[1, 1]) == viz.colorize(targets[1], PALETTE)).all()
    assert (image_data(axes[0, 3]) == viz.colorize(preds["fcn"][0], PALETTE)).all()
    assert [t.get_text() for t in axes[0, -1].get_legend().get_texts()] == ["bg", "a", "b"]

    hidden = viz.compare_models(images, targets, preds, palette=PALETTE, hidden=True)
    assert all(is_placeholder(ax) for ax in hidden.axes)


def test_compare_models_mismatches():
    images, targets = [rgb_image()], [np.zeros((4, 5), np.uint8)]
    with pytest.raises(ValueError, match="2 unet for 1 images"):
        viz.compare_models(images, targets, {"unet": targets * 2}, palette=PALETTE)
    with pytest.raises(ValueError, match=r"unet shape \(5, 4\)"):
        viz.compare_models(images, targets, {"unet": [np.zeros((5, 4), np.uint8)]}, palette=PALETTE)


def test_save_fig_writes_in_full_runs_only(tmp_path, monkeypatch):
    from seglib.settings import NotebookSettings

    monkeypatch.setattr(viz, "FIGURES_DIR", tmp_path / "figures")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    viz.save_fig(fig, "smoke_run", NotebookSettings.smoke_preset())
    assert not (tmp_path / "figures").exists()  # the smoke tests never touch figures/
    viz.save_fig(fig, "full_run", NotebookSettings())
    assert (tmp_path / "figures" / "full_run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plt.close(fig)


def test_overlay_tints_class_0_of_scene_datasets_and_leaves_a_background_clear():
    # class 0 is sky in CamVid, building in MSRC: it used to be left untinted like a background
    image = np.full((1, 3, 3), 100, np.uint8)
    labels = np.array([[0, 1, 255]], np.uint8)
    palette = np.array([[255, 0, 0], [0, 255, 0]], np.uint8)
    background_class, overlay = viz.background_class, viz.overlay
    assert background_class(SPECS["camvid"].class_names) is None
    assert background_class(SPECS["pets"].class_names) == 0
    scene = overlay(image, labels, palette, background=background_class(SPECS["camvid"].class_names))
    assert scene[0, 0].tolist() == [177, 50, 50] and scene[0, 1].tolist() == [50, 177, 50]
    assert scene[0, 2].tolist() == [100, 100, 100]  # void stays clear
    person = overlay(image, labels, palette, background=0)
    assert person[0, 0].tolist() == [100, 100, 100] and person[0, 1].tolist() == [50, 177, 50]


@pytest.mark.parametrize("classes", [2, 11, 12, 21, 32])
def test_default_palette_gives_every_class_its_own_colour(classes):
    palette = viz.default_palette(classes)  # 12 classes used to repeat class 1's colour for class 11
    assert palette.shape == (classes, 3) and palette[0].tolist() == [0, 0, 0]
    assert len({tuple(c) for c in palette.tolist()}) == classes


def test_a_refused_per_class_plot_leaves_no_figure_open():
    plt.close("all")
    with pytest.raises(ValueError, match="does not match class_names"):
        viz.plot_per_class_iou([0.5, 0.2], ["a", "b", "c"])
    assert plt.get_fignums() == []


def test_colorize_refuses_labels_it_has_no_colour_for():
    from seglib.errors import ConfigError

    for labels, match in ((np.array([[0, 3]]), "label 3 has no colour: the palette has 3"),
                          (np.array([[0, -1]]), "label -1 has no colour"),
                          (np.array([[0.0, 1.0]]), "integer class indices, not float64")):
        with pytest.raises(ConfigError, match=match):
            viz.colorize(labels, PALETTE)
    out = viz.colorize(np.array([[False, True]]), PALETTE)  # a boolean mask is classes 0 and 1
    assert (out[0, 0] == PALETTE[0]).all() and (out[0, 1] == PALETTE[1]).all()


def test_plot_per_class_iou_refuses_a_palette_too_short():
    from seglib.errors import ConfigError

    with pytest.raises(ConfigError, match="the palette has 2 colours for 3 classes"):
        viz.plot_per_class_iou([0.5, 0.4, 0.3], ["a", "b", "c"], PALETTE[:2])


def test_plot_history_without_a_finite_miou_or_any_row():
    from seglib.errors import ConfigError

    fig = viz.plot_history(history_rows([float("nan"), float("nan")]), metrics=("miou",))  # every pixel void
    assert vlines_at(fig.axes[0]) == []  # no best epoch to mark
    with pytest.raises(ConfigError, match="has no rows"):
        viz.plot_history([])
    with pytest.raises(ConfigError, match="no 'val_miou' column"):
        viz.plot_history([{"epoch": 1, "train_loss": 0.5}])
