"""The datasets the workbook knows: where their files are and how their labels decode."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from seglib import masks, synthetic
from seglib.data.base import IGNORE_INDEX, DatasetSpec, Item
from seglib.data.io import image_format, read_image
from seglib.data.splits import assign
from seglib.errors import DataError
from seglib.utils import atomic_path

PERSON = ("background", "person")
PERSON_PALETTE = np.array([(0, 0, 0), (220, 20, 60)], np.uint8)


def pair_files(image_dir: Path, mask_dir: Path, pattern: str,
               mask_name: Callable[[Path], str], mask_pattern: str = "*") -> list[Item]:
    """Items for every image in ``image_dir`` whose mask is ``mask_dir / mask_name(image)``.

    An image without a mask, or a mask (a file of ``mask_dir`` matching ``mask_pattern``) without an image, is an
    error that names the files. Hidden files (``.DS_Store``, the ``._NAME`` AppleDouble files of archives made on a
    Mac) are not samples.
    """
    for d in (image_dir, mask_dir):
        if not d.is_dir():
            raise DataError(d, "folder not found", "check the dataset layout (the README's Datasets table)")
    images = sorted(p for p in image_dir.glob(pattern) if not p.name.startswith("."))
    wanted = {mask_name(p): p for p in images}
    present = {p.name for p in mask_dir.glob(mask_pattern) if p.is_file() and not p.name.startswith(".")}
    no_mask = [str(p) for name, p in wanted.items() if name not in present]
    if no_mask:
        raise DataError(mask_dir, f"{len(no_mask)} images have no mask here, e.g. {no_mask[:3]}",
                        "restore the missing masks or remove those images")
    orphans = sorted(present - set(wanted) - {"Thumbs.db"})
    if orphans:
        raise DataError(mask_dir, f"{len(orphans)} masks have no image, e.g. {orphans[:3]}",
                        f"restore the missing images in {image_dir} or remove those masks")
    return [Item(p.stem, p, mask_dir / mask_name(p)) for p in images]


class _HashSplit(DatasetSpec):
    """A dataset without an official split: the deterministic hash rule of ``seglib.data.splits``."""

    val_fraction = 0.2
    split_rule = "hash of the image id, 20% val"
    split_key = ""  # the name the hash takes, when not the spec's own (datasets that share their files)

    def group_of(self, item_id: str) -> str:
        return item_id

    def all_items(self, folder: Path) -> list[Item]:
        raise NotImplementedError

    split_dir = ""

    def list_items(self, folder: Path, split: str) -> list[Item]:
        items = {item.id: item for item in self.all_items(folder) if item.id not in self.left_out}
        chosen = assign(self.split_key or self.name, items, split, self.val_fraction, self.group_of)
        if items and not chosen:  # a small subset: too few images (videos) for the rule to give each split one
            groups = len({self.group_of(i) for i in items})
            raise DataError(folder, f"its {len(items)} samples ({groups} group{'s' * (groups != 1)}: "
                            f"{self.split_rule}) all fall outside the {split!r} split",
                            "add more images (videos), or pass your own split with "
                            "load_dataset(..., split_file=...)")
        return [items[i] for i in chosen]


class PennFudan(_HashSplit):
    name, title, folder, marker = "pennfudan", "Penn-Fudan Pedestrian", "PennFudanPed", "PedMasks"
    task, class_names, palette = "binary", PERSON, PERSON_PALETTE
    homepage = "https://www.cis.upenn.edu/~jshi/ped_html/"

    def all_items(self, folder):
        return pair_files(folder / "PNGImages", folder / "PedMasks", "*.png",
                          lambda p: f"{p.stem}_mask.png")

    def decode(self, raw, item, image_hw, report):
        return masks.instances_to_binary(raw, path=item.mask)  # 0 = background, k = k-th pedestrian


class TikTok(_HashSplit):
    name, title, folder, marker = "tiktok", "TikTok dancing-person masks", "tiktok_person", "masks"
    task, class_names, palette = "binary", PERSON, PERSON_PALETTE
    split_rule = "hash of the video id, 20% of videos to val (never split by frame)"
    homepage = "https://www.yasamin.page/hdnet_tiktok"
    threshold = 127

    def group_of(self, item_id):
        return item_id.split("_")[0]  # <video>_<frame>

    def all_items(self, folder):
        items = pair_files(folder / "images", folder / "masks", "*.png", lambda p: p.name)
        bare = [item.image.name for item in items if "_" not in item.id]
        if bare:
            raise DataError(folder / "images", f"{len(bare)} frames have no <video>_ prefix (e.g. {bare[:3]}), so "
                            "the split could not keep a video's frames together: its frames would be in both "
                            "train and val", "convert the release with 'python -m seglib prepare tiktok --source "
                            "DIR' (DIR holds the video folders 00001/, 00002/, ...), or rename them "
                            "<video>_<frame>.png")
        return items

    def decode(self, raw, item, image_hw, report):
        if raw.shape != tuple(image_hw) and report is not None:
            report["mask 1 px off the image size: cropped/padded"] += 1
        raw = masks.fit_mask_to_image(raw, image_hw, max_offset=1, path=item.mask)
        labels = masks.binarize(raw, self.threshold, path=item.mask)
        if report is not None:
            if raw.max() == 1:
                report["masks stored as 0/1 (read as they are)"] += 1
            else:
                soft = (raw > 0) & (raw < masks.full_scale(raw))
                report["soft edge pixels (neither 0 nor 255)"] += int(soft.sum())
            if labels.all() or not labels.any():
                report["masks with one value only (check them: likely broken)"] += 1
        return labels


class CamVid(DatasetSpec):
    name, title, folder, marker = "camvid", "CamVid (SegNet 11 classes)", "CamVid", "trainannot"
    task = "multiclass"
    class_names = ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol",
                   "fence", "car", "pedestrian", "bicyclist")
    palette = np.array([(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128),
                        (60, 40, 222), (128, 128, 0), (192, 128, 128), (64, 64, 128),
                        (64, 0, 128), (64, 64, 0), (0, 128, 192)], np.uint8)
    splits = ("train", "val", "test")
    homepage = "http://mi.eng.cam.ac.uk/research/projects/VideoRec/CamVid/"
    void = 11

    def split_items(self, folder, split):
        return pair_files(folder / split, folder / f"{split}annot", "*.png", lambda p: p.name)

    def decode(self, raw, item, image_hw, report):
        if raw.ndim == 2 and raw.max() > self.void:
            raise DataError(item.mask, f"holds values up to {raw.max()}, but CamVid's masks hold 0-10 (classes) "
                            "and 11 (void)", "use the SegNet 11-class annotations (CamVid/*annot), or convert "
                            "colour or 32-class masks to these indices")
        out = raw.copy()
        out[raw == self.void] = IGNORE_INDEX
        return out


class _ColourMasks(DatasetSpec):
    """Masks painted in exact class colours (``file_colours``), ``void_color`` ignored; any other colour is
    an error that names the file."""

    void_color: tuple[int, int, int] = (0, 0, 0)
    colour_masks = True

    @property
    def file_colours(self) -> np.ndarray:
        return self.palette

    def decode(self, raw, item, image_hw, report):
        labels, _ = masks.rgb_to_index(raw, self.file_colours, ignore_colors=[self.void_color],
                                       strict=True, path=item.mask)
        return labels


CAMVID32_COLOURS = {  # the Kaggle copy's class_dict.csv (CamVid's 32 labels: 31 classes and Void)
    "Animal": (64, 128, 64), "Archway": (192, 0, 128), "Bicyclist": (0, 128, 192), "Bridge": (0, 128, 64),
    "Building": (128, 0, 0), "Car": (64, 0, 128), "CartLuggagePram": (64, 0, 192), "Child": (192, 128, 64),
    "Column_Pole": (192, 192, 128), "Fence": (64, 64, 128), "LaneMkgsDriv": (128, 0, 192),
    "LaneMkgsNonDriv": (192, 0, 64), "Misc_Text": (128, 128, 64), "MotorcycleScooter": (192, 0, 192),
    "OtherMoving": (128, 64, 64), "ParkingBlock": (64, 192, 128), "Pedestrian": (64, 64, 0), "Road": (128, 64, 128),
    "RoadShoulder": (128, 128, 192), "Sidewalk": (0, 0, 192), "SignSymbol": (192, 128, 128), "Sky": (128, 128, 128),
    "SUVPickupTruck": (64, 128, 192), "TrafficCone": (0, 0, 64), "TrafficLight": (0, 64, 64),
    "Train": (192, 64, 128), "Tree": (128, 128, 0), "Truck_Bus": (192, 128, 192), "Tunnel": (64, 0, 64),
    "VegetationMisc": (192, 192, 0), "Void": (0, 0, 0), "Wall": (64, 192, 0),
}


def read_class_dict(path: Path) -> dict[str, tuple[int, int, int]]:
    """``name,r,g,b`` rows of a ``class_dict.csv`` (spaces after the commas allowed) → ``{name: (r, g, b)}``."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: a byte-order mark is not a name
            rows = [row for row in csv.reader(f, skipinitialspace=True) if "".join(row).strip()]
        if not rows or [c.strip().lower() for c in rows[0]] != ["name", "r", "g", "b"]:
            raise ValueError("its first line is not name,r,g,b")
        return {name.strip(): (int(r), int(g), int(b)) for name, r, g, b in rows[1:]}
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror})", "restore the dataset's class_dict.csv") from exc
    except ValueError as exc:  # a short row, a colour that is not a number, the header
        raise DataError(path, f"is not a class list of name,r,g,b rows ({exc})",
                        "restore the dataset's class_dict.csv") from exc


