"""Inference and evaluation at native resolution, boundary IoU, and the evaluate / predict /
export / latency commands."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from seglib.cache import resize_image
from seglib.checkpoint import save_checkpoint
from seglib.data import load_dataset
from seglib.engine import TrainConfig, fit
from seglib.errors import ConfigError, DataError
from seglib.evaluation import BoundaryIoU, boundary_band, evaluate_dataset, format_report
from seglib.gpu_augment import normalize
from seglib.inference import Predictor, load_model, measure_latency
from seglib.models import create_model
from seglib.synthetic import make_sample


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "seglib", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


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


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny UNet trained for a few steps on the synthetic shapes (4 classes)."""
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(dataset="synthetic", model="unet", model_options={"base_channels": 8, "depth": 2},
                      epochs=1, image_size=32, batch_size=4, max_samples=8, max_steps=3, lr=1e-2,
                      data_path="gpu", num_workers=0, out=str(out))
    fit(cfg, device="cpu", verbose=False)
    return out / "best.pt"


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
            g, p = (target == c) | ~valid, (pred == c) | ~valid  # void makes no edges
            gb = g & ~ndimage.binary_erosion(g, square, border_value=0) & valid
            pb = p & ~ndimage.binary_erosion(p, square, border_value=0) & valid
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
    with pytest.raises(ConfigError, match="H×W×3 uint8"):
        predictor.labels([np.zeros((8, 8), np.uint8)])


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


def test_evaluate_dataset_matches_an_independent_computation(checkpoint):
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", batch_size=3)
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
    assert [c["boundary_iou"] for c in report["classes"]] == pytest.approx(
        list(scipy_boundary_iou(preds, targets, 4, 2)))
    assert report["foreground_iou"] is None  # 4 classes: no single foreground
    assert "mIoU" in format_report(report) and "triangle" in format_report(report)


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


def test_class_count_mismatch_is_refused(checkpoint):
    predictor = Predictor(ColourModel(2), image_size=16, class_names=["bg", "fg"], device="cpu")
    with pytest.raises(ConfigError, match="predicts 2 classes .* synthetic has 4; pass --dataset"):
        evaluate_dataset(predictor, load_dataset("synthetic", "val", max_samples=2), progress=False)


# ------------------------------------------------------------------ commands

REPORT_SCHEMA = {"checkpoint": str, "dataset": str, "split": str, "folder": str, "images": int,
                 "image_size": int, "tta": dict, "boundary_width": (int, str), "pixel_accuracy": float,
                 "miou": float, "mdice": float, "mean_class_accuracy": float, "boundary_miou": float,
                 "foreground_iou": type(None), "classes": list, "confusion_matrix": list,
                 "ignore_index": int, "seconds": float}
CLASS_SCHEMA = {"name": str, "iou": (float, type(None)), "dice": (float, type(None)),
                "accuracy": (float, type(None)), "boundary_iou": (float, type(None)), "pixels": int}


def test_cli_evaluate_writes_the_json_report(checkpoint, tmp_path):
    out = tmp_path / "reports" / "val.json"
    proc = cli("evaluate", "--checkpoint", str(checkpoint), "--split", "all", "--max-images", "6",
               "--tta", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())  # strict JSON: no NaN
    assert set(report) == set(REPORT_SCHEMA)
    for key, kind in REPORT_SCHEMA.items():
        assert isinstance(report[key], kind), (key, report[key])
    assert report["split"] == "all" and report["images"] == 6
    assert report["tta"] == {"flip": True, "scales": [0.75, 1.0, 1.25]}
    assert [c["name"] for c in report["classes"]] == ["background", "disc", "square", "triangle"]
    for row in report["classes"]:
        assert set(row) == set(CLASS_SCHEMA) and all(isinstance(row[k], t) for k, t in CLASS_SCHEMA.items())
    assert f"mIoU {report['miou']:.4f}" in proc.stdout
    assert np.array(report["confusion_matrix"]).sum() == sum(c["pixels"] for c in report["classes"])


