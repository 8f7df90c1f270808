"""Publishers' release layouts turned into the layout a spec reads (``prepare NAME --source DIR``).

>>> flatten_tiktok_videos("TikTok_dataset", "data/tiktok_person")  # <video>/{images,masks}/<frame>.png
"""

from __future__ import annotations

import shutil
from pathlib import Path

from seglib.data.base import Item
from seglib.data.specs import pair_files
from seglib.errors import DataError
from seglib.utils import atomic_path


def tiktok_video_folders(source: Path) -> list[Path]:
    """The per-video folders of the TikTok release in ``source``: those holding ``images/`` or ``masks/``."""
    return sorted(d for d in source.iterdir() if d.is_dir() and ((d / "images").is_dir() or (d / "masks").is_dir()))


def is_tiktok_video(folder: Path) -> bool:
    """Whether ``folder`` is one video of the release: frames named ``<frame>.png``, without the flat layout's
    ``<video>_`` prefix."""
    return any("_" not in p.name for p in (folder / "images").glob("*.png"))


def tiktok_video_frames(video: Path) -> list[Item]:
    """The frames of one video folder, each with its mask (same file name); a bad layout names the folder."""
    if "_" in video.name:
        raise DataError(video, "has '_' in its name, but the flat names are <video>_<frame> (split by video)",
                        "rename the folder without '_'")
    return pair_files(video / "images", video / "masks", "*.png", lambda p: p.name)


def flatten_tiktok_videos(source: str | Path, target: str | Path) -> Path:
    """Copy the TikTok release's per-video folders (``<video>/images/<frame>.png`` and
    ``<video>/masks/<frame>.png``) into ``target/{images,masks}/<video>_<frame>.png``, the names the ``tiktok``
    spec reads and splits by video.

    Every video is checked before anything is written; the copy is made in a hidden folder beside ``target`` and
    renamed at the end. An existing ``target`` is never replaced (``DataError``).
    """
    source, target = Path(source).expanduser(), Path(target).expanduser()
    if target.exists():
        raise DataError(target, "exists already, and prepare never replaces a dataset folder",
                        "use it as it is, or move it away (or pass another --root) to convert again")
    videos = tiktok_video_folders(source) if source.is_dir() else []
    if not videos:
        raise DataError(source, "holds neither images/ + masks/ nor the TikTok release's per-video folders "
                        "(<video>/images/*.png with <video>/masks/*.png)",
                        "pass the folder that holds the video folders (00001/, 00002/, ...)")
    frames = [(video.name, item) for video in videos for item in tiktok_video_frames(video)]
    with atomic_path(target, folder=True) as tmp:
        for sub in ("images", "masks"):
            (tmp / sub).mkdir(parents=True)
        for video, item in frames:
            shutil.copyfile(item.image, tmp / "images" / f"{video}_{item.image.name}")
            shutil.copyfile(item.mask, tmp / "masks" / f"{video}_{item.mask.name}")
    print(f"converted {len(frames)} frames of {len(videos)} videos into {target}")
    return target
