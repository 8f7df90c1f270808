"""Shared fixtures: the real datasets (when SEGLIB_DATA_DIR is set), a private work dir and a finished smoke run."""

import os
from dataclasses import replace
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # before anything imports albumentations

from helpers import TINY
from seglib.engine import fit


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


def work_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.getbasetemp() / "work")


@pytest.fixture(autouse=True)
def private_work_dir(tmp_path_factory, monkeypatch):
    """Splits, caches and synthetic data go to a temporary folder, never into the checkout."""
    monkeypatch.setenv("SEGLIB_WORK_DIR", work_dir(tmp_path_factory))


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """The folder of a finished one-epoch run of the tiny UNet on the synthetic shapes (4 classes): best.pt,
    last.pt, metrics.json. Shared by every test that needs a checkpoint: read or copy it, never change it."""
    out = tmp_path_factory.mktemp("smoke_run")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SEGLIB_WORK_DIR", work_dir(tmp_path_factory))
        fit(replace(TINY, epochs=1, out=str(out)), device="cpu", verbose=False)
    return out
