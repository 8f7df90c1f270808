"""seglib.paths.display_path: committed outputs show no machine's folders."""

from seglib.paths import REPO_ROOT, display_path


def test_paths_are_shown_relative_to_the_folder_a_reader_knows(tmp_path, monkeypatch):
    data, work = tmp_path / "shared" / "data", tmp_path / "work"
    monkeypatch.setenv("SEGLIB_DATA_DIR", str(data))
    monkeypatch.setenv("SEGLIB_WORK_DIR", str(work))
    assert display_path(data) == "$SEGLIB_DATA_DIR"
    assert display_path(data / "CamVid" / "train") == "$SEGLIB_DATA_DIR/CamVid/train"
    assert display_path(work / "runs" / "cpu" / "tiktok_unet") == "$SEGLIB_WORK_DIR/runs/cpu/tiktok_unet"
    assert display_path(REPO_ROOT / "figures" / "a.png") == "figures/a.png"
    assert display_path(tmp_path / "elsewhere" / "evil.zip") == "<...>/evil.zip"


def test_an_unset_variable_is_never_shown(monkeypatch):
    # with neither variable set, the default <repo>/data was shown as "$SEGLIB_WORK_DIR/...", a name nobody set
    monkeypatch.delenv("SEGLIB_DATA_DIR", raising=False)
    monkeypatch.delenv("SEGLIB_WORK_DIR", raising=False)
    assert display_path(REPO_ROOT / "data" / "oxford_iiit_pet") == "data/oxford_iiit_pet"
    assert display_path(REPO_ROOT / "data" / "runs" / "cpu" / "tiktok_unet") == "data/runs/cpu/tiktok_unet"
