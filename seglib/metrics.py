"""Segmentation metrics from one confusion matrix accumulated over the whole dataset.

Per-batch averages of IoU depend on the batch size and on which images share a batch; the
dataset-level confusion matrix does not. ``update`` runs on the device of the predictions with no
host synchronisation (no boolean indexing, no ``bincount``), so it can sit inside a GPU loop;
``compute`` moves one small matrix to the host at the end.

Labels outside ``0..C-1`` (a target other than the ignore index, or a prediction at a labelled pixel) are
never clamped into a class: they are counted in two extra bins, and ``compute`` raises a ValueError with
their counts, once, at the end. A prediction at an ignored pixel is not looked at (``pred[void] = 255`` is
fine).
"""

from __future__ import annotations

import torch

from seglib.errors import DataError
from seglib.masks import IGNORE_INDEX


class ConfusionMatrix:
    """``mat[t, p]`` counts pixels of true class ``t`` predicted as ``p``; ignored pixels skipped."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, device=None):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        # extra bins: ignored pixels, targets outside the classes, predictions outside them; nothing is
        # filtered out on the host
        self._counts = torch.zeros(num_classes * num_classes + 3, dtype=torch.int64, device=device)

    @property
    def mat(self) -> torch.Tensor:
        n = self.num_classes
        return self._counts[: n * n].view(n, n)

    def reset(self) -> None:
        self._counts.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` and ``target`` are integer class maps of the same shape."""
        n = self.num_classes
        if self._counts.device != target.device:
            self._counts = self._counts.to(target.device)
        target, pred = target.reshape(-1).long(), pred.reshape(-1).long()
        ignored = target == self.ignore_index
        index = torch.where(ignored, n * n, target * n + pred)
        index = torch.where(~ignored & ((target < 0) | (target >= n)), n * n + 1, index)
        index = torch.where(~ignored & ((pred < 0) | (pred >= n)), n * n + 2, index)
        self._counts.index_add_(0, index, torch.ones_like(index))

    def all_reduce(self) -> None:
        """Sum the matrices of every process (DDP); a no-op without a process group."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self._counts)

    def _check_labels(self) -> None:
        """Raise a ValueError counting the labels outside ``0..C-1`` that :meth:`update` met, if any."""
        n = self.num_classes
        bad_targets, bad_predictions = self._counts[n * n + 1:].tolist()
        if not bad_targets and not bad_predictions:
            return
        found = [f"{count} {what} pixels" for count, what in ((bad_targets, "target"), (bad_predictions, "predicted"))
                 if count]
        raise DataError(None, f"labels outside 0..{n - 1} (the ignore index {self.ignore_index} aside): "
                        + "; ".join(found),
                        "map targets to class indices or the ignore index, and give predictions of a model with "
                        f"{n} classes (argmax over its outputs)")

    def compute(self) -> dict:
        """Pixel accuracy, per-class IoU / Dice / accuracy, and their means over present classes.

        A class that occurs in neither the targets nor the predictions has IoU NaN and is left out
        of the means (it is not a perfect score, and not a zero either). Labels outside the classes
        raise a ValueError (:class:`seglib.errors.DataError`).
        """
        self._check_labels()
        mat = self.mat.double().cpu()
        tp = mat.diag()
        true, predicted = mat.sum(1), mat.sum(0)
        union = true + predicted - tp
        iou = tp / union.where(union > 0, torch.tensor(float("nan")))
        dice = 2 * tp / (true + predicted).where(union > 0, torch.tensor(float("nan")))
        acc = tp / true.where(true > 0, torch.tensor(float("nan")))
        total = mat.sum()
        return {
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
            "miou": float(iou.nanmean()),
            "mdice": float(dice.nanmean()),
            "mean_class_accuracy": float(acc.nanmean()),
            "iou": iou.tolist(),
            "dice": dice.tolist(),
            "class_accuracy": acc.tolist(),
            "pixels": int(total),
        }


def logits_to_labels(logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Class map from logits: argmax over classes, or ``sigmoid > threshold`` for one channel."""
    if logits.shape[1] == 1:
        return (logits[:, 0].sigmoid() > threshold).long()
    return logits.argmax(1)
