"""The dataset layer on the real datasets (skipped when absent) and on files made here."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import seglib.data
from seglib.cli import main
from seglib.data import (PERSON_DATASETS, SPECS, available_datasets, find_folder, load_dataset, person_dataset,
                         shipped_sample)
from seglib.data import convert
from seglib.data.convert import flatten_tiktok_videos
from seglib.data.io import read_image
from seglib.data.prepare import SplitStats, format_stats, inspect_split, prepare
from seglib.data.splits import assign, in_val
from seglib.errors import ConfigError, DataError
from seglib.masks import labelids_to_trainids, validate_mask
from seglib.synthetic import make_sample

from helpers import groups_in_both_splits, write_camvid32, write_png_pairs


def need(folder, sub):
    """Skip unless the real data folder holds ``sub``."""
    if not (folder / sub).exists():
        pytest.skip(f"{sub} is not in {folder}")
    return folder / sub

# ---------------------------------------------------------------- real datasets (../shared/data)

EXPECTED_COUNTS = {  # what ../shared/data/README.md says each folder holds
    "pennfudan": {"all": 140}, "tiktok": {"all": 907}, "camvid": {"train": 184, "val": 101},
    "msrc": {"all": 100}, "bsds500": {"train": 67, "val": 34},
    "pets": {"all": 211},  # 212 photos, less Abyssinian_34 (left out: its trimap holds no pet)
}


@pytest.mark.parametrize("name", EXPECTED_COUNTS)
def test_real_dataset_counts_and_disjoint_splits(real_data, name):
    need(real_data, SPECS[name].folder)
    for split, n in EXPECTED_COUNTS[name].items():
        assert len(load_dataset(name, split, real_data)) == n
    train = set(load_dataset(name, "train", real_data).ids)
    val = set(load_dataset(name, "val", real_data).ids)
    assert train and val and not train & val
    assert len(train | val) == len(load_dataset(name, "all", real_data))


def test_tiktok_splits_by_video_never_by_frame(real_data):
    need(real_data, "tiktok_person")
    videos = {s: {i.split("_")[0] for i in load_dataset("tiktok", s, real_data).ids}
              for s in ("train", "val")}
    assert videos["train"] and videos["val"] and not videos["train"] & videos["val"]


def test_tiktok_quirks_are_fixed(real_data):
    need(real_data, "tiktok_person")
    ds = load_dataset("tiktok", "all", real_data)
    tall = ds.ids.index("00233_" + next(i.split("_")[1] for i in ds.ids if i.startswith("00233_")))
    image, labels = ds.load(tall)  # its mask file is 137 rows, the image 136
    assert Image.open(ds.items[tall].mask).size == (76, 137)
    assert labels.shape == image.shape[:2] == (136, 76)
    one_bit = ds.ids.index("00007_0361")  # a mode "1" PNG, and a broken one: every pixel is set
    assert Image.open(ds.items[one_bit].mask).mode == "1"
    _, labels = ds.load(one_bit)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {1}
    assert ds.report["masks with one value only (check them: likely broken)"] >= 1


def test_pennfudan_instances_become_person(real_data):
    need(real_data, "PennFudanPed")
    ds = load_dataset("pennfudan", "all", real_data)
    raw = np.asarray(Image.open(ds.items[0].mask))
    _, labels = ds.load(0)
    assert raw.max() >= 1 and set(np.unique(labels)) == {0, 1}
    np.testing.assert_array_equal(labels, raw > 0)


def test_camvid_void_becomes_ignore(real_data):
    need(real_data, "CamVid")
    ds = load_dataset("camvid", "val", real_data)
    raw = np.asarray(Image.open(ds.items[0].mask))
    _, labels = ds.load(0)
    assert (raw == 11).any()
    np.testing.assert_array_equal(labels == 255, raw == 11)
    assert labels[labels != 255].max() <= 10


def test_msrc_colours_map_exactly_to_23_classes(real_data):
    need(real_data, "MSRC_ObjCategImageDatabase_v2")
    ds = load_dataset("msrc", "all", real_data)
    seen = set()
    for i in range(len(ds)):
        _, labels = ds.load(i)
        seen |= set(np.unique(labels).tolist())
    assert seen <= set(range(23)) | {255} and len(seen) > 15


def test_bsds500_boundaries_are_the_union_of_annotators(real_data):
    from seglib.data import read_bsds_ground_truth
    need(real_data, "BSR")
    ds = load_dataset("bsds500", "val", real_data)
    annotations = read_bsds_ground_truth(ds.items[0].mask)
    _, labels = ds.load(0)
    assert len(annotations) >= 4
    np.testing.assert_array_equal(labels, np.any([b for _, b in annotations], axis=0))


def test_real_pets_defects_are_decoded_by_content_or_left_out(real_data):
    need(real_data, "oxford_iiit_pet")
    ds = load_dataset("pets", "all", real_data)
    assert "Abyssinian_34" not in ds.ids and (ds.folder / "images" / "Abyssinian_34.jpg").is_file()
    image, labels = ds.load(ds.ids.index("Abyssinian_5"))  # a PNG with alpha, named .jpg
    assert image.shape == (150, 200, 3) and set(np.unique(labels)) == {0, 1, 255}
    assert ds.report == {"PNG files named .jpg (decoded by content)": 1}
    assert load_dataset("pets_trimap", "val", real_data).ids == load_dataset("pets", "val", real_data).ids


def test_prepare_reports_counts_and_saves_the_split(real_data, tmp_path):
    need(real_data, "PennFudanPed")
    results = prepare("pennfudan", real_data)
    assert sum(r.count for r in results) == 140 and not any(r.problems for r in results)
    person = sum(r.class_pixels[1] for r in results) / sum(r.class_pixels.sum() for r in results)
    assert 0.05 < person < 0.5
    from seglib.paths import work_dir
    saved = json.loads((work_dir() / "splits" / "pennfudan.json").read_text())
    assert sorted(saved["train"] + saved["val"]) == load_dataset("pennfudan", "all", real_data).ids


# ---------------------------------------------------------------- files made here


def write_pairs(folder, n=6, size=(40, 56)):
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i in range(n):
        image, mask = make_sample(i, size)
        Image.fromarray(image).save(folder / "images" / f"{i:05d}_0001.png")
        Image.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8)).save(folder / "masks" / f"{i:05d}_0001.png")
    return folder


def test_synthetic_dataset_is_generated_on_first_use():
    ds = load_dataset("synthetic", "train")
    image, labels = ds.load(0)
    assert image.dtype == np.uint8 and image.shape[:2] == labels.shape
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    assert len(ds) + len(load_dataset("synthetic", "val")) == SPECS["synthetic"].count


def test_max_samples_takes_exactly_that_many_spread_over_the_split():
    """``max_samples`` (and ``--val-images``, ``evaluate --max-images``) once took every ceil(len/n)-th item:
    asking for 183 of 184 gave 92."""
    ids = load_dataset("synthetic", "train").ids
    for n in (1, 2, 7, len(ids) // 2 + 1, len(ids) - 1, len(ids), len(ids) + 5):
        taken = load_dataset("synthetic", "train", max_samples=n).ids
        assert len(taken) == min(n, len(ids)) and len(set(taken)) == len(taken)
        positions = [ids.index(i) for i in taken]
        assert positions == sorted(positions) and positions[0] == 0
        assert max(b - a for a, b in zip(positions, positions[1:] + [len(ids)])) <= -(-len(ids) // min(n, len(ids)))


def test_hash_split_is_stable_when_files_are_added_or_removed():
    ids = [f"{v:05d}_{f:04d}" for v in range(40) for f in range(3)]
    group = lambda i: i.split("_")[0]  # noqa: E731
    val = assign("tiktok", ids, "val", 0.2, group)
    assert set(assign("tiktok", ids[::2], "val", 0.2, group)) == set(val[::1]) & set(ids[::2])
    assert 0.05 < len(val) / len(ids) < 0.4
    assert {group(i) for i in val}.isdisjoint({group(i) for i in assign("tiktok", ids, "train", 0.2, group)})
    assert in_val("x", "a", 1.0) and not in_val("x", "a", 0.0)


def test_missing_root_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(DataError) as err:
        find_folder("camvid", tmp_path)
    assert "CamVid" in str(err.value) and "SEGLIB_DATA_DIR" in str(err.value)
    with pytest.raises(DataError, match="folder not found"):
        find_folder("camvid", tmp_path / "nope")


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "tiktok_person" / "images").mkdir(parents=True)
    (tmp_path / "tiktok_person" / "masks").mkdir()
    with pytest.raises(DataError, match="no 'train' samples"):
        load_dataset("tiktok", "train", tmp_path)


def test_unknown_names_and_splits_are_config_errors():
    with pytest.raises(ConfigError, match="pennfudan"):
        load_dataset("pascal")
    with pytest.raises(ConfigError, match="train, val, all"):
        load_dataset("synthetic", "test")


def test_image_without_mask_and_mask_without_image(tmp_path):
    folder = write_pairs(tmp_path / "tiktok_person")
    (folder / "masks" / "00001_0001.png").unlink()
    with pytest.raises(DataError, match="1 images have no mask.*00001_0001"):
        load_dataset("tiktok", "all", tmp_path)
    shutil.copy(folder / "masks" / "00000_0001.png", folder / "masks" / "00099_0001.png")
    (folder / "images" / "00001_0001.png").unlink()
    with pytest.raises(DataError, match="1 masks have no image.*00099_0001"):
        load_dataset("tiktok", "all", tmp_path)


def test_tiktok_frames_without_their_video_prefix_are_refused(tmp_path):
    # one video's folder used as the dataset: each frame was its own split group, so the video leaked into val
    folder = write_pairs(tmp_path / "tiktok_person")
    for sub in ("images", "masks"):
        (folder / sub / "00003_0001.png").rename(folder / sub / "0007.png")
    with pytest.raises(DataError) as err:
        load_dataset("tiktok", "train", tmp_path)
    msg = str(err.value)
    assert str(folder / "images") in msg and "1 frames have no <video>_ prefix (e.g. ['0007.png'])" in msg
    assert "prepare tiktok --source" in msg


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "empty"])
def test_bad_image_files_name_the_file(tmp_path, damage):
    folder = write_pairs(tmp_path / "tiktok_person")
    target = folder / "images" / "00002_0001.png"
    data = target.read_bytes()
    target.write_bytes({"corrupt": b"not a png" * 50, "truncated": data[: len(data) // 2],
                        "empty": b""}[damage])
    ds = load_dataset("tiktok", "all", tmp_path)
    with pytest.raises(DataError) as err:
        ds.load(ds.ids.index("00002_0001"))
    assert str(target) in str(err.value) and "Fix:" in str(err.value)


def test_mask_of_another_size_is_rejected(tmp_path):
    folder = write_pairs(tmp_path / "tiktok_person")
    Image.fromarray(np.zeros((30, 56), np.uint8)).save(folder / "masks" / "00003_0001.png")
    ds = load_dataset("tiktok", "all", tmp_path)
    with pytest.raises(DataError, match="00003_0001"):
        ds.load(ds.ids.index("00003_0001"))


def test_an_exif_rotated_jpeg_keeps_its_stored_pixels_unless_upright_is_asked(tmp_path):
    """Dataset masks are drawn on the stored pixels: turning the photo would misalign them."""
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90° clockwise to view"
    Image.fromarray(make_sample(0, (20, 36))[0]).save(path, exif=exif)
    stored = read_image(path)
    assert stored.shape == (20, 36, 3)
    np.testing.assert_array_equal(stored, np.asarray(Image.open(path).convert("RGB")))
    assert read_image(path, upright=True).shape == (36, 20, 3)


def test_tiktok_soft_mask_edges_are_thresholded_at_half_scale(tmp_path):
    """Anti-aliased edges (1..127) are background, 128 and above person: the spec's own threshold."""
    folder = tmp_path / "tiktok_person"
    write_png_pairs(folder / "images", folder / "masks", ["00003_0001"], size=4)
    soft = np.zeros((4, 4), np.uint8)
    soft[0] = [0, 100, 128, 255]
    Image.fromarray(soft).save(folder / "masks" / "00003_0001.png")
    ds = load_dataset("tiktok", "all", tmp_path)
    assert ds.load(0)[1][0].tolist() == [0, 0, 1, 1]
    assert ds.report["soft edge pixels (neither 0 nor 255)"] == 2