class CamVid32(_ColourMasks):
    """CamVid as Kaggle's ``carlolepelaars/camvid`` packs it (the CamVid-with-focal-loss project's data): colour
    masks of the 32 labels in ``class_dict.csv``, Void ignored, 367 / 101 / 232 photos."""

    name, title = "camvid32", "CamVid (Kaggle, 32 labels)"
    folder, marker = "CamVid32", "class_dict.csv"
    task = "multiclass"
    class_names = tuple(name for name in CAMVID32_COLOURS if name != "Void")
    palette = np.array([CAMVID32_COLOURS[name] for name in class_names], np.uint8)
    void_color = CAMVID32_COLOURS["Void"]
    splits = ("train", "val", "test")
    homepage = "https://www.kaggle.com/datasets/carlolepelaars/camvid"

    def split_items(self, folder, split):
        listed = read_class_dict(folder / self.marker)
        if listed != CAMVID32_COLOURS:
            changed = sorted(set(listed.items()) ^ set(CAMVID32_COLOURS.items()))[:3]
            raise DataError(folder / self.marker, f"lists other classes or colours than CamVid's 32 (e.g. {changed})",
                            "use the class_dict.csv of the Kaggle CamVid, or load other colour masks with "
                            "seglib.masks.rgb_to_index and your own palette")
        return pair_files(folder / split, folder / f"{split}_labels", "*.png", lambda p: f"{p.stem}_L.png")


