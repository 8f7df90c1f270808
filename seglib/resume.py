"""Going on with a run from its ``last.pt`` (``--resume``): what may change, what is refused, and the state loaded
back into the run's parts so that it continues exactly as if it had never stopped.

>>> resumable(out)                        # a last.pt to go on from (a run without one is refused, not replaced)
>>> start_epoch, history = resume_state(run, parts)
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from seglib.checkpoint import RESUME_KEYS, load_checkpoint, load_weights, set_rng_state
from seglib.errors import DataError
from seglib.history import History
from seglib.schedules import follow_schedule
from seglib.train_config import TrainConfig

if TYPE_CHECKING:
    from seglib.engine import Parts, Run

FINISHED = ("best.pt", "metrics.json", "history.json", "history.csv")  # what a run leaves besides last.pt
# how a run goes on, not what it learns
RESUMABLE = ("epochs", "out", "root", "num_workers", "loader", "amp", "compile", "channels_last", "deterministic",
             "val_every", "save_freq", "snapshot_every", "tensorboard", "log_freq", "patience")


def resumable(out: Path) -> bool:
    """Whether ``out`` holds a ``last.pt`` to resume; a run that left other files but no last.pt is
    refused rather than started over on top of them."""
    if (out / "last.pt").exists():
        return True
    left = [name for name in FINISHED if (out / name).exists()]
    if left:
        raise DataError(out, f"holds a run ({', '.join(left)}) but no last.pt to resume from",
                        "pass another --out for a new run, or drop --resume and pass --overwrite to replace it")
    return False


def run_options(checkpoint: Path) -> dict:
    """The options the run that wrote ``checkpoint`` (its best.pt or last.pt) trained with, as
    :class:`TrainConfig` fields."""
    return asdict(TrainConfig.from_dict(load_checkpoint(checkpoint).get("config", {})))


def changed_options(saved: dict, cfg: TrainConfig) -> list[str]:
    """``name: old → new`` for each option of ``cfg`` that differs from the run's and is not :data:`RESUMABLE`."""
    old, new = asdict(TrainConfig.from_dict(saved)), asdict(cfg)
    return [f"{name}: {old[name]!r} → {new[name]!r}" for name in new
            if name not in RESUMABLE and old[name] != new[name]]


def refuse_changed_options(last: Path, saved: dict, cfg: TrainConfig) -> None:
    """A ``--resume`` of the run in ``last`` (its options ``saved``) with other training options is refused."""
    changed = changed_options(saved, cfg)
    if changed:
        raise DataError(last, f"--resume with other training options ({'; '.join(changed)})",
                        "drop them to go on with the run's own, or pass another --out to start a new run")


def refuse_foreign_last(last: Path, run_id: str | None) -> None:
    """A ``last.pt`` written by another run than the ``best.pt`` beside it (copied in) is not resumed: going on
    would replace that run's best weights with another run's."""
    best = last.with_name("best.pt")
    if run_id is None or not best.exists():
        return
    other = load_checkpoint(best).get("run_id")
    if other is not None and other != run_id:
        raise DataError(last, f"was written by another run than {best.name} beside it (run {run_id[:8]}, "
                        f"not {other[:8]}); resuming would replace that run's best weights",
                        "resume each run in its own folder: move this last.pt (or best.pt) to another --out")


def resume_state(run: Run, parts: Parts) -> tuple[int, History]:
    """Load ``out/last.pt`` into the run's ``parts``; ``(epoch to start from, history so far)``."""
    path, cfg = run.out / "last.pt", run.cfg
    state = load_checkpoint(path, expect={"model": cfg.model, "num_classes": parts.meta["num_classes"],
                                          "dataset": cfg.dataset, "image_size": cfg.image_size})
    refuse_foreign_last(path, state.get("run_id"))
    refuse_changed_options(path, state.get("config", asdict(cfg)), cfg)  # before any state is loaded into the parts
    run.run_id = state.get("run_id") or run.run_id
    load_weights(parts.model, state, path, RESUME_KEYS)
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    follow_schedule(parts.scheduler)  # another --epochs is another curve: go on along it from the step reached
    if state.get("scaler"):
        parts.scaler.load_state_dict(state["scaler"])
    if parts.ema is not None:  # ema_decay is one of the options checked above: last.pt holds the average
        parts.ema.load_state_dict(state["ema"])
    set_rng_state(state["rng"])
    return state["epoch"], History(state["history"], state["best"])
