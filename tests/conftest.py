"""Shared fixtures: the real datasets (when SEGLIB_DATA_DIR is set) and a private work dir."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def real_data_dir() -> Path | None:
    env = os.environ.get("SEGLIB_DATA_DIR")
    return Path(env) if env and Path(env).is_dir() else None


@pytest.fixture
def real_data(request):
    """The folder holding the real datasets, or a skip that says how to enable these tests."""
    folder = real_data_dir()
    if folder is None:
        pytest.skip("real datasets absent: set SEGLIB_DATA_DIR to the folder holding them "
                    "(.ci/run uses ../shared/data)")
    return folder


@pytest.fixture(autouse=True)
def private_work_dir(tmp_path_factory, monkeypatch):
    """Splits, caches and synthetic data go to a temporary folder, never into the checkout."""
    monkeypatch.setenv("SEGLIB_WORK_DIR", str(tmp_path_factory.getbasetemp() / "work"))
