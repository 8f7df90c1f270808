"""Mixed precision on CUDA: bf16 (or fp16) autocast; nothing changes on the CPU."""

from __future__ import annotations

import contextlib

import torch

from seglib.errors import ConfigError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_amp(amp: str) -> str:
    """``amp`` itself when it is "bf16", "fp16" or "off"; otherwise a ConfigError (never a silent fp16)."""
    if amp != "off" and amp not in DTYPES:
        raise ConfigError(f"amp must be one of bf16, fp16, off, not {amp!r}")
    return amp


def autocast(device: torch.device | str, amp: str):
    """bf16/fp16 autocast on CUDA (``amp`` "bf16", "fp16" or "off"); a no-op elsewhere (CPU autocast gains
    little and differs)."""
    if check_amp(amp) == "off" or torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=DTYPES[amp])