def test_split_file_refuses_missing_repeated_and_shared_ids(tmp_path):
    write_pairs(tmp_path / "tiktok_person")
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"train": ["00000_0001", "00042_0001"], "val": []}))
    with pytest.raises(DataError, match="00042_0001"):
        load_dataset("tiktok", "train", tmp_path, split_file=split_file)
    split_file.write_text(json.dumps({"train": ["00000_0001", "00004_0001"], "val": []}))
    assert load_dataset("tiktok", "train", tmp_path, split_file=split_file).ids == ["00000_0001", "00004_0001"]
    split_file.write_text(json.dumps({"train": ["00000_0001", "00004_0001", "00000_0001"], "val": []}))
    with pytest.raises(DataError, match=r"names 1 ids more than once, e.g. \['00000_0001'\]"):
        load_dataset("tiktok", "train", tmp_path, split_file=split_file)
    split_file.write_text(json.dumps({"rule": "mine", "train": ["00000_0001", "00004_0001"], "val": ["00004_0001"]}))
    for split in ("train", "val"):  # a leak is refused whichever split is asked for
        with pytest.raises(DataError, match=r"1 ids are in both .* e.g. \['00004_0001'\]: a model would be scored"):
            load_dataset("tiktok", split, tmp_path, split_file=split_file)


