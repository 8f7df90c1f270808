"""The model's wrappers: DistributedDataParallel across processes (torchrun), ``torch.compile``.

``unwrap`` gives back the bare module, whose ``state_dict`` keys carry no wrapper prefix.
"""

from __future__ import annotations

import atexit
import gc
import os

import torch
from torch import nn


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def init_distributed() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)``; starts the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not is_distributed():
        torch.distributed.init_process_group()  # NCCL for CUDA tensors, gloo for CPU ones (--device cpu)
        atexit.register(leave_distributed)  # started here, so left here too: a script that calls fit need not
    if world > 1:
        return torch.distributed.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def leave_distributed() -> None:
    """Destroy the process group, if one is up (NCCL warns otherwise), after a garbage collection: a DDP wrapper
    lives in a reference cycle, and one still alive at the interpreter's exit tears down its gloo work there and
    aborts the process ('terminate called without an active exception', about 1 two-process run in 12 on a
    busy CPU). The command line calls it when training ends; :func:`init_distributed` registers it to run at
    exit for a script that calls ``fit`` under torchrun."""
    if is_distributed():
        gc.collect()
        torch.distributed.destroy_process_group()


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel and ``torch.compile`` wrappers."""
    model = getattr(model, "module", model)       # DistributedDataParallel
    return getattr(model, "_orig_mod", model)     # torch.compile


def wrap_model(model: nn.Module, device: torch.device, world: int, compile: bool) -> tuple[nn.Module, nn.Module]:
    """``(train_model, eval_model)``: under DDP the training model syncs gradients (and, on CUDA,
    BatchNorm statistics) across processes, while validation runs the bare module (each rank scores its own share, no
    collective per batch); either is compiled when ``compile``. ``model`` keeps the weights."""
    if world == 1:
        train_model = torch.compile(model) if compile else model
        return train_model, train_model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place below the root: same parameters
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return (torch.compile(ddp) if compile else ddp), (torch.compile(model) if compile else model)
