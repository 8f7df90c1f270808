"""Checkpoints that are written atomically and loaded without running pickled code.

``save_checkpoint`` writes to a temporary file beside the target, flushes it to disk and renames
it in one step, so a crash or ``kill -9`` mid-write leaves the previous checkpoint intact.
``load_checkpoint`` uses ``torch.load(weights_only=True)``: a file carrying a pickled object
(code that would run on load) is refused, not executed.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seglib.errors import DataError
from seglib.utils import atomic_path


def rng_state() -> dict:
    """Python, NumPy and torch RNG states as tensors and plain values (weights_only-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: temporary file, fsync, ``os.replace`` (:func:`atomic_path`)."""
    path = Path(path)
    with atomic_path(path, fsync=True) as tmp, open(tmp, "wb") as file:
        torch.save(state, file)  # to a file object: a full disk is OSError(ENOSPC), not torch's RuntimeError
    return path


def load_checkpoint(path: str | Path, map_location="cpu", *, expect: dict | None = None) -> dict:
    """Load a checkpoint safely; ``expect`` (e.g. ``{"model": "unet", "num_classes": 2}``) is
    compared with the checkpoint's ``meta`` and a mismatch is refused with a clear message.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(path, "is a folder, not a checkpoint file", f"pass {path / 'best.pt'} or last.pt")
    if not path.is_file():
        raise DataError(path, "checkpoint not found", "check the path, or train first")
    if path.stat().st_size == 0:
        raise DataError(path, "checkpoint is empty (0 bytes)", "delete it and use another (best.pt / last.pt), "
                        "or train again")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, KeyError) as exc:  # KeyError: a text file read as a pickle
        if "weights only load failed" not in str(exc).lower():
            raise DataError(path, f"not a PyTorch checkpoint ({type(exc).__name__}: {_first_line(exc)})",
                            "pass best.pt or last.pt written by python -m seglib train") from exc
        raise DataError(path, "refused: the file holds pickled Python objects, which could run code "
                        f"when loaded ({_first_line(exc)})",
                        "only load checkpoints you trust; seglib checkpoints hold tensors only") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise DataError(path, f"truncated or corrupt checkpoint ({_first_line(exc)})",
                        "delete it and use another (best.pt / last.pt), or train again") from exc
    meta = state.get("meta", {}) if isinstance(state, dict) else {}
    for key, want in (expect or {}).items():
        if key in meta and meta[key] != want:
            raise DataError(path, f"checkpoint is for {key}={meta[key]!r}, not {want!r}",
                            f"use the {key.replace('_', ' ')} it was made with ({meta[key]!r}; for a class count, "
                            "its dataset), another checkpoint, or another --out")
    return state


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


RESUME_KEYS = ("model", "optimizer", "scheduler", "epoch", "rng", "history", "best")


def plain_keys(weights: dict) -> dict:
    """``weights`` keyed as the bare module: without the ``module.`` (DataParallel / DDP) and
    ``_orig_mod.`` (``torch.compile``) prefixes that a wrapped model's ``state_dict()`` carries."""
    stripped = True
    while weights and stripped:
        stripped = False
        for prefix in ("module.", "_orig_mod."):
            if all(key.startswith(prefix) for key in weights):
                weights, stripped = {key[len(prefix):]: value for key, value in weights.items()}, True
    return weights


def load_weights(model: nn.Module, state, path: str | Path, needed: tuple[str, ...] = ("model",)) -> None:
    """Put ``state["model"]`` into ``model``; anything that does not fit is a DataError naming the file."""
    missing = [k for k in needed if k not in state] if isinstance(state, dict) else list(needed)
    if missing or not isinstance(state.get("model"), dict):
        raise DataError(path, f"not a seglib checkpoint: it lacks {', '.join(missing or ['model'])} "
                        "(a bare state_dict or another program's file?)",
                        "pass best.pt / last.pt written by python -m seglib train, or wrap a bare "
                        "state_dict as torch.save({'model': state_dict}, path)")
    try:
        model.load_state_dict(plain_keys(state["model"]))
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        detail = (lines[1] if len(lines) > 1 else lines[0] if lines else "").strip().rstrip(".")
        detail = detail if len(detail) <= 200 else detail[:200] + "..."
        options = state.get("meta", {}).get("model_options") if isinstance(state.get("meta"), dict) else None
        raise DataError(path, f"its weights do not fit this {type(model).__name__} ({detail})",
                        "train with the options it was made with"
                        + (f" (its model_options: {options})" if options is not None else "")
                        + ", or pass another checkpoint") from exc
