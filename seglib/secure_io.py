"""Downloads that leave no half file, and archive extraction that cannot escape its folder.

>>> archive = fetch("https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip", "data/downloads",
...                 md5="5aaa3dee905cef73325923716e38fc6d")
>>> safe_extract(archive, "data")

Nothing here knows about datasets: :mod:`seglib.download` says where each one comes from.
"""

from __future__ import annotations

import filecmp
import hashlib
import http.client
import lzma
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
from pathlib import Path, PurePosixPath

from seglib.errors import ConfigError, DataError, DownloadError
from seglib.utils import atomic_path, ensure_free_space

__all__ = ["fetch", "file_digest", "is_url", "merge_tree", "move_entries", "safe_extract", "source_filename",
           "tree_clashes", "verify_checksum"]

TIMEOUT = 60.0          # seconds without a byte before a network request gives up
CHUNK = 1 << 20         # bytes per read, for downloads and hashing
_URL_SCHEMES = ("http", "https", "file")
_USER_AGENT = "seglib (python urllib; semantic segmentation workbook)"


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


def verify_checksum(path: str | Path, sha256: str | None = None, md5: str | None = None, *,
                    fix: str | None = None) -> bool:
    """Check ``path`` against the given digests; raise DownloadError naming both on a mismatch (with ``fix``, or
    the advice to download it again).

    Returns True when at least one digest was checked, False when none was given.
    """
    path = Path(path)
    bad = _mismatches(path, sha256, md5)
    if bad:
        raise DownloadError(path, f"checksum mismatch ({'; '.join(bad)}): the file is incomplete, corrupt or not "
                            "the expected one", fix or f"delete {path} and download it again, or pass the right file")
    return bool(sha256 or md5)


# ----------------------------------------------------------------------------------------------
# fetch


def is_url(source: str | Path) -> bool:
    """True for an http, https or file URL (a ``str``); False for a local path."""
    return isinstance(source, str) and urllib.parse.urlsplit(source).scheme.lower() in _URL_SCHEMES


def source_filename(source: str | Path) -> str:
    """The file name a URL or a local path ends with."""
    if is_url(source):
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(str(source)).path)).name
    return Path(source).name


