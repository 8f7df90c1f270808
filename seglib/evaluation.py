"""Evaluate a checkpoint on a dataset split at each image's own resolution.

>>> report = evaluate_dataset(Predictor.from_checkpoint("runs/camvid_unet/best.pt"), load_dataset("camvid", "val"))
>>> print(format_report(report))

Region metrics (pixel accuracy, per-class IoU / Dice, their means) come from one confusion matrix
over the whole split (:class:`seglib.metrics.ConfusionMatrix`); void pixels (255) never count. For a
binary task mIoU is the mean of background and foreground IoU, as the Penn-Fudan reference reports
it, and ``foreground_iou`` is reported beside it.

**Boundary IoU** (Cheng et al., CVPR 2021) scores only a band of ``width`` pixels inside each
object's edge, in the ground truth and in the prediction: ``|G_b ∩ P_b| / |G_b ∪ P_b|`` per class,
summed over the split. Region IoU is dominated by the interiors of large objects; boundary IoU is
where skip connections and a fine output stride show. The band is 2% of the image diagonal by
default (the paper's choice), and the image border counts as an edge, as in the paper's code. Void
pixels count for neither side, and a class's region ends where its labelled pixels end, in the truth
and in the prediction alike: where an ignored band runs along an object's outline (the pets trimaps),
the labelled rings on either side of it are scored, and a prediction right on every labelled pixel
scores 1.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from seglib.errors import ConfigError
from seglib.inference import Predictor, probabilities_to_labels
from seglib.masks import IGNORE_INDEX
from seglib.metrics import ConfusionMatrix

BOUNDARY_RATIO = 0.02

__all__ = ["BOUNDARY_RATIO", "BoundaryIoU", "boundary_band", "evaluate_dataset", "format_report"]


def boundary_band(masks: torch.Tensor, width: int) -> torch.Tensor:
    """Pixels of each ``K×H×W`` boolean mask within ``width`` pixels (chessboard distance) of its edge."""
    outside = F.pad((~masks).float()[None], (width,) * 4, value=1.0)  # beyond the border = background
    k = 2 * width + 1  # a square window, taken as a row pass then a column pass (separable)
    near_outside = F.max_pool2d(F.max_pool2d(outside, (1, k), stride=1), (k, 1), stride=1)[0] > 0
    return masks & near_outside


class BoundaryIoU:
    """Per-class boundary IoU accumulated over images of any size; ignored pixels never count."""

    def __init__(self, num_classes: int, width: int | None = None, ignore_index: int = IGNORE_INDEX):
        self.num_classes, self.width, self.ignore_index = num_classes, width, ignore_index
        self.inter = torch.zeros(num_classes, dtype=torch.int64)  # pixel counts
        self.union = torch.zeros(num_classes, dtype=torch.int64)

    def band_width(self, h: int, w: int) -> int:
        return self.width or max(1, round(BOUNDARY_RATIO * math.hypot(h, w)))

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one image: ``H×W`` integer class maps. Counts stay on their device (no host sync)."""
        if self.inter.device != target.device:
            self.inter, self.union = self.inter.to(target.device), self.union.to(target.device)
        classes = torch.arange(self.num_classes, device=target.device)[:, None, None]
        valid = target != self.ignore_index
        width = self.band_width(*target.shape)
        g = boundary_band(target[None] == classes, width)  # void is no class: regions end there
        p = boundary_band((pred[None] == classes) & valid, width)
        self.inter += (g & p).sum((1, 2))
        self.union += (g | p).sum((1, 2))

    def compute(self) -> list[float]:
        """Per-class boundary IoU; NaN for a class with no boundary pixels in targets or predictions."""
        inter, union = self.inter.cpu().double(), self.union.cpu().double()
        return (inter / union.where(union > 0, torch.tensor(float("nan"), dtype=union.dtype))).tolist()


def _nan_to_none(values):
    return [None if isinstance(v, float) and math.isnan(v) else v for v in values]


