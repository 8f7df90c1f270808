"""The notebooks' visible settings (image size, seed, smoke mode), apart from training options.

Notebooks start with ``settings = settings_from_env()``; what a training run depends on is a
``seglib.train_config.TrainConfig``, a different object. Automated tests set ``SEGLIB_SMOKE=1`` (see
``notebooks/conftest.py``) and get tiny images and few steps, so CI runs on two CPU cores; a
person running the notebook gets the full configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class NotebookSettings:
    """Settings shared by the notebooks. Change a field with ``dataclasses.replace(settings, ...)``."""

    smoke: bool = False        # tiny images, few samples and steps (CI)
    publish: bool = False      # outputs will be committed: licensed images are drawn as placeholders
    seed: int = 0
    image_size: int = 256      # training resolution (square)
    batch_size: int = 16
    num_workers: int = 2
    max_samples: int | None = None  # cap on samples read per dataset (None = all)

    @classmethod
    def smoke_preset(cls, **overrides) -> NotebookSettings:
        """The configuration CI runs: 64 px, 8 samples per dataset, batch 4, no workers."""
        base = cls(smoke=True, image_size=64, batch_size=4, num_workers=0, max_samples=8)
        return replace(base, **overrides)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def settings_from_env() -> NotebookSettings:
    """``NotebookSettings.smoke_preset()`` when ``SEGLIB_SMOKE`` is set, else ``NotebookSettings()``.

    ``SEGLIB_PUBLISH=1`` (set by ``scripts/run_notebooks.py``) marks a run whose outputs are
    committed.
    """
    settings = NotebookSettings.smoke_preset() if _flag("SEGLIB_SMOKE") else NotebookSettings()
    return replace(settings, publish=_flag("SEGLIB_PUBLISH"))
