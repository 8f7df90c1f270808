"""TensorBoard logging (``train --tensorboard``): each validation's row of history.csv, and the per-class IoU,
as scalars in ``OUT/tensorboard`` (``tensorboard --logdir runs``). Needs the ``tensorboard`` package."""

from __future__ import annotations

from pathlib import Path

from seglib.errors import ConfigError

FOLDER = "tensorboard"
# history.csv's columns -> TensorBoard tags (grouped by their prefix into one panel each)
TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "val_miou": "val/mIoU",
        "val_pixel_accuracy": "val/pixel_accuracy", "val_mdice": "val/mDice", "lr": "lr",
        "images_per_s": "speed/train_images_per_s", "seconds": "speed/seconds"}


def open_board(out: Path, first_epoch: int):
    """A SummaryWriter on ``out/tensorboard``. Events it holds from epoch ``first_epoch + 1`` on (those a resumed
    run trains again) are dropped from what TensorBoard shows; a new run's folder was emptied by
    :func:`remove_board`."""
    require_tensorboard()
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(Path(out) / FOLDER, purge_step=first_epoch + 1)


def require_tensorboard() -> None:
    """Refuse ``--tensorboard`` when the tensorboard package is missing: checked before a run builds or deletes
    anything (a new run replaces the pictures of the one before it)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as exc:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard "
                          "(or drop --tensorboard: history.csv holds the same numbers)") from exc


def remove_board(out: Path) -> None:
    """Delete the TensorBoard events of a run that a new one in ``out`` replaces."""
    for old in (Path(out) / FOLDER).glob("events.out.tfevents.*"):
        old.unlink()


def close_board(run) -> None:
    """Close ``run.board``, the writer of :func:`open_board`, if there is one."""
    if run.board is not None:
        run.board.close()
        run.board = None


def log_validation(board, row: dict, class_iou: list[float], class_names: list[str]) -> None:
    """One validation: the history row's numbers at step ``row["epoch"]``, and each class's IoU (NaN, a class
    absent from truth and prediction, is left out)."""
    epoch = row["epoch"]
    for column, tag in TAGS.items():
        board.add_scalar(tag, row[column], epoch)
    for name, iou in zip(class_names, class_iou):
        if iou == iou:
            board.add_scalar(f"val_iou/{name}", iou, epoch)
    board.flush()
