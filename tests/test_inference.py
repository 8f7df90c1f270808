"""Inference and evaluation at native resolution, and boundary IoU (the commands: test_cli.py)."""

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from seglib.cache import resize_image
from seglib.checkpoint import save_checkpoint
from seglib.data import SPECS, load_dataset
from seglib.errors import ConfigError, DataError
from seglib.evaluation import BoundaryIoU, boundary_band, evaluate_dataset, format_report
from seglib.gpu_augment import normalize
from seglib.inference import Predictor, load_model, measure_latency
from seglib.models import create_model
from seglib.synthetic import make_sample


class ColourModel(torch.nn.Module):
    """Logits that depend on the red channel and on x, so flips and resizing are visible."""

    def __init__(self, classes: int = 2):
        super().__init__()
        self.classes = classes
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        ramp = torch.linspace(-1, 1, x.shape[-1]).view(1, 1, -1).expand_as(x[:, 0])
        red = x[:, 0] + 0.5 * ramp
        channels = [red * (c - (self.classes - 1) / 2) for c in range(self.classes)]
        return torch.stack(channels, 1) + self.dummy


def independent_logits(model, image, size, flip=False):
    """The documented pipeline written out: resize, normalize, model, logits resized back."""
    x = normalize(torch.from_numpy(resize_image(image, size))[None].permute(0, 3, 1, 2))
    logits = model(x.flip(-1)).flip(-1) if flip else model(x)
    return F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)[0]


# ------------------------------------------------------------------ boundary IoU


def test_boundary_band_of_a_square_is_its_inner_ring():
    m = torch.zeros(1, 9, 9, dtype=torch.bool)
    m[0, 2:7, 2:7] = True
    band = boundary_band(m, 1)[0]
    expected = m[0].clone()
    expected[3:6, 3:6] = False
    assert torch.equal(band, expected)
    assert int(boundary_band(m, 2)[0].sum()) == 25 - 1  # only the centre is 3 px from the edge
    full = torch.ones(1, 6, 6, dtype=torch.bool)
    assert torch.equal(boundary_band(full, 1)[0], ~F.pad(torch.ones(4, 4, dtype=torch.bool), (1, 1, 1, 1),
                                                          value=False))  # the image border is an edge


def scipy_boundary_iou(preds, targets, k, width, ignore=255):
    """Boundary IoU with scipy's binary erosion (square structuring element), summed over images."""
    inter, union = np.zeros(k), np.zeros(k)
    square = np.ones((2 * width + 1,) * 2, bool)
    for pred, target in zip(preds, targets):
        valid = target != ignore
        for c in range(k):
            g, p = target == c, (pred == c) & valid  # regions end at void
            gb = g & ~ndimage.binary_erosion(g, square, border_value=0)
            pb = p & ~ndimage.binary_erosion(p, square, border_value=0)
            inter[c] += (gb & pb).sum()
            union[c] += (gb | pb).sum()
    with np.errstate(invalid="ignore"):
        return inter / union


def test_boundary_iou_matches_scipy_erosion():
    rng = np.random.default_rng(0)
    metric = BoundaryIoU(4, width=2)
    preds, targets = [], []
    for i, size in enumerate([(40, 56), (33, 33)]):
        _, target = make_sample(i, size)
        pred = ndimage.shift(target, (1, -2), order=0, mode="nearest")  # a slightly wrong prediction
        pred[rng.random(size) < 0.02] = 3
        target[:3] = 255
        preds.append(pred)
        targets.append(target)
        metric.update(torch.from_numpy(pred).long(), torch.from_numpy(target).long())
    np.testing.assert_allclose(metric.compute(), scipy_boundary_iou(preds, targets, 4, 2), equal_nan=True)


def test_boundary_iou_is_one_when_right_and_ignores_void():
    _, target = make_sample(3, (48, 48))
    metric = BoundaryIoU(4, width=3)
    t = torch.from_numpy(target).long()
    wrong_in_void = t.clone()
    void = torch.zeros_like(t, dtype=torch.bool)
    void[:, :10] = True
    t[void] = 255
    wrong_in_void[void] = 0
    metric.update(wrong_in_void, t)
    present = np.unique(target[:, 10:])
    assert all(metric.compute()[c] == 1.0 for c in present)


