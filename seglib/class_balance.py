"""Class weights for cross-entropy and focal loss: rare classes count for more.

``median_frequency_weights`` is SegNet's median-frequency balancing (Eigen & Fergus, 2015):
``freq_c`` is class ``c``'s pixels over the pixels of the images where ``c`` appears, and
``weight_c = median(freq) / freq_c``. Void (the ignore index) counts for no class; a class absent
from every image gets weight 1. The MSRC / DeepLabV3+ reference project trained with such weights.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from seglib.data.base import IGNORE_INDEX
from seglib.errors import ConfigError, DataError


def median_frequency_weights(masks, num_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """One weight per class from label maps (an ``N×H×W`` array or a list of ``H×W`` ones)."""
    pixels = np.zeros(num_classes, np.int64)   # pixels of each class
    seen = np.zeros(num_classes, np.int64)     # valid pixels of the images holding each class
    for mask in masks:
        counts = np.bincount(np.asarray(mask, np.int64).ravel(), minlength=ignore_index + 1)
        valid = counts.sum() - counts[ignore_index]
        pixels += counts[:num_classes]
        seen += np.where(counts[:num_classes] > 0, valid, 0)
    present = pixels > 0
    if not present.any():
        raise ConfigError("class_weights auto: the training masks hold no labelled pixel")
    freq = pixels[present] / seen[present]
    weights = np.ones(num_classes)
    weights[present] = np.median(freq) / freq
    return torch.tensor(weights, dtype=torch.float32)


def read_weights_file(path: str | Path, num_classes: int) -> torch.Tensor:
    """A JSON list of ``num_classes`` positive numbers."""
    path = Path(path)
    fix = f"write a JSON list of {num_classes} positive numbers, one per class, e.g. [1.0, 2.5, ...]"
    try:
        values = json.loads(path.read_text())
    except OSError as exc:
        raise DataError(path, f"cannot read the class weights ({exc.strerror})", fix) from exc
    except ValueError as exc:
        raise DataError(path, f"is not JSON ({exc})", fix) from exc
    if (not isinstance(values, list) or len(values) != num_classes
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf
                       for v in values)):
        raise DataError(path, f"holds {values!r:.80}, not {num_classes} positive finite numbers", fix)
    return torch.tensor(values, dtype=torch.float32)


def class_weights_for(choice: str | None, label_maps: Callable[[], np.ndarray],
                      num_classes: int) -> torch.Tensor | None:
    """``None`` (no weights), ``"auto"`` (:func:`median_frequency_weights` of the training masks, which
    ``label_maps()`` returns: only then are they read) or a file."""
    if choice is None:
        return None
    if choice == "auto":
        return median_frequency_weights(label_maps(), num_classes)
    return read_weights_file(choice, num_classes)