def test_cli_predict_writes_input_sized_labels_and_keeps_going_past_bad_files(checkpoint, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    sizes = {"a.png": (45, 61), "b.jpg": (30, 30)}
    for name, size in sizes.items():
        Image.fromarray(make_sample(len(name), size)[0]).save(inputs / name)
    (inputs / "broken.png").write_bytes(b"not an image")
    (inputs / "notes.txt").write_text("not an input")
    out = tmp_path / "out"
    proc = cli("predict", "--checkpoint", str(checkpoint), "--input", str(inputs), "--output", str(out),
               "--overlay")
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert err[0].startswith(f"skipped: {inputs / 'broken.png'}: cannot be decoded")
    assert err[-1].startswith("error: 1 of 3 inputs could not be read")
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "a_overlay.png", "b.png", "b_overlay.png"]
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    for name, size in sizes.items():
        label = np.array(Image.open(out / f"{name[0]}.png"))
        assert label.shape == size and label.dtype == np.uint8 and label.max() < 4
        image = np.array(Image.open(inputs / name).convert("RGB"))
        np.testing.assert_array_equal(label, predictor.labels([image])[0])
        assert np.array(Image.open(out / f"{name[0]}_overlay.png")).shape == (*size, 3)


def test_cli_predict_never_overwrites_inputs(checkpoint, tmp_path):
    Image.fromarray(make_sample(0, (20, 20))[0]).save(tmp_path / "x.png")
    before = (tmp_path / "x.png").read_bytes()
    proc = cli("predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path), "--output", str(tmp_path))
    assert proc.returncode == 2 and "overwrite the input images" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (tmp_path / "x.png").read_bytes() == before


def test_cli_export_onnx_matches_pytorch(checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime

    proc = cli("export", "--checkpoint", str(checkpoint), "--onnx", str(tmp_path / "m.onnx"))
    assert proc.returncode == 0, proc.stderr
    assert "max abs difference" in proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr  # torch's own exporter warnings are not the user's concern
    model, meta = load_model(checkpoint)
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, meta["image_size"], meta["image_size"])  # another batch size than the export's
    got = session.run(None, {"image": x.numpy()})[0]
    with torch.inference_mode():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4, rtol=1e-4)
    assert not list(tmp_path.glob(".*.tmp"))


def test_measure_latency_and_cli(checkpoint):
    r = measure_latency(create_model("unet", 2, base_channels=8, depth=2), 32, device="cpu", warmup=1, iters=3)
    assert r["ms_p90"] >= r["ms_median"] > 0
    assert r["images_per_s"] == pytest.approx(1000 / r["ms_median"])
    proc = cli("latency", "--checkpoint", str(checkpoint), "--image-size", "32", "--iters", "3", "--warmup", "1")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith(("fp32", "bf16"))]
    assert [r[0] for r in rows] == ["fp32", "bf16"] and all(float(r[1]) > 0 for r in rows)


@pytest.mark.parametrize("name", ["pennfudan", "tiktok", "camvid", "msrc", "bsds500"])
def test_evaluate_and_predict_on_each_real_dataset_in_its_original_layout(real_data, tmp_path, name):
    ds = load_dataset(name, "val", real_data, max_samples=2)
    model = create_model("unet", ds.num_classes, base_channels=8, depth=2)
    meta = {"model": "unet", "num_classes": ds.num_classes, "image_size": 32, "dataset": name,
            "class_names": list(ds.class_names), "model_options": {"base_channels": 8, "depth": 2}}
    save_checkpoint({"model": model.state_dict(), "meta": meta}, tmp_path / "best.pt")
    report = evaluate_dataset(Predictor.from_checkpoint(tmp_path / "best.pt", device="cpu"), ds, progress=False)
    labels = [ds.load(i)[1] for i in range(len(ds))]
    assert sum(c["pixels"] for c in report["classes"]) == sum(int((m != 255).sum()) for m in labels)
    proc = cli("predict", "--checkpoint", str(tmp_path / "best.pt"), "--input", str(ds.items[0].image),
               "--output", str(tmp_path / "pred"))
    assert proc.returncode == 0, proc.stderr
    written = np.array(Image.open(tmp_path / "pred" / f"{ds.items[0].image.stem}.png"))
    assert written.shape == labels[0].shape and written.max() < ds.num_classes


def test_cli_evaluate_refuses_a_split_the_dataset_does_not_have(checkpoint):
    proc = cli("evaluate", "--checkpoint", str(checkpoint), "--split", "test")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: dataset 'synthetic' has no split 'test'; "
                                   "choose one of: train, val, all")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("device, message", [("cuda", "this machine has no CUDA GPUs; use --device cpu"),
                                             ("banana", "--device 'banana' is not a device")])
def test_a_device_this_machine_lacks_is_one_line(checkpoint, tmp_path, device, message):
    proc = cli("evaluate", "--checkpoint", str(checkpoint), "--device", device, "--json", str(tmp_path / "r.json"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
    assert not (tmp_path / "r.json").exists()
