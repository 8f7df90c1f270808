"""nbval setup: the smoke configuration, and output fields that may differ between machines."""

import os

# Kernels inherit this process's environment when they start, so set it here.
os.environ.setdefault("SEGLIB_SMOKE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # offline import otherwise warns and waits
os.environ.pop("MPLBACKEND", None)  # Agg here would make inline figures vanish


def pytest_collectstart(collector):
    """nbval compares every output key except those in skip_compare: warnings go to stderr."""
    if getattr(collector, "path", None) is not None and collector.path.suffix == ".ipynb" \
            and hasattr(collector, "skip_compare"):
        collector.skip_compare += ("stderr", "image/svg+xml")