def test_boundary_iou_scores_the_edge_of_an_ignored_outline():
    """A pets trimap: the object is ringed by void, so the band inside the ring is its edge."""
    target = torch.zeros(60, 60, dtype=torch.long)
    target[15:45, 15:45] = 255  # the trimap's uncertain border, 4 px wide
    target[19:41, 19:41] = 1
    right = (target == 1).long()
    right[17:43, 17:43] = 1  # the predicted edge anywhere inside the void ring costs nothing
    metric = BoundaryIoU(2, width=3)
    metric.update(right, target)
    assert metric.inter[1] == 22 * 22 - 16 * 16  # the object's 3-px inner ring, not an empty band
    assert metric.compute() == [1.0, 1.0]
    shrunk = torch.zeros_like(target)
    shrunk[21:39, 21:39] = 1  # 2 px short on every side
    metric = BoundaryIoU(2, width=3)
    metric.update(shrunk, target)
    # bands: truth 22²-16² = 228, prediction 18²-12² = 180, shared only its outer ring 18²-16² = 68
    assert metric.compute()[1] == 68 / (228 + 180 - 68)


def test_default_band_is_two_percent_of_the_diagonal():
    assert BoundaryIoU(2).band_width(300, 400) == 10
    assert BoundaryIoU(2).band_width(20, 20) == 1


# ------------------------------------------------------------------ prediction at native resolution


@pytest.mark.parametrize("size", [(37, 53), (64, 20)])
def test_predictor_resizes_logits_back_to_each_image(size):
    model = ColourModel(3)
    predictor = Predictor(model, image_size=16, class_names=["a", "b", "c"], device="cpu", batch_size=2)
    images = [make_sample(i, size)[0] for i in range(3)]
    probs = predictor.probabilities(images)
    labels = predictor.labels(images)
    for image, p, label in zip(images, probs, labels):
        expected = independent_logits(model, image, 16)
        assert p.shape == (3, *size)
        torch.testing.assert_close(p, expected.softmax(0))
        assert label.shape == size and label.dtype == np.uint8
        np.testing.assert_array_equal(label, expected.argmax(0).numpy())


def test_flip_and_scale_tta_average_the_views():
    model = ColourModel(2)
    predictor = Predictor(model, image_size=16, class_names=["bg", "fg"], device="cpu")
    image = make_sample(5, (30, 41))[0]
    views = [independent_logits(model, image, s, f).softmax(0) for s in (12, 16, 20) for f in (False, True)]
    got = predictor.probabilities([image], flip=True, scales=(0.75, 1.0, 1.25))[0]
    torch.testing.assert_close(got, torch.stack(views).mean(0))
    assert not torch.allclose(got, predictor.probabilities([image])[0])  # the views did differ


def test_sigmoid_models_are_two_class_and_threshold_applies_to_them_only():
    model = ColourModel(2)
    one_channel = type("OneChannel", (torch.nn.Module,), {"forward": lambda self, x: model(x)[:, 1:]})()
    predictor = Predictor(one_channel, image_size=16, class_names=["bg", "fg"], device="cpu")
    image = make_sample(1, (24, 24))[0]
    p = predictor.probabilities([image])[0]
    fg = independent_logits(one_channel, image, 16)[0].sigmoid()
    torch.testing.assert_close(p, torch.stack([1 - fg, fg]))
    for t in (0.2, 0.5, 0.8):
        np.testing.assert_array_equal(predictor.labels([image], threshold=t)[0], (fg > t).numpy())
    with pytest.raises(ConfigError, match="two-class"):
        Predictor(ColourModel(3), image_size=16, class_names="abc", device="cpu").labels([image], threshold=0.5)


def test_bad_inputs_are_refused():
    predictor = Predictor(ColourModel(2), image_size=16, class_names=["bg", "fg"], device="cpu")
    for image in (np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32)):  # no colour; 0..1 floats
        with pytest.raises(ConfigError, match="H×W×3 uint8"):
            predictor.labels([image])


