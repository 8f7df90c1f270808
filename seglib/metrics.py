"""Segmentation metrics from one confusion matrix accumulated over the whole dataset.

Per-batch averages of IoU depend on the batch size and on which images share a batch; the
dataset-level confusion matrix does not. ``update`` runs on the device of the predictions with no
host synchronisation (no boolean indexing, no ``bincount``), so it can sit inside a GPU loop;
``compute`` moves one small matrix to the host at the end.
"""

from __future__ import annotations

import torch

from seglib.masks import IGNORE_INDEX


class ConfusionMatrix:
    """``mat[t, p]`` counts pixels of true class ``t`` predicted as ``p``; ignored pixels skipped."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, device=None):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        # one extra bin collects ignored pixels, so nothing needs to be filtered out on the host
        self._counts = torch.zeros(num_classes * num_classes + 1, dtype=torch.int64, device=device)

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
        valid = (target != self.ignore_index) & (target >= 0) & (target < n)
        index = torch.where(valid, target * n + pred.clamp(0, n - 1), n * n)
        self._counts.index_add_(0, index, torch.ones_like(index))

    def all_reduce(self) -> None:
        """Sum the matrices of every process (DDP); a no-op without a process group."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self._counts)

    def compute(self) -> dict:
        """Pixel accuracy, per-class IoU / Dice / accuracy, and their means over present classes.

        A class that occurs in neither the targets nor the predictions has IoU NaN and is left out
        of the means (it is not a perfect score, and not a zero either).
        """
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
