"""A run's history: one row per validation, the best so far, early stopping; history.json / .csv."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from seglib.utils import write_atomic


def validations_since_best(history: list[dict]) -> int:
    """Rows after the first one with the best val mIoU (0 for an empty history): the early-stopping
    counter, rebuilt from the history so that a resumed run stops when an uninterrupted one would."""
    best, since = -1.0, 0
    for row in history:  # as History.add_validation counts: a NaN score (all pixels void) is never the best
        if row["val_miou"] > best:
            best, since = row["val_miou"], 0
        else:
            since += 1
    return since


def lowest_loss_yet(history: list[dict]) -> bool:
    """Whether the last row's val loss is below every earlier one's (a NaN loss, all pixels void, never is)."""
    *earlier, last = history
    loss = last["val_loss"]
    return not math.isnan(loss) and all(math.isnan(row["val_loss"]) or loss < row["val_loss"] for row in earlier)


def write_history(out: Path, history: list[dict]) -> None:
    """history.json and history.csv, each written atomically."""
    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)

    write_atomic(out / "history.json", lambda tmp: tmp.write_text(json.dumps(history, indent=1)))
    write_atomic(out / "history.csv", write_csv)


class History:
    """One row per validation, the best row so far, and the validations since it (early stopping).

    A row's ``train_loss``, ``seconds`` (training and validation) and ``images_per_s`` (the training
    steps alone) cover every epoch trained since the validation before it (``val_every``).
    """

    def __init__(self, rows: list[dict] | None = None, best: dict | None = None):
        self.rows, self.best = list(rows or []), best or {"val_miou": -1.0}
        self.since_best = validations_since_best(self.rows)
        self._seconds, self._train_seconds, self._losses = 0.0, 0.0, []

    def add_epoch(self, train_loss: float, train_seconds: float, seconds: float) -> None:
        """One epoch: its mean loss, the seconds of its training steps, and its seconds in all."""
        self._train_seconds += train_seconds
        self._seconds += seconds
        self._losses.append(train_loss)

    def add_validation(self, epoch: int, val: dict, lr: float, images_per_epoch: int) -> bool:
        """Append the row of a validation after ``epoch``; True when its val mIoU is the best yet."""
        epochs = len(self._losses)
        row = {"epoch": epoch, "train_loss": sum(self._losses) / epochs, "val_loss": val["loss"],
               "val_miou": val["miou"], "val_pixel_accuracy": val["pixel_accuracy"], "val_mdice": val["mdice"],
               "lr": lr, "seconds": self._seconds, "images_per_s": epochs * images_per_epoch / self._train_seconds}
        self.rows.append(row)
        self._seconds, self._train_seconds, self._losses = 0.0, 0.0, []
        improved = val["miou"] > self.best["val_miou"]
        if improved:
            self.best = {**row, "val_iou": val["iou"], "val_dice": val["dice"]}
        self.since_best = 0 if improved else self.since_best + 1
        return improved

    def stopped(self, patience: int | None) -> bool:
        return patience is not None and self.since_best >= patience

    def line(self, epochs: int, improved: bool) -> str:
        """The last row as the one line ``fit`` prints."""
        r = self.rows[-1]
        return (f"epoch {r['epoch']:3d}/{epochs} | train_loss {r['train_loss']:.4f} | val_loss {r['val_loss']:.4f} | "
                f"val_mIoU {r['val_miou']:.4f} | val_acc {r['val_pixel_accuracy']:.4f} | "
                f"{r['images_per_s']:.0f} img/s | {r['seconds']:.1f} s{' *' if improved else ''}")