def test_a_predictor_runs_its_model_in_eval_mode():
    model = create_model("unet", 2, base_channels=4, depth=2).train()
    assert not Predictor(model, image_size=16, class_names=["bg", "fg"], device="cpu").model.training


def test_load_model_refuses_a_checkpoint_without_meta(tmp_path):
    save_checkpoint({"model": create_model("unet", 2, base_channels=8, depth=2).state_dict()}, tmp_path / "x.pt")
    with pytest.raises(DataError, match="no 'meta'"):
        load_model(tmp_path / "x.pt")


# ------------------------------------------------------------------ evaluate_dataset


def numpy_metrics(preds, targets, k, ignore=255):
    mat = np.zeros((k, k), np.int64)
    for p, t in zip(preds, targets):
        keep = t != ignore
        np.add.at(mat, (t[keep].astype(int), p[keep].astype(int)), 1)
    tp = np.diag(mat)
    with np.errstate(invalid="ignore"):
        iou = tp / (mat.sum(0) + mat.sum(1) - tp)
    return mat, iou, tp.sum() / mat.sum()


def test_evaluate_dataset_matches_an_independent_computation(smoke_run):
    predictor = Predictor.from_checkpoint(smoke_run / "best.pt", device="cpu", batch_size=3)
    ds = load_dataset("synthetic", "val", max_samples=7)
    report = evaluate_dataset(predictor, ds, progress=False, boundary_width=2)
    samples = [ds.load(i) for i in range(len(ds))]
    preds = predictor.labels([image for image, _ in samples])
    targets = [labels for _, labels in samples]
    mat, iou, acc = numpy_metrics(preds, targets, 4)
    assert report["confusion_matrix"] == mat.tolist()
    assert report["images"] == len(ds) >= 5 and report["pixel_accuracy"] == pytest.approx(acc)
    assert report["miou"] == pytest.approx(np.nanmean(iou))
    assert [c["iou"] for c in report["classes"]] == pytest.approx([None if np.isnan(v) else v for v in iou])
    assert [c["pixels"] for c in report["classes"]] == mat.sum(1).tolist()
    with np.errstate(invalid="ignore"):
        accuracy, dice = np.diag(mat) / mat.sum(1), 2 * np.diag(mat) / (mat.sum(0) + mat.sum(1))
    assert [c["accuracy"] for c in report["classes"]] == pytest.approx([None if np.isnan(v) else v for v in accuracy])
    assert report["mean_class_accuracy"] == pytest.approx(np.nanmean(accuracy))
    assert report["mdice"] == pytest.approx(np.nanmean(dice))
    boundary = scipy_boundary_iou(preds, targets, 4, 2)
    assert [c["boundary_iou"] for c in report["classes"]] == pytest.approx(list(boundary))
    assert report["boundary_miou"] == pytest.approx(np.nanmean(boundary))
    assert report["foreground_iou"] is None  # 4 classes: no single foreground
    assert "mIoU" in format_report(report) and "triangle" in format_report(report)


def test_evaluate_dataset_runs_the_views_its_report_names():
    predictor = Predictor(ColourModel(4), image_size=16, class_names=SPECS["synthetic"].class_names, device="cpu",
                          batch_size=3)
    ds = load_dataset("synthetic", "val", max_samples=5)
    images, targets = zip(*(ds.load(i) for i in range(len(ds))))
    tta = dict(flip=True, scales=(0.75, 1.0))
    report = evaluate_dataset(predictor, ds, progress=False, **tta)
    with_tta, _, _ = numpy_metrics(predictor.labels(list(images), **tta), targets, 4)
    plain, _, _ = numpy_metrics(predictor.labels(list(images)), targets, 4)
    assert report["confusion_matrix"] == with_tta.tolist() != plain.tolist()
    assert report["tta"] == {"flip": True, "scales": [0.75, 1.0]}


