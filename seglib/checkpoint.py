"""Checkpoints that are written atomically and loaded without running pickled code.

``save_checkpoint`` writes to a temporary file beside the target, flushes it to disk and renames
it in one step, so a crash or ``kill -9`` mid-write leaves the previous checkpoint intact.
``load_checkpoint`` uses ``torch.load(weights_only=True)``: a file carrying a pickled object
(code that would run on load) is refused, not executed.
"""

from __future__ import annotations

import codecs
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seglib.errors import DataError
from seglib.models import OPTION_RULES, whole
from seglib.train_config import image_side
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
        state["cuda"] = torch.cuda.get_rng_state()  # this process's GPU: a resume may see other GPUs, or fewer
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") if torch.cuda.is_available() else None
    if isinstance(cuda, (list, tuple)):  # written before 2026-11-29: one state per visible GPU
        device = torch.cuda.current_device()
        cuda = cuda[device] if device < len(cuda) else None
    if cuda is not None:
        torch.cuda.set_rng_state(cuda)


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
    kind = _not_a_checkpoint(path)
    if kind:
        raise DataError(path, f"not a PyTorch checkpoint: it looks like {kind}",
                        "pass best.pt or last.pt written by python -m seglib train")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, KeyError) as exc:  # KeyError: a text file read as a pickle
        if "global" not in str(exc).lower():  # objects are refused as "unsupported GLOBAL x", damage otherwise
            raise DataError(path, f"not a PyTorch checkpoint ({type(exc).__name__}: {_first_line(exc)})",
                            "pass best.pt or last.pt written by python -m seglib train") from exc
        raise DataError(path, "refused: the file holds pickled Python objects, which could run code "
                        f"when loaded ({_first_line(exc)})",
                        "only load checkpoints you trust; seglib checkpoints hold tensors only") from exc
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError, IndexError) as exc:  # damaged bytes
        raise DataError(path, f"truncated or corrupt checkpoint ({_first_line(exc)})",
                        "delete it and use another (best.pt / last.pt), or train again") from exc
    meta = state.get("meta", {}) if isinstance(state, dict) else {}
    check_meta(meta, path)
    check_parts(state, path)
    for key, want in (expect or {}).items():
        if key in meta and meta[key] != want:
            raise DataError(path, f"checkpoint is for {key}={meta[key]!r}, not {want!r}",
                            f"use the {key.replace('_', ' ')} it was made with ({meta[key]!r}; for a class count, "
                            "its dataset), another checkpoint, or another --out")
    return state


_SIGNATURES = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
               (b"\x1f\x8b", "a gzip file"), (b"%PDF", "a PDF document"), (b"\x7fELF", "a program (ELF)"))


def _not_a_checkpoint(path: Path) -> str | None:
    """What the file looks like when its first bytes are neither a zip (``torch.save``) nor a pickle (its legacy
    format), e.g. ``"JSON"``; None for a file that may be a checkpoint."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04"):
        return _foreign_zip(path)
    if head.startswith(b"\x80"):
        return None
    for magic, kind in _SIGNATURES:
        if head.startswith(magic):
            return kind
    if head.lstrip()[:1] in (b"{", b"["):
        return "JSON"
    try:  # not final: a full head may end inside a character
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < 512)
        return "text" if b"\x00" not in head else None
    except UnicodeDecodeError:
        pass
    return f"an unknown format (first bytes {head[:8].hex(' ')})"


def _foreign_zip(path: Path) -> str | None:
    """``"a zip archive ..."`` for a readable zip without the ``data.pkl`` of ``torch.save``; None otherwise (a
    cut-off checkpoint has no readable directory: torch.load then names it truncated)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, EOFError):  # a damaged directory: a garbled
        return None  # name (UnicodeDecodeError), an unknown version or method (NotImplementedError)
    return None if any(n.rsplit("/", 1)[-1] == "data.pkl" for n in names) else \
        f"a zip archive of {len(names)} files (no data.pkl, so not written by torch.save)"


def _model_name(v) -> str | None:
    from seglib.models import MODEL_NAMES

    return None if isinstance(v, str) and v in MODEL_NAMES else f"must be one of {', '.join(MODEL_NAMES)}"


def _class_names(v) -> str | None:
    ok = isinstance(v, list | tuple) and len(v) <= MAX_CLASSES and all(isinstance(n, str) for n in v)
    return None if ok else f"must be a list of at most {MAX_CLASSES} names"


MAX_CLASSES = 255  # label maps are uint8, and 255 is the ignored label
META_RULES = {  # what seglib reads from a checkpoint's meta, checked before any model is built
    "model": _model_name,
    "num_classes": whole(1, MAX_CLASSES),
    "image_size": lambda v: whole(1, 2**31)(v) or image_side(v),
    "dataset": lambda v: None if v is None or isinstance(v, str) else "must be a dataset name",
    "class_names": _class_names,
    "model_options": lambda v: None if isinstance(v, dict) else "must be a dict of model options",
}


def check_meta(meta, path: str | Path) -> None:
    """Refuse a checkpoint's ``meta`` whose values a model cannot be built from: a wrong type, an unknown model or
    option, a class count, width or depth beyond any sane model (which would allocate without bound)."""
    fix = "pass best.pt or last.pt written by python -m seglib train (this file's metadata was changed or damaged)"
    if not isinstance(meta, dict):
        raise DataError(path, f"its 'meta' is a {type(meta).__name__}, not a dict", fix)
    checks = [(f"meta[{key!r}]", meta[key], rule) for key, rule in META_RULES.items() if key in meta]
    options = meta.get("model_options")
    if isinstance(options, dict):
        checks += [(f"meta['model_options'][{key!r}]", value, OPTION_RULES.get(key, lambda v: "is not a model "
                    f"option ({', '.join(OPTION_RULES)})")) for key, value in options.items()]
    for where, value, rule in checks:
        problem = rule(value)
        if problem:
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:60] + "..."
            raise DataError(path, f"{where} is {shown}: {problem}", fix)
    names, classes = meta.get("class_names"), meta.get("num_classes")
    if names is not None and classes is not None and len(names) != max(classes, 2):  # 1 channel: two classes
        raise DataError(path, f"meta['class_names'] names {len(names)} classes and meta['num_classes'] is {classes}",
                        fix)


def check_parts(state, path: str | Path) -> None:
    """Refuse a checkpoint whose ``model`` / ``ema`` weights or ``config`` are not what seglib wrote: weights
    are a dict keyed by parameter names, ``ema`` holds its own ``model``, ``config`` is a dict of options."""
    if not isinstance(state, dict):
        return  # load_weights names what is missing
    fix = "pass best.pt or last.pt written by python -m seglib train (this file was changed or damaged)"
    ema = state.get("ema", {})
    if not (isinstance(ema, dict) and ("model" in ema or "ema" not in state)):
        raise DataError(path, "its 'ema' holds no 'model'", fix)
    for where, weights in (("'model'", state.get("model")), ("'ema'['model']", ema.get("model"))):
        if weights is not None and not (isinstance(weights, dict) and all(isinstance(k, str) for k in weights)):
            raise DataError(path, f"its {where} is not a dict of named weights", fix)
    if not isinstance(state.get("config", {}), dict):
        raise DataError(path, f"its 'config' is a {type(state['config']).__name__}, not a dict of options", fix)


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
