"""Prediction snapshots while a model trains: the same few validation images beside their truth and the
model's prediction, drawn every N epochs into ``OUT/snapshots/epoch_NNNN.png``.

The MSRC and Penn-Fudan reference projects saved such images as they trained; a run then
shows what it learns (outlines sharpening, a class appearing), not only its numbers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from seglib.gpu_augment import denormalize
from seglib.metrics import logits_to_labels
from seglib.utils import write_atomic

IMAGES = 4  # validation images per snapshot


def remove_snapshots(out: Path) -> None:
    """Delete the snapshots of a run that a new one in ``out`` replaces."""
    for old in (Path(out) / "snapshots").glob("epoch_*.png"):
        if old.is_file():  # a folder of that name is not the run's to delete
            old.unlink()


class Snapshots:
    """The first :data:`IMAGES` validation images (validation is never shuffled: the same every time; under
    DDP, the first of process 0's share), drawn with each prediction by :meth:`save` into ``out/snapshots``."""

    def __init__(self, val_batches, out: Path, dataset: str):
        from seglib.data import get_spec

        images, targets = [], []
        for x, y in val_batches:
            images.append(x[:IMAGES - sum(map(len, images))])
            targets.append(y[:len(images[-1])])
            if sum(map(len, images)) == IMAGES:
                break
        self.images, self.targets = torch.cat(images), torch.cat(targets)
        self.folder, self.spec = Path(out) / "snapshots", get_spec(dataset)

    @torch.inference_mode()
    def save(self, model: nn.Module, epoch: int, miou: float) -> Path:
        """Draw image | ground truth | prediction of ``model`` (in eval mode), one row per image, in the
        dataset's colours, into ``epoch_NNNN.png``; returns its path."""
        import matplotlib.pyplot as plt

        from seglib.viz import compare_models

        model.eval()
        predictions = logits_to_labels(model(self.images).float()).cpu().numpy()
        fig = compare_models(denormalize(self.images), self.targets.cpu().numpy(),
                             {f"epoch {epoch}": list(predictions)}, palette=self.spec.palette,
                             class_names=list(self.spec.class_names))
        fig.suptitle(f"epoch {epoch}: val mIoU {miou:.3f}", y=1.0)
        path = self.folder / f"epoch_{epoch:04d}.png"
        self.folder.mkdir(exist_ok=True)
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80, bbox_inches="tight"))
        plt.close(fig)  # not shown: in a notebook the figure would otherwise appear under the cell
        return path
