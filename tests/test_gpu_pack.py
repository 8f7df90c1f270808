"""scripts/gpu_pack.py: dataset bundles for a lent GPU machine hold exactly what was asked."""

import importlib.util
from pathlib import Path

from seglib.data import find_folder, load_dataset

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_pack.py"
spec = importlib.util.spec_from_file_location("gpu_pack", SCRIPT)
gpu_pack = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_pack)


def test_a_bundle_holds_the_dataset_in_its_original_layout(tmp_path):
    source = find_folder("synthetic")
    gpu_pack.pack_data(["synthetic"], tmp_path / "bundle", None)
    copied = tmp_path / "bundle" / "data" / "synthetic_shapes"
    assert sorted(p.relative_to(copied) for p in copied.rglob("*")) == \
        sorted(p.relative_to(source) for p in source.rglob("*"))
    assert len(load_dataset("synthetic", "all", copied)) == len(load_dataset("synthetic", "all"))
    assert gpu_pack.size_of(tmp_path / "bundle") == gpu_pack.size_of(source)


def test_a_partial_bundle_takes_the_named_folders_and_files_only(tmp_path):
    source = find_folder("synthetic")
    (source / "notes.txt").write_text("kept with the folder")
    try:
        gpu_pack.pack_data(["synthetic:masks,notes.txt"], tmp_path / "part", None)
    finally:
        (source / "notes.txt").unlink()
    copied = tmp_path / "part" / "data" / "synthetic_shapes"
    assert sorted(p.name for p in copied.iterdir()) == ["masks", "notes.txt"]
    assert len(list((copied / "masks").iterdir())) == len(list((source / "masks").iterdir()))


def test_bundles_outside_the_checkout_leave_git_exclude_alone(tmp_path):
    exclude = SCRIPT.parent.parent / ".git" / "info" / "exclude"
    before = exclude.read_text() if exclude.exists() else None
    gpu_pack.exclude(tmp_path / "bundle")
    assert (exclude.read_text() if exclude.exists() else None) == before
