"""scripts/gpu_pack.py and the restore step of scripts/gpu_run.py: what travels to a lent GPU comes
back as the same dataset (masks and splits exact, photos within JPEG's error), and a bundle over one
call's 64 MiB is refused."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from seglib.data import find_folder, get_spec, load_dataset, shipped_sample
from seglib.errors import DataError

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_pack, gpu_run = load_script("gpu_pack"), load_script("gpu_run")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def assert_same_dataset(name, original_root, restored_root, min_psnr):
    for split in ("train", "val"):
        a, b = load_dataset(name, split, original_root), load_dataset(name, split, restored_root)
        assert a.ids == b.ids
        for i in range(len(a)):
            (image_a, labels_a), (image_b, labels_b) = a.load(i), b.load(i)
            np.testing.assert_array_equal(labels_a, labels_b)
            assert psnr(image_a, image_b) > min_psnr, a.items[i].image


def test_photos_travel_as_jpeg_and_everything_else_byte_for_byte(tmp_path):
    source = find_folder("synthetic")
    manifest = gpu_pack.pack(["synthetic"], tmp_path / "bundle")
    copied = tmp_path / "bundle" / "data" / "synthetic_shapes"
    photos = sorted(p.relative_to(source).as_posix() for p in (source / "images").iterdir())
    assert manifest["reencoded"] == [f"synthetic_shapes/{p}" for p in photos]
    assert sorted(p.relative_to(copied).as_posix() for p in (copied / "images").iterdir()) == \
        [p + ".jpg" for p in photos]
    for mask in (source / "masks").iterdir():
        assert (copied / "masks" / mask.name).read_bytes() == mask.read_bytes()
    assert json.loads((tmp_path / "bundle" / "bundle.json").read_text())["quality"] == 95


def test_a_restored_bundle_is_the_same_dataset(tmp_path):
    gpu_pack.pack(["synthetic"], tmp_path / "bundle")
    manifest = gpu_run.restore_data(tmp_path / "bundle", tmp_path / "data")
    assert manifest["datasets"] == ["synthetic"]
    assert_same_dataset("synthetic", find_folder("synthetic"), tmp_path / "data" / "synthetic_shapes", 35)


def test_jpeg_photos_are_restored_as_the_jpeg_that_travelled(tmp_path):
    sample = shipped_sample("pets")  # Oxford-IIIT Pet photos are JPEGs: decoding and saving again would re-encode
    gpu_pack.pack(["pets"], tmp_path / "bundle", root=sample, quality=85)
    gpu_run.restore_data(tmp_path / "bundle", tmp_path / "data")
    restored = tmp_path / "data" / get_spec("pets").folder
    photos = sorted((restored / "images").glob("*.jpg"))
    assert photos and all(p.read_bytes() == (tmp_path / "bundle" / "data" / p.relative_to(tmp_path / "data")).with_name(
        p.name + ".jpg").read_bytes() for p in photos)
    assert_same_dataset("pets", sample, restored, 30)


def test_a_restored_real_dataset_keeps_its_masks_and_split(tmp_path, real_data):
    gpu_pack.pack(["msrc"], tmp_path / "bundle", root=real_data)
    gpu_run.restore_data(tmp_path / "bundle", tmp_path / "data")
    assert_same_dataset("msrc", real_data, tmp_path / "data", 35)  # measured: 37.5 dB at worst


def test_wheels_a_kernel_never_imports_or_the_image_holds_are_left_behind(tmp_path, monkeypatch):
    def fake_pip(cmd, check):  # pip download: the kernel's wheels and their dependencies
        for name in ("ipykernel-7.4.0", "debugpy-1.8.22", "jedi-0.20.1", "parso-0.8.7", "numpy-2.4.6",
                     "jupyterlab_widgets-3.0.16", "platformdirs-4.14.8", "python_dateutil-2.9.0", "PyYAML-6.0.3"):
            (tmp_path / f"{name}-py3-none-any.whl").write_bytes(b"")
    monkeypatch.setattr(gpu_pack.subprocess, "run", fake_pip)
    gpu_pack.pack_wheels(["notebooks"], tmp_path)
    # numpy, python-dateutil and PyYAML are in the image; platformdirs is not, and jupyter_core imports it
    assert sorted(p.name.split("-")[0] for p in tmp_path.glob("*.whl")) == ["ipykernel", "platformdirs"]


def test_a_bundle_over_the_budget_is_refused_and_deleted(tmp_path):
    with pytest.raises(gpu_pack.BundleTooLarge, match="over one call's"):
        gpu_pack.pack(["synthetic"], tmp_path / "bundle", budget=2**20)
    assert not (tmp_path / "bundle").exists()


def test_a_failed_pack_keeps_the_earlier_bundle_and_never_replaces_another_folder(tmp_path):
    gpu_pack.pack(["synthetic"], tmp_path / "bundle")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "bundle").rglob("*"))
    with pytest.raises(gpu_pack.BundleTooLarge, match="earlier bundle .* is unchanged"):
        gpu_pack.pack(["synthetic"], tmp_path / "bundle", budget=2**20)
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "bundle").rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no half-built folder left beside it
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="holds files but no bundle.json"):
        gpu_pack.pack(["synthetic"], tmp_path / "notes")
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep me"


def test_the_shipped_pets_sample_is_never_packed_as_the_full_subset(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGLIB_DATA_DIR", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not found"):
        gpu_pack.pack(["pets"], tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_bundles_outside_the_checkout_leave_git_exclude_alone(tmp_path):
    exclude = SCRIPTS.parent / ".git" / "info" / "exclude"
    before = exclude.read_text() if exclude.exists() else None
    gpu_pack.exclude(tmp_path / "bundle")
    assert (exclude.read_text() if exclude.exists() else None) == before


def test_a_bundle_in_the_checkout_is_excluded_once_below_the_lines_already_there(tmp_path, monkeypatch):
    checkout = tmp_path.resolve() / "checkout"
    exclude = checkout / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True)
    exclude.write_text("# a comment of git's\n*.swp\n/.cache/\n")
    monkeypatch.setattr(gpu_pack, "REPO", checkout)
    gpu_pack.exclude(checkout / ".gpu")
    gpu_pack.exclude(checkout / ".gpu")
    assert exclude.read_text() == "# a comment of git's\n*.swp\n/.cache/\n/.gpu/\n"
    gpu_pack.exclude(checkout / "bundle")
    assert exclude.read_text().splitlines() == ["# a comment of git's", "*.swp", "/.cache/", "/.gpu/", "/bundle/"]
