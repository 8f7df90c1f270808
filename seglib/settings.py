"""One visible configuration for notebooks and scripts, with a named smoke preset.

Notebooks start with ``cfg = config_from_env()``. Automated tests set ``SEGLIB_SMOKE=1`` (see
``notebooks/conftest.py``) and get tiny images and few steps, so CI runs on two CPU cores; a
person running the notebook gets the full configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Config:
    """Settings shared by the notebooks. Change a field with ``dataclasses.replace(cfg, ...)``."""

    smoke: bool = False        # tiny images, few samples and steps (CI)
    publish: bool = False      # outputs will be committed: licensed images are drawn as placeholders
    seed: int = 0
    image_size: int = 256      # training resolution (square)
    batch_size: int = 16
    num_workers: int = 2
    max_samples: int | None = None  # cap on samples read per dataset (None = all)

    @classmethod
    def smoke_preset(cls, **overrides) -> Config:
        """The configuration CI runs: 64 px, 8 samples per dataset, batch 4, no workers."""
        base = cls(smoke=True, image_size=64, batch_size=4, num_workers=0, max_samples=8)
        return replace(base, **overrides)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def config_from_env() -> Config:
    """``Config.smoke_preset()`` when ``SEGLIB_SMOKE`` is set, else ``Config()``.

    ``SEGLIB_PUBLISH=1`` (set by ``scripts/run_notebooks.py``) marks a run whose outputs are
    committed.
    """
    cfg = Config.smoke_preset() if _flag("SEGLIB_SMOKE") else Config()
    return replace(cfg, publish=_flag("SEGLIB_PUBLISH"))