def _open_source(source: str | Path, timeout: float):
    """A binary stream of ``source`` and its size in bytes (None when the server does not say)."""
    if not is_url(source):
        path = Path(source).expanduser()
        if not path.is_file():
            raise DataError(path, "file not found",
                            "pass an existing archive, or a URL (http, https or file://)")
        return open(path, "rb"), path.stat().st_size
    request = urllib.request.Request(str(source), headers={"User-Agent": _USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (schemes checked)
    except urllib.error.HTTPError as exc:
        raise DownloadError(source, f"HTTP {exc.code} {exc.reason}",
                            "check the URL, or download the file by hand and pass the local file with "
                            "prepare --source FILE") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(source, f"cannot connect ({reason})",
                            "check your connection and try again, or download the file by hand and pass "
                            "the local file with prepare --source FILE") from exc
    length = response.headers.get("Content-Length")
    return response, int(length) if length and length.isdigit() else None


def _save_stream(stream, dest: Path, total: int | None, desc: str) -> int:
    """Copy ``stream`` into the new file ``dest`` with a progress bar; the number of bytes received."""
    from tqdm.auto import tqdm

    received = 0
    with open(dest, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                                       disable=None) as bar:  # no bar off a terminal
        while chunk := stream.read(CHUNK):
            out.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    return received


def _reusable(final: Path, source: str | Path, sha256: str | None, md5: str | None) -> bool:
    """Whether the file already at ``final`` is kept instead of fetching ``source``."""
    if not is_url(source) and final.exists() and Path(source).expanduser().exists() \
            and final.resolve() == Path(source).expanduser().resolve():
        verify_checksum(final, sha256, md5)  # the local source already is the final file
        return True
    if not final.is_file():
        return False
    if sha256 or md5:
        return not _mismatches(final, sha256, md5)  # a stale or damaged copy is fetched again
    return is_url(source)


def fetch(source: str | Path, dest_dir: str | Path, *, sha256: str | None = None,
          md5: str | None = None, filename: str | None = None,
          timeout: float = TIMEOUT) -> Path:
    """Download ``source`` (http/https/file URL, or copy a local file) into ``dest_dir``.

    The data goes to a hidden temporary file first (:func:`seglib.utils.atomic_path`), is checked
    against ``sha256``/``md5`` when given and only then renamed into place, so a failed or interrupted
    download leaves nothing at the final path (and never replaces a file already there). A final file
    that already verifies is reused without downloading. Without a checksum, a file already there is
    reused as it is when ``source`` is a URL; from a local file it is copied again (a cheap copy, and
    the local file may have changed since), unless ``source`` is that very file.
    """
    dest_dir = Path(dest_dir).expanduser()
    name = filename or source_filename(source)
    if not name or name in (".", "..") or PurePosixPath(name.replace("\\", "/")).name != name:
        raise ConfigError(f"cannot tell a file name from {source!r} (got {name!r}); pass filename=... (a name, not a "
                          "path: the file goes into dest_dir)")
    final = dest_dir / name
    if _reusable(final, source, sha256, md5):
        return final

    stream, total = _open_source(source, timeout)  # before any folder exists: a refusal leaves nothing
    created = not dest_dir.exists()
    try:
        with stream, atomic_path(final, fsync=True) as part:
            received = _save_stream(stream, part, total, name)
            if total is not None and received != total:
                raise DownloadError(source, f"download cut off after {received} of {total} bytes; nothing was kept "
                                    f"at {final}", "try again (check your connection), or download the file by "
                                    "hand and pass the local file with prepare --source FILE")
            bad = _mismatches(part, sha256, md5)
            if bad:
                raise DownloadError(final, f"checksum mismatch for the file from {source} ({'; '.join(bad)}); it "
                                    "was not kept", f"download it again (delete {final} if it exists and is not "
                                    "the right file), or pass the right file with prepare --source FILE")
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(source, f"download failed ({type(exc).__name__}: {exc}); nothing was kept at {final}",
                            "try again (check your connection and the free disk space), or download the file "
                            "by hand and pass the local file with prepare --source FILE") from exc
    finally:
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
    """Why a zip member is unsafe to write, or None."""
    if why := _unsafe_name(info.filename):
        return why
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if mode and stat.S_ISLNK(mode):
        return "a symbolic link"
    if kind and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "a device, fifo or socket"
    return None


def _tar_problem(member: tarfile.TarInfo) -> str | None:
    """Why a tar member is unsafe to write, or None."""
    if why := _unsafe_name(member.name):
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
        raise DownloadError(name, f"would be written outside {root}")
    return dest


def tree_clashes(src: Path, dest: Path) -> list[Path]:
    """The paths under ``dest`` that merging the tree ``src`` into it would replace with other content (a file
    already there with the same bytes is no clash; folders both hold are compared inside). :func:`move_entries`
    instead refuses any existing folder."""
    if src.is_dir() and dest.is_dir():
        return [c for entry in sorted(src.iterdir()) for c in tree_clashes(entry, dest / entry.name)]
    if not (dest.exists() or dest.is_symlink()):
        return []
    same = src.is_file() and dest.is_file() and filecmp.cmp(src, dest, shallow=False)
    return [] if same else [dest]


def merge_tree(src: Path, dest: Path) -> None:
    """Move the tree ``src`` to ``dest``, descending into folders both hold; entries already at ``dest`` stay
    (check :func:`tree_clashes` first)."""
    if src.is_dir() and dest.is_dir():
        for entry in sorted(src.iterdir()):
            merge_tree(entry, dest / entry.name)
    elif not (dest.exists() or dest.is_symlink()):
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)


def move_entries(src_dir: Path, dest_dir: Path) -> None:
    """Move every entry of ``src_dir`` into ``dest_dir``; all conflicts are checked first.

    An identical file already at the destination is kept; any other existing entry is an error.
    """
    moves = []
    for entry in sorted(src_dir.iterdir()):
        dest = dest_dir / entry.name
        if dest.exists() or dest.is_symlink():
            if entry.is_file() and dest.is_file() and filecmp.cmp(entry, dest, shallow=False):
                continue
            raise DownloadError(dest, "already exists and differs from the archive's copy; nothing was changed",
                                "remove or rename it, or extract somewhere else")
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
    """``zip`` or ``tar``. ``is_zipfile`` looks for a zip's directory at the end of the file, which is where a
    tar whose last member is a zip has it: a file that does not start as a zip is tried as a tar first."""
    with archive.open("rb") as f:
        starts_as_zip = f.read(2) == b"PK"
    if starts_as_zip and zipfile.is_zipfile(archive):
        return "zip"
    if tarfile.is_tarfile(archive):
        return "tar"
    if zipfile.is_zipfile(archive):  # a zip behind a prefix: a self-extracting archive
        return "zip"
    raise DownloadError(archive, "not a zip or tar archive (or a damaged one)",
                        "download it again (a download cut short is the usual cause), or pass another copy")


def _layout_clash(members: list[tuple[str, bool]]) -> str | None:
    """A path the archive holds twice as a file, or as a file and as a folder (one member would silently
    replace the other on extraction), or None."""
    files, folders = set(), set()
    for name, is_dir in members:
        path = PurePosixPath(name.replace("\\", "/"))
        if not is_dir and path in files:
            return f"it holds {str(path)!r} twice"
        (folders if is_dir else files).add(path)
        folders.update(path.parents)
    both = sorted(files & folders)
    return f"it holds {str(both[0])!r} as a file and as a folder" if both else None


def _mac_metadata(name: str) -> bool:
    """A ``__MACOSX/`` member (the resource forks macOS adds to a zip it makes): never part of a dataset."""
    return PurePosixPath(name.replace("\\", "/")).parts[:1] == ("__MACOSX",)


def safe_extract(archive: str | Path, target_dir: str | Path) -> Path:
    """Extract a zip or tar (.tar, .tar.gz/.tgz, .tar.bz2, .tar.xz) into ``target_dir``.

    Every member is checked before anything is written: an absolute path, a ``..`` component, a
    drive letter, a symbolic or hard link, or a device/fifo member refuses the whole archive, and so does
    a total size over the free disk space; ``__MACOSX/`` members are left out. The members go to a
    temporary folder inside ``target_dir`` whose top-level entries are then moved into place, so a
    failure leaves nothing half-extracted. Returns ``target_dir``.
    """
    archive, target_dir = Path(archive), Path(target_dir).expanduser()
    if not archive.is_file():
        raise DataError(archive, "archive not found", "pass an existing archive file")
    kind = _archive_kind(archive)
    try:
        with (zipfile.ZipFile(archive) if kind == "zip" else tarfile.open(archive, "r:*")) as af:
            if kind == "zip":
                members = [(i.filename, i.is_dir(), _zip_problem(i), i.file_size, lambda i=i: af.open(i))
                           for i in af.infolist()]
            else:
                members = [(m.name, m.isdir(), _tar_problem(m), m.size, lambda m=m: af.extractfile(m))
                           for m in af.getmembers()]
            members = [m for m in members if not _mac_metadata(m[0])]
            for name, _, why, _, _ in members:
                if why:
                    raise DownloadError(archive, f"refusing to extract member {name!r}: {why}",
                                        "use the official archive; nothing was extracted")
            clash = _layout_clash([(name, is_dir) for name, is_dir, _, _, _ in members])
            if clash:
                raise DownloadError(archive, f"{clash}: which one is meant is unclear; nothing was extracted",
                                    "use the official archive, or re-pack the folder")
            # the declared sizes, which zipfile and tarfile hold members to: a zip bomb or a small disk fails here
            ensure_free_space(target_dir, sum(size for _, is_dir, _, size, _ in members if not is_dir))
            target_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=target_dir, prefix=".extract-")).resolve()
            try:
                # Members are written one by one as plain files and folders (never links, never
                # modes or owners from the archive), so this holds on every Python without
                # relying on tarfile's extraction filters.
                for name, is_dir, _, _, open_member in members:
                    dest = _inside(tmp, name)
                    if is_dir:
                        dest.mkdir(parents=True, exist_ok=True)
                    else:
                        _copy_stream(open_member(), dest)
                move_entries(tmp, target_dir)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (RuntimeError, NotImplementedError) as exc:  # zipfile: an encrypted member, an unknown compression
        raise DownloadError(archive, f"cannot be read ({exc}); nothing was extracted",
                            "pass the official archive, or re-pack the folder as a plain zip or tar (no password, "
                            "deflate compression)") from exc
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise DownloadError(archive, f"damaged archive ({type(exc).__name__}: {exc}); nothing was extracted",
                            "download it again (a download cut short is the usual cause), or pass another "
                            "copy") from exc
    except OSError as exc:  # bz2/lzma data errors, a full disk, permissions
        raise DownloadError(archive, f"cannot extract ({type(exc).__name__}: {exc}); nothing was extracted",
                            "check the free disk space and permissions, or delete the archive and download "
                            "it again") from exc
    return target_dir