def test_cityscapes_official_layout_maps_label_ids_to_train_ids(tmp_path):
    root = tmp_path / "cityscapes"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for d in ("leftImg8bit", "gtFine"):
            (root / d / split / "aachen").mkdir(parents=True)
        image, _ = make_sample(1, (32, 64))
        ids = rng.integers(0, 34, (32, 64), dtype=np.uint8)
        Image.fromarray(image).save(root / "leftImg8bit" / split / "aachen" / "aachen_000000_000019_leftImg8bit.png")
        gt = root / "gtFine" / split / "aachen" / "aachen_000000_000019_gtFine_"
        Image.fromarray(ids).save(f"{gt}labelIds.png")
        for sibling in ("color.png", "instanceIds.png", "polygons.json"):  # the official zip's other files
            Path(f"{gt}{sibling}").write_bytes(b"")
    ds = load_dataset("cityscapes", "val", tmp_path)
    _, labels = ds.load(0)
    np.testing.assert_array_equal(labels, labelids_to_trainids(ids))
    assert labels.max() == 255 and set(np.unique(labels)) - {255} <= set(range(19))
    (root / "gtFine" / "val" / "aachen" / "aachen_000001_000019_gtFine_labelIds.png").write_bytes(b"")
    with pytest.raises(DataError, match="1 masks have no image"):  # a stray label file is still reported
        load_dataset("cityscapes", "val", tmp_path)


