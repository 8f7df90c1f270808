"""Regenerate seglib/sample_data/pets, the Oxford-IIIT Pet sample shipped with seglib, from a full copy.

    python scripts/make_pets_sample.py [--root DIR]     # DIR holds oxford_iiit_pet/ (default: $SEGLIB_DATA_DIR)

The same input gives the same files: per breed and split, the photos whose ids hash lowest; each resized so that its
longer side is at most 256 px (the photo with area averaging, the trimap nearest only), the photo saved as
JPEG quality 90 (whatever it was before: GIF and PNG files of the release become real JPEGs), the trimap as
the publisher's values 1/2/3. The licence and attribution travel beside the files (LICENSE).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import defaultdict
from pathlib import Path

from PIL import Image

from seglib.data import find_folder, get_spec, shipped_sample
from seglib.data.io import read_image, read_label
from seglib.masks import resize_mask
from seglib.utils import atomic_path

PER_BREED = {"train": 16, "val": 5}  # the sample keeps the full copy's hash split: every breed in val
LONGER_SIDE = 256
JPEG_QUALITY = 90
LICENSE = """\
Images and trimaps from the Oxford-IIIT Pet Dataset (Parkhi et al., CVPR 2012), CC BY-SA 4.0.

O. M. Parkhi, A. Vedaldi, A. Zisserman, C. V. Jawahar, "Cats and Dogs", CVPR 2012.
https://www.robots.ox.ac.uk/~vgg/data/pets/

The publisher: "The dataset is available to download for commercial/research purposes under a Creative
Commons Attribution-ShareAlike 4.0 International License. The copyright remains with the original owners of
the images." Licence text: https://creativecommons.org/licenses/by-sa/4.0/

Changes made here: {count} photos of the breeds Abyssinian, Bengal (cats) and american_bulldog (dogs), chosen
by a hash of their names (scripts/make_pets_sample.py); each photo resized so that its longer side is at most
{side} px and re-encoded as JPEG (quality {quality}), each trimap resized with nearest-neighbour sampling
(values unchanged: 1 pet, 2 background, 3 border). This sample is shared under the same licence,
CC BY-SA 4.0, and so is anything made from it (figures, predictions).
"""


def pick(ids: list[str], count: int) -> list[str]:
    """Per breed (the id without its number), the ``count`` ids whose SHA-256 is lowest; sorted."""
    by_breed = defaultdict(list)
    for i in ids:
        by_breed[i.rsplit("_", 1)[0]].append(i)
    rank = lambda i: hashlib.sha256(i.encode()).hexdigest()  # noqa: E731
    return sorted(i for members in by_breed.values() for i in sorted(members, key=rank)[:count])


def shrunk_size(h: int, w: int, side: int = LONGER_SIDE) -> tuple[int, int]:
    """``(h, w)`` scaled so that the longer side is at most ``side`` (never enlarged)."""
    scale = min(1.0, side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def write_sample(source: Path, dest: Path) -> int:
    """Write the sample of the full copy in ``source`` into ``dest`` (atomically); the photo count."""
    spec = get_spec("pets")
    items = {item.id: item for item in spec.list_items(source, "all")}
    chosen = sorted(i for split, count in PER_BREED.items()
                    for i in pick([item.id for item in spec.list_items(source, split)], count))
    with atomic_path(dest, folder=True) as tmp:
        (tmp / "images").mkdir(parents=True)
        (tmp / "annotations" / "trimaps").mkdir(parents=True)
        for i in chosen:
            image, trimap = read_image(items[i].image), read_label(items[i].mask)
            h, w = shrunk_size(*image.shape[:2])
            Image.fromarray(image).resize((w, h), Image.Resampling.BOX).save(
                tmp / "images" / f"{i}.jpg", quality=JPEG_QUALITY)
            Image.fromarray(resize_mask(trimap, (h, w))).save(tmp / "annotations" / "trimaps" / f"{i}.png")
        (tmp / "LICENSE").write_text(LICENSE.format(count=len(chosen), side=LONGER_SIDE, quality=JPEG_QUALITY))
    return len(chosen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="the full copy (oxford_iiit_pet/), or a folder holding it")
    parser.add_argument("--out", default=str(shipped_sample("pets")), help="default: seglib/sample_data/pets")
    args = parser.parse_args(argv)
    source = find_folder("pets", args.root, sample=False)
    count = write_sample(source, Path(args.out))
    print(f"wrote {count} photos with their trimaps to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
