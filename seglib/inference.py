"""Inference at each image's own resolution: a checkpoint in, label maps of the input's size out.

>>> predictor = Predictor.from_checkpoint("runs/pennfudan_unet/best.pt")
>>> probs = predictor.probabilities([image])[0]   # C×H×W float32 at the image's own H×W
>>> labels = predictor.labels([image])[0]         # H×W uint8 class indices

A prediction is made with the preprocessing of training, then brought back to the image's size:

1. the image is resized to the training size by :func:`seglib.cache.resize_image` (the resize the
   training cache used) and ImageNet-normalized;
2. the model runs (bf16 autocast and channels_last on a GPU);
3. the *logits* are resized to the image's own H×W (bilinear), then turned into probabilities;
   labels are the argmax (or ``p(foreground) > threshold`` for two classes).

Scoring at training size, or resizing predicted *labels* to the image (blocky edges), both give
numbers that are not about the images the dataset holds. Test-time augmentation averages the
probabilities of several views: the horizontal flip (flipped back) and other input scales.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seglib.cache import resize_image
from seglib.checkpoint import load_checkpoint
from seglib.checkpoint import load_weights
from seglib.errors import ConfigError, DataError
from seglib.gpu_augment import normalize
from seglib.precision import DTYPES, autocast, check_amp
from seglib.utils import get_device

TTA_SCALES = (0.75, 1.0, 1.25)

__all__ = ["TTA_SCALES", "Predictor", "load_model", "measure_latency"]


def load_model(path: str | Path, device="cpu") -> tuple[nn.Module, dict]:
    """The model saved in a seglib checkpoint (``best.pt`` / ``last.pt``), in eval mode, and its meta, with
    ``meta["root"]`` the data folder the run trained on and ``meta["split_file"]`` the split file it used (None
    when not recorded or none). The ``last.pt`` of an ``--ema-decay`` run gives its moving average: the weights
    it validated and saved in best.pt."""
    from seglib.models import create_model

    state = load_checkpoint(path)
    meta = state.get("meta") if isinstance(state, dict) else None
    if not isinstance(meta, dict) or not {"model", "num_classes", "image_size"} <= set(meta):
        raise DataError(path, "the checkpoint has no 'meta' with model, num_classes and image_size",
                        "pass best.pt or last.pt written by python -m seglib train")
    options = {k: v for k, v in meta.get("model_options", {}).items() if k != "pretrained"}
    try:
        model = create_model(meta["model"], meta["num_classes"], **options)  # weights come from the file
    except ConfigError as exc:
        raise DataError(path, f"its meta['model_options'] do not build a {meta['model']} ({exc})",
                        "pass best.pt or last.pt written by python -m seglib train") from exc
    load_weights(model, {**state, "model": state["ema"]["model"]} if "ema" in state else state, path)
    config = state.get("config") or {}
    return model.to(device).eval(), {**meta, "root": config.get("root"), "split_file": config.get("split_file")}


class Predictor:
    """A trained model plus the preprocessing it was trained with; see the module docstring."""

    def __init__(self, model: nn.Module, *, image_size: int, class_names: Sequence[str], device=None,
                 amp: str = "bf16", batch_size: int = 8, dataset: str | None = None, root: str | None = None,
                 split_file: str | None = None):
        self.device = get_device(device)
        self.model = model.to(self.device).eval()
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.image_size, self.batch_size, self.dataset = image_size, batch_size, dataset
        self.root = root  # the data folder the model's run trained on, when its checkpoint recorded it
        self.split_file = split_file  # and the split file it trained and validated with, if any
        self.class_names = tuple(class_names)  # a 1-channel (sigmoid) model has two: background, foreground
        self.amp = check_amp(amp)  # autocast on CUDA only (seglib.precision.autocast)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device=None, **options) -> Predictor:
        device = get_device(device)
        model, meta = load_model(path, device)
        names = meta.get("class_names") or [f"class {i}" for i in range(max(2, meta["num_classes"]))]
        return cls(model, image_size=meta["image_size"], class_names=names, device=device,
                   dataset=meta.get("dataset"), root=meta["root"], split_file=meta["split_file"], **options)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @torch.inference_mode()
    def _logits(self, images: Sequence[np.ndarray], size: int, flip: bool) -> torch.Tensor:
        batch = np.stack([resize_image(_rgb(im), size) for im in images])
        x = normalize(torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2))
        if flip:
            x = x.flip(-1)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.amp):
            logits = self.model(x)
        return (logits.flip(-1) if flip else logits).float()

    @torch.no_grad()  # not inference_mode: the caller may edit what it returns (an inference tensor refuses)
    def probabilities(self, images: Sequence[np.ndarray], *, flip: bool = False,
                      scales: Sequence[float] = (1.0,)) -> list[torch.Tensor]:
        """Per image a ``C×H×W`` float32 tensor (on the predictor's device) at the image's own size,
        averaged over the views (input scales × optional horizontal flip)."""
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            sums = [None] * len(chunk)
            views = [(s, f) for s in scales for f in ((False, True) if flip else (False,))]
            for scale, flipped in views:
                logits = self._logits(chunk, max(8, round(self.image_size * scale)), flipped)
                for i, image in enumerate(chunk):
                    native = F.interpolate(logits[i:i + 1], size=image.shape[:2], mode="bilinear",
                                           align_corners=False)[0]
                    p = _to_probabilities(native)
                    sums[i] = p if sums[i] is None else sums[i] + p
            out += [s / len(views) for s in sums]
        return out

    def labels(self, images: Sequence[np.ndarray], *, threshold: float | None = None,
               **tta) -> list[np.ndarray]:
        """Per image an ``H×W`` uint8 class map; ``threshold`` applies to two-class models only."""
        if threshold is not None and self.num_classes != 2:
            raise ConfigError(f"--threshold applies to two-class models; this one has {self.num_classes} classes")
        return [probabilities_to_labels(p, threshold).cpu().numpy() for p in self.probabilities(images, **tta)]


def probabilities_to_labels(p: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
    """``C×H×W`` probabilities → ``H×W`` uint8 labels: argmax, or ``p[1] > threshold`` for two classes."""
    if threshold is not None:
        return (p[1] > threshold).to(torch.uint8)
    return p.argmax(0).to(torch.uint8)


def _to_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """``C×H×W`` logits → probabilities; one sigmoid channel becomes ``(1 - p, p)``."""
    if logits.shape[0] == 1:
        p = logits.sigmoid()
        return torch.cat([1 - p, p])
    return logits.softmax(0)


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ConfigError(f"expected an H×W×3 uint8 RGB image, got {image.dtype} {image.shape} "
                          "(read files with seglib.data.io.read_image)")
    return image


@torch.inference_mode()
def measure_latency(model: nn.Module, image_size: int, *, device, amp: str = "off", batch_size: int = 1,
                    warmup: int = 10, iters: int = 50, seed: int = 0, channels_last: bool | None = None) -> dict:
    """Forward-pass latency on random input: median, 90th-percentile and minimum ms per call, images/s.

    Each call is timed with a device synchronize before and after (latency, not throughput).
    ``amp`` is ``off`` (float32), ``bf16`` or ``fp16``, autocast on the CPU too (measured, not assumed);
    ``channels_last`` defaults to on for CUDA.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    x = torch.randn(batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed))
    x = x.to(device)
    if device.type == "cuda" if channels_last is None else channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    dtype = DTYPES.get(check_amp(amp), torch.bfloat16)
    with torch.autocast(device.type, dtype=dtype, enabled=amp != "off"):  # CPU bf16 too: it is measured
        for i in range(warmup + iters):
            sync()
            t0 = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    return {"image_size": image_size, "batch_size": batch_size, "amp": amp, "device": str(device),
            "ms_median": float(np.median(ms)), "ms_p90": float(np.percentile(ms, 90)), "ms_min": float(ms.min()),
            "images_per_s": float(batch_size * 1000 / np.median(ms)), "iters": iters}