def test_cityscapes_pairs_recover_labels_through_jpeg(tmp_path):
    """Pairs made like the Kaggle set (photo | colour mask, JPEG) decode to the right classes."""
    spec = SPECS["cityscapes_pairs"]
    (tmp_path / "cityscapes_data" / "train").mkdir(parents=True)
    image, shapes = make_sample(3, (64, 64))
    labels = np.array([0, 11, 13, 10], np.uint8)[shapes]  # road, person, car, sky
    pair = np.concatenate([image, spec.palette[labels]], axis=1)
    Image.fromarray(pair).save(tmp_path / "cityscapes_data" / "train" / "1.jpg", quality=90)
    ds = load_dataset("cityscapes_pairs", "train", tmp_path)
    photo, decoded = ds.load(0)
    assert photo.shape == (64, 64, 3)
    assert (decoded == labels).mean() > 0.97


def test_a_split_whose_masks_all_fail_reports_no_pixels_not_nan():
    stats = SplitStats("train", count=2, min_hw=(4, 4), max_hw=(4, 4), class_pixels=np.zeros(2, np.int64),
                       problems=["FudanPed00001_mask.png: cannot be decoded"])
    text = format_stats("pennfudan", [stats])
    assert "nan" not in text and "pixels: none" in text and "PROBLEM: FudanPed00001_mask.png" in text


def test_a_train_folder_of_another_dataset_is_not_cityscapes_pairs(tmp_path):
    spec = SPECS["cityscapes_pairs"]
    (tmp_path / "train").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "train" / "0001TP_006690.png")  # CamVid's layout
    assert not spec.is_present(tmp_path)
    Image.fromarray(np.zeros((4, 8, 3), np.uint8)).save(tmp_path / "train" / "1.jpg")
    assert spec.is_present(tmp_path)


def test_msrc21_voids_horse_and_mountain_and_keeps_msrc_split(tmp_path):
    msrc = SPECS["msrc"]
    folder = tmp_path / msrc.folder
    (folder / "Images").mkdir(parents=True)
    (folder / "GroundTruth").mkdir()
    for k in range(6):
        _, shapes = make_sample(k, (24, 32))
        labels = np.array([4, 7, 1, 22], np.uint8)[shapes]  # horse, mountain, grass, boat
        colours = np.where((shapes == 0)[..., None] & (k % 2 == 0), 0, msrc.palette[labels])  # some void (black)
        Image.fromarray(make_sample(k, (24, 32))[0]).save(folder / "Images" / f"{k}_1_s.png")
        Image.fromarray(colours.astype(np.uint8)).save(folder / "GroundTruth" / f"{k}_1_s_GT.png")
    for split in ("train", "val"):
        assert load_dataset("msrc21", split, tmp_path).ids == load_dataset("msrc", split, tmp_path).ids
    ds, ds21 = load_dataset("msrc", "all", tmp_path), load_dataset("msrc21", "all", tmp_path)
    assert ds21.num_classes == 21 and "horse" not in ds21.class_names and "mountain" not in ds21.class_names
    for i in range(len(ds)):
        labels, labels21 = ds.load(i)[1], ds21.load(i)[1]
        names = np.array([*ds.class_names, *["void"] * (256 - len(ds.class_names))])[labels]
        expected = np.array([ds21.class_names.index(n) if n in ds21.class_names else 255 for n in names.ravel()])
        np.testing.assert_array_equal(labels21, expected.reshape(labels.shape))
        assert (labels21 == 255).any() and set(np.unique(labels21)) <= {ds21.class_names.index("grass"),
                                                                         ds21.class_names.index("boat"), 255}