def evaluate_dataset(predictor: Predictor, ds, *, flip: bool = False, scales=(1.0,),
                     boundary_width: int | None = None, progress: bool = True) -> dict:
    """Metrics of ``predictor`` on every image of ``ds`` (a :class:`seglib.data.SegmentationDataset`).

    Returns a JSON-ready dict: overall numbers, one row per class, the confusion matrix
    (``matrix[true][predicted]``, pixel counts). NaN (a class absent from targets and predictions)
    is ``None``.
    """
    k = predictor.num_classes
    if ds.num_classes != k:
        own = f", trained on {predictor.dataset}" if predictor.dataset else ""
        raise ConfigError(f"the checkpoint predicts {k} classes ({', '.join(predictor.class_names)}{own}) but "
                          f"{ds.name} has {ds.num_classes}; score it on a dataset of {k} classes (leave --dataset "
                          "out for its own)")
    cm = ConfusionMatrix(k, ignore_index=ds.ignore_index, device=predictor.device)
    boundary = BoundaryIoU(k, boundary_width, ds.ignore_index)
    n = len(ds)
    start = time.perf_counter()
    for first in tqdm(range(0, n, predictor.batch_size), desc=f"evaluate {ds.name}/{ds.split}",
                      disable=not progress, leave=False):
        samples = [ds.load(i) for i in range(first, min(n, first + predictor.batch_size))]
        probs = predictor.probabilities([image for image, _ in samples], flip=flip, scales=scales)
        for (_, labels), p in zip(samples, probs):
            pred = probabilities_to_labels(p).long()
            target = torch.tensor(labels, device=p.device).long()
            cm.update(pred, target)
            boundary.update(pred, target)
    metrics = cm.compute()
    b_iou = boundary.compute()
    true_pixels = cm.mat.sum(1).tolist()
    classes = [{"name": name, "iou": iou, "dice": dice, "accuracy": acc, "boundary_iou": biou, "pixels": px}
               for name, iou, dice, acc, biou, px in zip(predictor.class_names, _nan_to_none(metrics["iou"]),
                                                         _nan_to_none(metrics["dice"]),
                                                         _nan_to_none(metrics["class_accuracy"]),
                                                         _nan_to_none(b_iou), true_pixels)]
    return {
        "dataset": ds.name, "split": ds.split, "folder": str(ds.folder), "images": n,
        "image_size": predictor.image_size, "tta": {"flip": flip, "scales": list(scales)},
        "boundary_width": boundary_width or f"{BOUNDARY_RATIO:.0%} of the image diagonal",
        "pixel_accuracy": metrics["pixel_accuracy"], "miou": metrics["miou"], "mdice": metrics["mdice"],
        "mean_class_accuracy": metrics["mean_class_accuracy"],
        "boundary_miou": float(np.nanmean(b_iou)) if not all(math.isnan(v) for v in b_iou) else None,
        "foreground_iou": classes[1]["iou"] if k == 2 else None,
        "classes": classes, "confusion_matrix": cm.mat.cpu().tolist(), "ignore_index": ds.ignore_index,
        "seconds": time.perf_counter() - start,
    }


def format_report(report: dict) -> str:
    """The per-class table and the summary lines of :func:`evaluate_dataset`'s report."""
    def f(v):
        return "  -   " if v is None else f"{v:6.4f}"

    lines = [f"{report['dataset']}/{report['split']}: {report['images']} images at native resolution "
             f"(model input {report['image_size']}px"
             + (", TTA flip" if report["tta"]["flip"] else "")
             + (f", scales {report['tta']['scales']}" if report["tta"]["scales"] != [1.0] else "") + ")",
             f"{'class':22s} {'IoU':>6s} {'Dice':>6s} {'acc':>6s} {'bIoU':>6s} {'pixels':>12s}"]
    for c in report["classes"]:
        lines.append(f"{c['name'][:22]:22s} {f(c['iou'])} {f(c['dice'])} {f(c['accuracy'])} "
                     f"{f(c['boundary_iou'])} {c['pixels']:12d}")
    lines.append(f"mIoU {report['miou']:.4f} | pixel accuracy {report['pixel_accuracy']:.4f} | "
                 f"mDice {report['mdice']:.4f} | boundary mIoU {f(report['boundary_miou']).strip()}"
                 + (f" | foreground IoU {f(report['foreground_iou']).strip()}"
                    if report["foreground_iou"] is not None else ""))
    return "\n".join(lines)