class MSRC(_ColourMasks, _HashSplit):
    name, title = "msrc", "MSRC-v2 object classes"
    folder, marker = "MSRC_ObjCategImageDatabase_v2", "GroundTruth"
    task = "multiclass"
    class_names = ("building", "grass", "tree", "cow", "horse", "sheep", "sky", "mountain",
                   "aeroplane", "water", "face", "car", "bicycle", "flower", "sign", "bird",
                   "book", "chair", "road", "cat", "dog", "body", "boat")
    palette = np.array([(128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128),
                        (0, 128, 128), (128, 128, 128), (64, 0, 0), (192, 0, 0), (64, 128, 0),
                        (192, 128, 0), (64, 0, 128), (192, 0, 128), (64, 128, 128),
                        (192, 128, 128), (0, 64, 0), (128, 64, 0), (0, 192, 0), (128, 64, 128),
                        (0, 192, 128), (128, 192, 128), (64, 64, 0), (192, 64, 0)], np.uint8)
    homepage = "https://www.microsoft.com/en-us/research/project/image-understanding/"

    def all_items(self, folder):
        ext = "png" if any((folder / "Images").glob("*.png")) else "bmp"  # the original is BMP
        return pair_files(folder / "Images", folder / "GroundTruth", f"*.{ext}",
                          lambda p: f"{p.stem}_GT.{ext}")


_MSRC21 = [i for i, c in enumerate(MSRC.class_names) if c not in ("horse", "mountain")]  # MSRC's indices kept
_MSRC_TO_21 = np.full(256, IGNORE_INDEX, np.uint8)  # MSRC's labels -> MSRC-21's; horse, mountain, void -> void
_MSRC_TO_21[_MSRC21] = np.arange(len(_MSRC21))


class MSRC21(MSRC):
    """MSRC-v2 as its benchmark counts it ("MSRC-21"): horse and mountain, in too few images, become void;
    the same files and split as ``msrc``."""

    name, title = "msrc21", "MSRC-v2, 21 classes (horse, mountain void)"
    split_key = "msrc"
    class_names = tuple(MSRC.class_names[i] for i in _MSRC21)
    palette = MSRC.palette[_MSRC21]
    file_colours = MSRC.palette  # the GroundTruth files still hold all 23 colours

    def decode(self, raw, item, image_hw, report):
        return _MSRC_TO_21[super().decode(raw, item, image_hw, report)]