def test_colour_masks_saved_as_palette_pngs_decode_like_rgb_ones(tmp_path):
    """PNG optimizers (optipng, pngquant) store a few-colour mask as a palette image: still its colours."""
    msrc = SPECS["msrc"]
    folder = tmp_path / msrc.folder
    (folder / "Images").mkdir(parents=True)
    (folder / "GroundTruth").mkdir()
    image, shapes = make_sample(0, (24, 32))
    colours = np.where((shapes == 0)[..., None], 0, msrc.palette[np.array([4, 7, 1, 22], np.uint8)[shapes]])
    keys, index = np.unique(colours.reshape(-1, 3).astype(np.uint8), axis=0, return_inverse=True)
    for k, as_palette in enumerate((False, True)):
        Image.fromarray(image).save(folder / "Images" / f"{k}_1_s.png")
        mask = Image.fromarray(index.reshape(24, 32).astype(np.uint8), mode="P")
        mask.putpalette(keys.ravel().tolist())
        (mask if as_palette else mask.convert("RGB")).save(folder / "GroundTruth" / f"{k}_1_s_GT.png")
    ds = load_dataset("msrc", "all", tmp_path)
    assert Image.open(ds.items[1].mask).mode == "P"
    (_, rgb), (_, palette) = ds.load(0), ds.load(1)
    np.testing.assert_array_equal(rgb, np.array([255, 7, 1, 22], np.uint8)[shapes])  # black is void
    np.testing.assert_array_equal(palette, rgb)


def test_camvid32_kaggle_colours_decode_to_31_classes_with_void_ignored(tmp_path):
    written = write_camvid32(tmp_path / "CamVid32")
    ds = load_dataset("camvid32", "val", tmp_path)
    assert ds.num_classes == 31 and ds.class_names[17] == "Road" and ds.ids == ["0001TP_000001"]
    _, labels = ds.load(0)
    expected = written["val"].copy()
    expected[expected == 30] = 255  # Void
    expected[expected == 31] = 30   # Wall follows Void in the csv: one place earlier once Void is gone
    np.testing.assert_array_equal(labels, expected)


def test_camvid32_with_another_class_list_or_colour_names_the_file(tmp_path):
    folder = tmp_path / "CamVid32"
    write_camvid32(folder)
    csv = folder / "class_dict.csv"
    csv.write_text(csv.read_text().replace("Sky,128, 128, 128", "Sky,128, 128, 129"))
    with pytest.raises(DataError, match=r"class_dict.csv: lists other classes or colours than CamVid's 32"):
        load_dataset("camvid32", "train", tmp_path)
    csv.write_text("name;r;g;b\n")
    with pytest.raises(DataError, match=r"class_dict.csv: is not a class list of name,r,g,b rows"):
        load_dataset("camvid32", "train", tmp_path)
    write_camvid32(tmp_path / "other" / "CamVid32")
    mask = tmp_path / "other" / "CamVid32" / "val_labels" / "0001TP_000001_L.png"
    Image.fromarray(np.full((24, 32, 3), 7, np.uint8)).save(mask)  # a colour of no class
    with pytest.raises(DataError, match="0001TP_000001_L.png"):
        load_dataset("camvid32", "val", tmp_path / "other").load(0)


def write_pets(root, trimaps: dict, kinds: dict):
    """``root/oxford_iiit_pet`` in the official layout: for each id a trimap (values 1/2/3) and a photo saved
    as ``kinds[id]`` ("JPEG", "GIF" or "RGBA" PNG) under a ``.jpg`` name."""
    folder = root / "oxford_iiit_pet"
    (folder / "images").mkdir(parents=True)
    (folder / "annotations" / "trimaps").mkdir(parents=True)
    for item, trimap in trimaps.items():
        photo = Image.fromarray(make_sample(len(item), trimap.shape)[0])
        kind = kinds.get(item, "JPEG")
        photo = {"GIF": photo.convert("P"), "RGBA": photo.convert("RGBA")}.get(kind, photo)
        photo.save(folder / "images" / f"{item}.jpg", format="PNG" if kind == "RGBA" else kind)
        Image.fromarray(trimap).save(folder / "annotations" / "trimaps" / f"{item}.png")
    (folder / "annotations" / "trimaps" / "._Bengal_1.png").write_bytes(b"AppleDouble")  # as in the release
    return folder