def test_binary_report_has_foreground_iou_and_two_class_miou(tmp_path):
    model = ColourModel(2)
    predictor = Predictor(model, image_size=16, class_names=["background", "shape"], device="cpu")

    class Binary:  # a two-class view of the synthetic shapes: any shape is foreground
        def __init__(self, ds):
            self.ds, self.name, self.split, self.folder = ds, "binary", "val", ds.folder
            self.num_classes, self.ignore_index = 2, 255

        def __len__(self):
            return len(self.ds)

        def load(self, i):
            image, labels = self.ds.load(i)
            return image, (labels > 0).astype(np.uint8)

    ds = Binary(load_dataset("synthetic", "val", max_samples=4))
    report = evaluate_dataset(predictor, ds, progress=False)
    bg, fg = (c["iou"] for c in report["classes"])
    assert report["foreground_iou"] == fg
    assert report["miou"] == pytest.approx((bg + fg) / 2)

    # a third class that neither the truth nor the model ever holds: no score, and out of every mean
    never = type("NeverThird", (torch.nn.Module,), {"forward": lambda self, x: torch.cat(
        [model(x), torch.full_like(x[:, :1], -1e4)], 1)})()
    ds.num_classes = 3
    three = evaluate_dataset(Predictor(never, image_size=16, class_names=["background", "shape", "never"],
                                       device="cpu"), ds, progress=False)
    assert three["classes"][2]["iou"] is None and three["classes"][2]["boundary_iou"] is None
    assert three["miou"] == pytest.approx(report["miou"])
    assert three["boundary_miou"] == pytest.approx(report["boundary_miou"])


def test_class_count_mismatch_is_refused():
    predictor = Predictor(ColourModel(2), image_size=16, class_names=["bg", "fg"], device="cpu")
    with pytest.raises(ConfigError, match="predicts 2 classes .* synthetic has 4; score it on a dataset of 2 classes"):
        evaluate_dataset(predictor, load_dataset("synthetic", "val", max_samples=2), progress=False)


# ------------------------------------------------------------------ latency


class SleepyModel(torch.nn.Module):
    """Counts its calls and sleeps 5 ms in each, checking that it runs in inference mode."""

    def __init__(self):
        super().__init__()
        self.calls, self.shapes = 0, []

    def forward(self, x):
        assert torch.is_inference_mode_enabled()
        self.calls += 1
        self.shapes.append(tuple(x.shape))
        time.sleep(0.005)
        return x


def test_measure_latency():
    r = measure_latency(create_model("unet", 2, base_channels=8, depth=2), 32, device="cpu", warmup=1, iters=3)
    assert r["ms_p90"] >= r["ms_median"] > 0
    assert r["images_per_s"] == pytest.approx(1000 / r["ms_median"])


def test_measure_latency_times_each_call_after_the_warmup_in_inference_mode():
    model = SleepyModel()
    r = measure_latency(model, 24, device="cpu", batch_size=4, warmup=2, iters=5)
    assert model.calls == 2 + 5 and set(model.shapes) == {(4, 3, 24, 24)}
    assert r["iters"] == 5 and r["batch_size"] == 4 and r["image_size"] == 24
    assert 5 <= r["ms_min"] <= r["ms_median"] <= r["ms_p90"]  # every timed call holds one 5 ms sleep
    assert r["images_per_s"] == pytest.approx(4 * 1000 / r["ms_median"])


def test_an_unknown_amp_is_refused_not_taken_for_fp16():
    # "fp32" or "none" used to mean fp16 autocast on CUDA
    model = create_model("unet", 2, base_channels=4, depth=2)
    for amp in ("fp32", "none", "Off"):
        with pytest.raises(ConfigError, match="amp must be one of bf16, fp16, off"):
            Predictor(model, image_size=32, class_names=["a", "b"], device="cpu", amp=amp)
        with pytest.raises(ConfigError, match="amp must be one of bf16, fp16, off"):
            measure_latency(model, 32, device="cpu", amp=amp, warmup=0, iters=1)


def test_probabilities_can_be_edited_by_the_caller():
    # they were inference tensors: q[1] = 0 raised "Inplace update to inference tensor outside InferenceMode"
    predictor = Predictor(create_model("unet", 2, base_channels=4, depth=2), image_size=32,
                          class_names=["a", "b"], device="cpu")
    q = predictor.probabilities([np.zeros((20, 24, 3), np.uint8)])[0]
    q[1] = 0
    assert q.shape == (2, 20, 24) and q[1].abs().max() == 0
