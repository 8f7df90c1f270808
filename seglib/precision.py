"""Mixed precision on CUDA: bf16 (or fp16) autocast; nothing changes on the CPU."""

from __future__ import annotations

import contextlib

import torch


def autocast(device: torch.device | str, amp: str):
    """bf16/fp16 autocast on CUDA; a no-op elsewhere (CPU autocast gains little and differs)."""
    if torch.device(device).type != "cuda" or amp == "off":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