def test_pets_trimaps_map_by_name_and_photos_decode_by_content(tmp_path):
    trimap = np.array([[1, 1, 3, 2], [1, 3, 2, 2], [3, 2, 2, 2]], np.uint8)
    write_pets(tmp_path, {"Bengal_1": trimap, "Abyssinian_5": trimap, "Abyssinian_7": trimap,
                          "Abyssinian_34": np.full((3, 4), 2, np.uint8)},
               {"Abyssinian_5": "RGBA", "Abyssinian_7": "GIF"})
    pets, trimaps = load_dataset("pets", "all", tmp_path), load_dataset("pets_trimap", "all", tmp_path)
    assert pets.ids == trimaps.ids == ["Abyssinian_5", "Abyssinian_7", "Bengal_1"]  # Abyssinian_34 left out
    for i in range(len(pets)):
        image, labels = pets.load(i)
        assert image.shape == (3, 4, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(labels, np.array([1, 0, 255], np.uint8)[trimap - 1])  # border ignored
        np.testing.assert_array_equal(trimaps.load(i)[1], np.array([1, 0, 2], np.uint8)[trimap - 1])
    assert pets.report == {f"{kind} files named .jpg (decoded by content)": 1 for kind in ("PNG", "GIF")}
    for split in ("train", "val"):
        assert load_dataset("pets", split, tmp_path).ids == load_dataset("pets_trimap", split, tmp_path).ids


def test_a_pet_trimap_without_a_pet_is_background_and_void(tmp_path):
    """Decoded labels of only 0 and 255 are real here, not a raw 0/255 mask (which a binary set refuses)."""
    no_pet = np.array([[2, 2, 3], [2, 3, 3]], np.uint8)  # background and border only
    write_pets(tmp_path, {"Bengal_1": no_pet}, {})
    np.testing.assert_array_equal(load_dataset("pets", "all", tmp_path).load(0)[1], [[0, 0, 255], [0, 255, 255]])
    with pytest.raises(DataError, match="0/255 mask"):  # the check itself still holds for labels given as they are
        validate_mask(np.array([[0, 255]], np.uint8), num_classes=2)


def test_pets_trimap_with_other_values_is_refused(tmp_path):
    write_pets(tmp_path, {"Bengal_2": np.array([[0, 1], [2, 255]], np.uint8)}, {})
    with pytest.raises(DataError, match="Bengal_2.png.*values 0, 255"):
        load_dataset("pets", "all", tmp_path).load(0)


def test_prepare_lists_binary_masks_that_are_almost_all_foreground(tmp_path):
    """TikTok's 00007_0353 is 99.9% person for an ordinary dancer frame: listed to be looked at, with any mask
    at 99% or more foreground of its labelled pixels (the ignored border does not count)."""
    full = np.ones((10, 10), np.uint8)  # all pet
    full[0, :] = 3  # but for a border band, which is ignored: still all pet where labelled
    nearly = np.ones((10, 10), np.uint8)
    nearly[5, 5] = 2  # 99 of 100 pixels pet
    half = np.array([[1, 2]] * 5, np.uint8)
    write_pets(tmp_path, {"Bengal_1": full, "Bengal_2": nearly, "Bengal_3": half}, {})
    stats = inspect_split("pets", "all", tmp_path)
    assert stats.suspects == ["Bengal_1", "Bengal_2"]
    assert "check: 2 masks are 99% or more pet (likely broken; look at them): Bengal_1, Bengal_2" in \
        format_stats("pets", [stats])
    assert inspect_split("pets_trimap", "all", tmp_path).suspects == []  # a scene may be one class: binary only
    stats.suspects = [f"Bengal_{i}" for i in range(7)]
    assert "Bengal_0, Bengal_1, Bengal_2, Bengal_3, Bengal_4 and 2 more" in format_stats("pets", [stats])


def test_prepare_counts_the_ignored_pixels_and_the_size_range(tmp_path):
    """The pet border (255) is counted and the class shares are of every pixel; sizes go from the smallest to
    the largest mask."""
    write_pets(tmp_path, {"Bengal_1": np.array([[1, 1, 3, 2], [1, 3, 2, 2], [3, 2, 2, 2]], np.uint8),  # 3x4
                          "Bengal_2": np.array([[1, 3], [3, 3], [2, 2], [2, 2], [1, 2]], np.uint8)}, {})  # 5x2
    ds = load_dataset("pets", "all", tmp_path)
    stats = inspect_split("pets", "all", tmp_path)
    assert stats.ignored_pixels == sum(int((ds.load(i)[1] == 255).sum()) for i in range(len(ds))) == 6
    assert stats.class_pixels.tolist() == [11, 5]
    assert (stats.min_hw, stats.max_hw) == ((3, 2), (5, 4))
    assert "sizes (3, 2) .. (5, 4) (HxW)" in format_stats("pets", [stats])
    assert "pixels: background 50.0%, pet 22.7%, ignore 27.3%" in format_stats("pets", [stats])


def test_pets_fall_back_to_the_shipped_sample(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEGLIB_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(seglib.data, "_ANNOUNCED", set())
    sample = shipped_sample("pets")
    assert find_folder("pets") == find_folder("pets_trimap") == sample
    said = capsys.readouterr().out.splitlines()
    assert len(said) == 2 and all("60-photo sample shipped with seglib" in line for line in said)
    find_folder("pets")
    assert capsys.readouterr().out == ""  # once per dataset and process
    with pytest.raises(DataError, match="Oxford-IIIT Pet"):
        find_folder("pets", tmp_path)  # a folder named explicitly has no fallback
    with pytest.raises(DataError):
        find_folder("pets", sample=False)


def test_the_shipped_pets_sample_is_small_licensed_and_split_by_breed():
    sample = shipped_sample("pets")
    files = [p for p in sample.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 2 * 2**20
    assert "Oxford-IIIT Pet Dataset (Parkhi et al., CVPR 2012), CC BY-SA 4.0" in (sample / "LICENSE").read_text()
    breeds = {s: {i.rsplit("_", 1)[0] for i in load_dataset("pets", s, sample).ids} for s in ("train", "val")}
    assert breeds["train"] == breeds["val"] == {"Abyssinian", "Bengal", "american_bulldog"}
    assert len(load_dataset("pets", "train", sample)) == 48 and len(load_dataset("pets", "val", sample)) == 12
    for image in (sample / "images").glob("*.jpg"):
        with Image.open(image) as img:
            assert img.format == "JPEG" and img.mode == "RGB" and max(img.size) <= 256


# ---------------------------------------------------------------- the person-data fallback


def tiny_tiktok(root):
    stems = [f"{video}_{frame:04d}" for video in groups_in_both_splits("tiktok", [f"{v:05d}" for v in range(3, 60)])
             for frame in (1, 9)]
    write_png_pairs(root / "tiktok_person" / "images", root / "tiktok_person" / "masks", stems)


def tiny_pennfudan(root):
    stems = groups_in_both_splits("pennfudan", [f"PennPed{i:05d}" for i in range(1, 60)])
    write_png_pairs(root / "PennFudanPed" / "PNGImages", root / "PennFudanPed" / "PedMasks", stems, "{}_mask.png")


def test_person_data_falls_back_from_tiktok_to_pennfudan_to_synthetic(tmp_path, capsys):
    assert PERSON_DATASETS == ("tiktok", "pennfudan", "synthetic")
    assert person_dataset(tmp_path) == ("synthetic", find_folder("synthetic", tmp_path))
    assert capsys.readouterr().out.splitlines() == [
        "person data: tiktok skipped (TikTok dancing-person masks not found)",
        "person data: pennfudan skipped (Penn-Fudan Pedestrian not found)",
        "person data: synthetic ($SEGLIB_WORK_DIR/synthetic_shapes)"]
    tiny_pennfudan(tmp_path)
    assert person_dataset(tmp_path, verbose=False) == ("pennfudan", tmp_path / "PennFudanPed")
    (tmp_path / "tiktok_person" / "masks").mkdir(parents=True)  # present, but broken: skipped with the reason
    (tmp_path / "tiktok_person" / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "tiktok_person" / "images" / "00003_0001.png")
    assert person_dataset(tmp_path).name == "pennfudan"
    assert "person data: tiktok skipped (1 images have no mask here" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "tiktok_person")
    tiny_tiktok(tmp_path)
    assert person_dataset(tmp_path) == ("tiktok", tmp_path / "tiktok_person")
    assert capsys.readouterr().out == "person data: tiktok (<...>/tiktok_person)\n"


def test_available_datasets_keeps_the_order_and_names_what_is_missing(tmp_path, capsys):
    tiny_pennfudan(tmp_path)
    assert available_datasets("camvid", "pennfudan", "msrc", root=tmp_path) == ("pennfudan",)
    assert capsys.readouterr().out.splitlines() == ["camvid: not available (CamVid (SegNet 11 classes) not found)",
                                                    "msrc: not available (MSRC-v2 object classes not found)"]
    assert available_datasets("camvid", root=tmp_path, verbose=False) == ()
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------- prepare tiktok --source: the release's layout


def release_layout(source, videos, frames=(1, 2)):
    """The TikTok release's layout: ``<video>/images/<frame>.png`` and ``<video>/masks/<frame>.png``."""
    for video in videos:
        write_png_pairs(source / video / "images", source / video / "masks", [f"{f:04d}" for f in frames])
    return source


def test_prepare_tiktok_converts_the_release_per_video_layout(tmp_path, capsys):
    videos = groups_in_both_splits("tiktok", [f"{v:05d}" for v in range(3, 60)])
    release = release_layout(tmp_path / "release", videos)
    (release / "README.txt").write_text("not a video")
    root = tmp_path / "data"
    assert main(["prepare", "tiktok", "--source", str(release), "--root", str(root)]) == 0
    assert f"converted 6 frames of 3 videos into {root / 'tiktok_person'}" in capsys.readouterr().out
    flat = root / "tiktok_person"
    names = sorted(f"{v}_{f:04d}.png" for v in videos for f in (1, 2))
    assert [sorted(p.name for p in (flat / sub).iterdir()) for sub in ("images", "masks")] == [names, names]
    assert (flat / "masks" / f"{videos[0]}_0002.png").read_bytes() == (release / videos[0] / "masks" / "0002.png"
                                                                      ).read_bytes()
    assert sorted(p.name for p in root.iterdir()) == ["tiktok_person"]  # no temporary folder left
    by_split = {s: load_dataset("tiktok", s, root).ids for s in ("train", "val")}
    assert sorted(by_split["train"] + by_split["val"]) == [n.removesuffix(".png") for n in names]
    for split, ids in by_split.items():  # both frames of a video in the same split
        assert len(ids) == 2 * len({i.split("_")[0] for i in ids}), split
    # never replaced, never ignored: the Python API and the command line refuse
    with pytest.raises(DataError, match="tiktok_person: exists already, and prepare never replaces"):
        flatten_tiktok_videos(release, flat)
    assert main(["prepare", "tiktok", "--source", str(release), "--root", str(root)]) == 2
    assert "exists already, and prepare never replaces" in capsys.readouterr().err


def test_tiktok_release_with_a_bad_layout_names_the_folder_and_writes_nothing(tmp_path):
    release = release_layout(tmp_path / "release", ["00003", "00004"])
    target = tmp_path / "data" / "tiktok_person"
    (release / "00004" / "masks" / "0002.png").unlink()
    with pytest.raises(DataError, match=r"00004/masks: 1 images have no mask here"):
        flatten_tiktok_videos(release, target)
    shutil.rmtree(release / "00004" / "masks")
    with pytest.raises(DataError, match=r"00004/masks: folder not found"):
        flatten_tiktok_videos(release, target)
    shutil.rmtree(release / "00004")
    release_layout(release, ["00005_b"])
    with pytest.raises(DataError, match=r"00005_b: has '_' in its name"):
        flatten_tiktok_videos(release, target)
    with pytest.raises(DataError, match="holds neither images/ . masks/ nor the TikTok release's per-video"):
        flatten_tiktok_videos(release / "00003" / "images", target)
    assert not (tmp_path / "data").exists()


def test_a_tiktok_conversion_that_fails_partway_leaves_no_target(tmp_path, monkeypatch):
    """The copy goes to a hidden folder renamed at the end: a full disk or a Ctrl-C leaves no partial
    tiktok_person/ (which the next prepare would refuse, or load as a smaller dataset)."""
    release = release_layout(tmp_path / "release", ["00003", "00004"])
    target = tmp_path / "data" / "tiktok_person"
    real, calls = shutil.copyfile, []

    def copyfile(src, dst, **kw):
        calls.append(src)
        if len(calls) == 3:
            raise OSError("disk unplugged")
        return real(src, dst, **kw)

    monkeypatch.setattr(convert.shutil, "copyfile", copyfile)
    with pytest.raises(OSError, match="disk unplugged"):
        flatten_tiktok_videos(release, target)
    assert len(calls) == 3 and list((tmp_path / "data").iterdir()) == []  # no target, no hidden folder


# ------------------------------------------------------------------ pairing images with masks


def image_mask_folders(root: Path, names=("c", "a", "b")) -> tuple[Path, Path]:
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for n in names:
        (root / "images" / f"{n}.png").write_bytes(b"i")
        (root / "masks" / f"{n}.png").write_bytes(b"m")
    return root / "images", root / "masks"


@pytest.mark.parametrize("litter", ["images/._a.png", "masks/._b.png", "masks/Thumbs.db", "masks/old/"])
def test_pair_files_ignores_what_file_managers_leave_behind(tmp_path, litter):
    """macOS ``._`` files, Windows' Thumbs.db and a subfolder are neither samples nor orphan masks."""
    from seglib.data.specs import pair_files

    images, masks = image_mask_folders(tmp_path)
    if litter.endswith("/"):
        (tmp_path / litter).mkdir()
    else:
        (tmp_path / litter).write_bytes(b"x")
    items = pair_files(images, masks, "*.png", lambda p: p.name, mask_pattern="*")
    assert [item.id for item in items] == ["a", "b", "c"]


def test_pair_files_lists_samples_in_name_order_whatever_the_file_system_order(tmp_path):
    from seglib.data.specs import pair_files

    names = [f"{i:03d}" for i in range(40)][::-1]  # written last to first
    images, masks = image_mask_folders(tmp_path, names)
    assert [item.id for item in pair_files(images, masks, "*.png", lambda p: p.name)] == sorted(names)


def test_a_cityscapes_pair_of_odd_width_is_refused_not_split_unevenly(tmp_path):
    folder = tmp_path / "cityscapes_data" / "train"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 9, 3), np.uint8)).save(folder / "1.jpg")
    with pytest.raises(DataError, match="width 9 is odd"):
        load_dataset("cityscapes_pairs", "train", tmp_path / "cityscapes_data").load(0)