class Cityscapes(DatasetSpec):
    name, title, folder, marker = "cityscapes", "Cityscapes (fine, trainIds)", "cityscapes", "gtFine"
    task = "multiclass"
    class_names = masks.CITYSCAPES_CLASSES
    palette = masks.CITYSCAPES_PALETTE
    homepage = "https://www.cityscapes-dataset.com/"

    split_dir = "leftImg8bit/{split}"

    def split_items(self, folder, split):
        images = folder / "leftImg8bit" / split
        labels = folder / "gtFine" / split
        items = []
        for city in sorted(p.name for p in images.iterdir() if p.is_dir()):
            items += pair_files(images / city, labels / city, "*_leftImg8bit.png",  # beside each labelIds file:
                                lambda p: p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png"),
                                mask_pattern="*_gtFine_labelIds.png")  # _color, _instanceIds, _polygons.json
        return items

    def decode(self, raw, item, image_hw, report):
        return masks.labelids_to_trainids(raw)


class CityscapesPairs(DatasetSpec):
    """The Kaggle "cityscapes image pairs": one 256x512 JPG per sample, photo | colour mask."""

    name, title = "cityscapes_pairs", "Cityscapes image pairs (Kaggle)"
    folder, marker = "cityscapes_data", "train/*.jpg"  # a bare "train" folder is in many datasets
    task = "multiclass"
    class_names = masks.CITYSCAPES_CLASSES
    palette = masks.CITYSCAPES_PALETTE
    homepage = "https://www.kaggle.com/datasets/dansbecker/cityscapes-image-pairs"
    tolerance = 40  # JPEG blurs the colour mask; farther colours become ignore (255)

    def split_items(self, folder, split):
        files = sorted((folder / split).glob("*.jpg"))
        return [Item(p.stem, p, None) for p in files]

    def load(self, item, report=None):
        pair = read_image(item.image)
        h, w = pair.shape[:2]
        if w % 2:
            raise DataError(item.image, f"width {w} is odd: not a photo|mask pair",
                            "use files of the Kaggle pairs layout (photo left, mask right)")
        photo, colours = pair[:, : w // 2], pair[:, w // 2 :]
        labels = masks.cityscapes_colors_to_trainids(colours, tolerance=self.tolerance,
                                                     report=report, path=item.image)
        return np.ascontiguousarray(photo), labels


class BSDS500(DatasetSpec):
    """Berkeley segmentation: the label is the union of the human boundary maps."""

    name, title, folder, marker = "bsds500", "BSDS500 boundaries", "BSR/BSDS500/data", "groundTruth"
    task, class_names = "boundary", ("non-boundary", "boundary")
    palette = np.array([(0, 0, 0), (255, 255, 255)], np.uint8)
    splits = ("train", "val", "test")
    homepage = ("https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/"
                "resources.html")

    split_dir = "images/{split}"

    def split_items(self, folder, split):
        return pair_files(folder / "images" / split, folder / "groundTruth" / split, "*.jpg",
                          lambda p: f"{p.stem}.mat")

    def load(self, item, report=None):
        image = read_image(item.image)
        annotations = read_bsds_ground_truth(item.mask)
        if report is not None:
            report["annotators"] += len(annotations)
        shapes = sorted({b.shape for _, b in annotations})
        if len(shapes) != 1 or len(shapes[0]) != 2:
            raise DataError(item.mask, f"holds {len(annotations)} annotations of shapes {shapes or 'none'}; a BSDS500 "
                            "ground truth holds one or more of the image's size", "re-download BSR_bsds500.tgz or "
                            "replace this file")
        boundaries = np.any([b for _, b in annotations], axis=0).astype(np.uint8)
        return image, masks.validate_mask(boundaries, num_classes=2, image_size=image.shape[:2],
                                          path=item.mask)


def read_bsds_ground_truth(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(segmentation, boundaries), ...]``, one pair per human annotator of a BSDS500 ``.mat``.

    Segmentation values are region ids (1..N, arbitrary per annotator), not semantic classes.
    """
    from scipy.io import loadmat

    try:
        cells = loadmat(path)["groundTruth"][0]
        return [(c["Segmentation"][0, 0], c["Boundaries"][0, 0]) for c in cells]
    except Exception as exc:  # scipy raises many types for a bad file
        raise DataError(path, f"not a BSDS500 ground-truth .mat ({type(exc).__name__}: {exc})",
                        "re-download BSR_bsds500.tgz or replace this file") from exc


TRIMAP_VALUES = {"pet": 1, "background": 2, "border": 3}  # the Oxford-IIIT Pet trimap encoding (from 1, not 0)


def trimap_to_labels(raw: np.ndarray, class_names: tuple[str, ...], path: Path | None = None) -> np.ndarray:
    """An Oxford-IIIT Pet trimap → class indices, each trimap value mapped by its name to the class of that
    name; a value whose name is not a class (the border, for pet vs background) becomes ignore (255)."""
    unknown = sorted(set(np.unique(raw).tolist()) - set(TRIMAP_VALUES.values()))
    if raw.ndim != 2 or unknown:
        raise DataError(path, f"is not a trimap (values {', '.join(map(str, unknown)) or 'in colour'}; a trimap "
                        "holds 1 pet, 2 background, 3 border)", "use the file from annotations/trimaps/")
    table = np.full(256, IGNORE_INDEX, np.uint8)
    for name, value in TRIMAP_VALUES.items():
        if name in class_names:
            table[value] = class_names.index(name)
    return table[raw]


class Pets(_HashSplit):
    """Oxford-IIIT Pet, pet vs background: the trimap's border band is ignored (255).

    Two files of the official release are not what their ``.jpg`` name says (``Abyssinian_34`` is a GIF,
    ``Abyssinian_5`` a PNG with alpha); images are decoded by content, and the count shows in ``prepare``.
    Without a full copy, :func:`seglib.data.find_folder` takes the sample shipped with seglib.
    """

    name, title = "pets", "Oxford-IIIT Pet (pet vs background)"
    folder, marker = "oxford_iiit_pet", "annotations/trimaps"
    task, class_names = "binary", ("background", "pet")
    palette = np.array([(0, 0, 0), (255, 127, 14)], np.uint8)
    redistributable = True  # CC BY-SA 4.0, with attribution
    attribution = "Images and trimaps from the Oxford-IIIT Pet Dataset (Parkhi et al., CVPR 2012), CC BY-SA 4.0"
    homepage = "https://www.robots.ox.ac.uk/~vgg/data/pets/"
    split_key = "pets"
    sample = "pets"  # seglib/sample_data/pets
    left_out = {"Abyssinian_34": "its trimap is all background, but the photo shows a cat"}

    def is_present(self, folder):
        return (folder / "images").is_dir() and super().is_present(folder)  # one archive each

    def all_items(self, folder):
        return pair_files(folder / "images", folder / "annotations" / "trimaps", "*.jpg", lambda p: f"{p.stem}.png")

    def load(self, item, report=None):
        image, labels = super().load(item, report)
        kind = image_format(item.image)
        if report is not None and kind != "JPEG":
            report[f"{kind} files named .jpg (decoded by content)"] += 1
        return image, labels

    def decode(self, raw, item, image_hw, report):
        return trimap_to_labels(raw, self.class_names, path=item.mask)


class PetsTrimap(Pets):
    """Oxford-IIIT Pet with the trimap's three classes as given; the same files and split as ``pets``."""

    name, title = "pets_trimap", "Oxford-IIIT Pet (trimap: pet, background, border)"
    task, class_names = "multiclass", ("background", "pet", "border")
    palette = np.array([(0, 0, 0), (255, 127, 14), (31, 119, 180)], np.uint8)


class Synthetic(_HashSplit):
    """Generated shapes (see ``seglib.synthetic``): always available, free to share."""

    name, title, folder, marker = "synthetic", "Synthetic shapes (generated)", "synthetic_shapes", "masks"
    task, class_names, palette = "multiclass", synthetic.CLASS_NAMES, synthetic.PALETTE
    redistributable = True
    count, size = 96, (96, 128)

    def all_items(self, folder):
        return pair_files(folder / "images", folder / "masks", "*.png", lambda p: p.name)

    def generate(self, folder: Path) -> None:
        """Write the dataset in the images/ + masks/ layout (atomically, as one folder)."""
        from PIL import Image

        with atomic_path(folder, folder=True) as tmp:
            for sub in ("images", "masks"):
                (tmp / sub).mkdir(parents=True)
            for i in range(self.count):
                image, mask = synthetic.make_sample(i, self.size)
                Image.fromarray(image).save(tmp / "images" / f"shapes_{i:04d}.png")
                Image.fromarray(mask).save(tmp / "masks" / f"shapes_{i:04d}.png")


SPECS: dict[str, DatasetSpec] = {s.name: s for s in (
    PennFudan(), TikTok(), CamVid(), CamVid32(), MSRC(), MSRC21(), CityscapesPairs(), Cityscapes(), BSDS500(), Pets(),
    PetsTrimap(), Synthetic()
)}
