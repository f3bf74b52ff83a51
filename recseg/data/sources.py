"""Finding the input videos and backgrounds, checking them, and splitting them.

Splits are by source video, never by clip, so no scene appears in two splits. A folder with
``train/``, ``val/`` and ``test/`` subfolders keeps the user's split (without ``val/``, one in
seven training videos becomes validation); a flat folder is split 70/15/15 with at least one
video in each split. Backgrounds are split too: train and val/test never share an image.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from recseg.data.backdrop import check_background, list_backgrounds
from recseg.data.chroma import Key, estimate_key
from recseg.data.store import SPLITS
from recseg.data.video import VIDEO_SUFFIXES, VideoError, VideoInfo, decode, probe
from recseg.errors import InputError

FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}


@dataclasses.dataclass
class Source:
    """One input video: where it is, the split it was given, what it holds."""

    path: Path
    name: str  # unique id: file stem, prefixed by its subfolder when split by folder
    folder_split: str | None
    info: VideoInfo | None = None
    key: Key | None = None


def discover_videos(folder: str | Path) -> list[Source]:
    """The video files of ``folder`` (flat, or in train/val/test subfolders)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--videos {folder}: not a folder")
    subs = [s for s in SPLITS if (folder / s).is_dir()]
    found: list[Source] = []
    for split in subs or [None]:
        base = folder / split if split else folder
        for path in sorted(base.iterdir()):
            if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
                name = f"{split}-{path.stem}" if split else path.stem
                found.append(Source(path, name, split))
    if not found:
        where = f"{folder} (or its {'/'.join(subs)} subfolders)" if subs else str(folder)
        raise InputError(f"--videos {where}: no video files ({', '.join(VIDEO_SUFFIXES)})")
    return found


def check_video(source: Source, clip_seconds: float, probe_frames: int = 3) -> None:
    """Fill ``source.info`` and ``source.key``; ``VideoError`` says why a video is unusable."""
    info = probe(source.path)
    if info.duration and info.duration + 0.5 / info.fps < clip_seconds:
        raise VideoError(
            f"{source.path.name}: shorter than one clip ({info.duration:.2f} s < "
            f"--clip-seconds {clip_seconds:g})"
        )
    frames = []
    for _, frame in decode(source.path):
        frames.append(frame)
        if len(frames) >= probe_frames:
            break
    if not frames:
        raise VideoError(f"{source.path.name}: no frame decodes")
    key = estimate_key(frames)
    if key is None:
        raise VideoError(f"{source.path.name}: no green screen found in its first frames")
    source.info, source.key = info, key


def split_videos(
    sources: list[Source], seed: int, previous: dict[str, str] | None = None
) -> dict[str, str]:
    """``{video name: split}``; earlier assignments (``previous``) are kept on a re-run."""
    previous = previous or {}
    assigned: dict[str, str] = {}
    for s in sources:
        if s.name in previous or s.folder_split:
            assigned[s.name] = previous.get(s.name) or str(s.folder_split)
    if assigned and not previous and "val" not in assigned.values():
        train = sorted(n for n, sp in assigned.items() if sp == "train")
        random.Random(seed).shuffle(train)
        for name in train[: max(1, len(train) // 7)] if len(train) >= 2 else []:
            assigned[name] = "val"
    rest = sorted(s.name for s in sources if s.name not in assigned)
    random.Random(seed).shuffle(rest)
    if not assigned:
        if len(rest) < 3:
            raise InputError(
                "--videos: need at least 3 usable videos to split train/val/test by video, "
                f"found {len(rest)}"
            )
        n_val = max(1, round(FRACTIONS["val"] * len(rest)))
        n_test = max(1, round(FRACTIONS["test"] * len(rest)))
        for i, name in enumerate(rest):
            assigned[name] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
        return assigned
    for name in rest:  # newcomers go to the split furthest below its share
        counts = {sp: sum(v == sp for v in assigned.values()) for sp in SPLITS}
        total = sum(counts.values()) + 1
        assigned[name] = min(SPLITS, key=lambda sp: counts[sp] / total - FRACTIONS[sp])
    return assigned


def test_only(videos: str | Path) -> bool:
    """Whether ``videos`` holds a ``test/`` subfolder and no ``train/`` or ``val/``: a store of
    held-out footage to score models on."""
    return [s for s in SPLITS if (Path(videos) / s).is_dir()] == ["test"]


def split_backgrounds(
    folder: str | Path, seed: int, all_test: bool = False
) -> dict[str, list[str]]:
    """Background file names (images and videos, relative to ``folder``) per split; train never
    shares with val/test (``all_test``: every one is a test background). Every image is decoded
    once here (and every video's first frame), so a broken one stops the run before any clip
    is written."""
    folder = Path(folder)
    files = list_backgrounds(folder)
    for path in files:
        check_background(path)
    if all_test and files:
        return {"train": [], "val": [], "test": sorted(str(p.relative_to(folder)) for p in files)}
    if len(files) < 2:
        raise InputError(
            f"--backgrounds {folder}: need at least 2 images or videos so that train and "
            f"val/test backgrounds differ, found {len(files)}"
        )
    names = [str(p.relative_to(folder)) for p in files]
    random.Random(seed).shuffle(names)
    n_train = max(1, min(len(names) - 1, round(0.7 * len(names))))
    held_out = names[n_train:]
    if len(held_out) >= 2:
        half = len(held_out) // 2
        val, test = held_out[:half], held_out[half:]
    else:
        val = test = held_out
    return {"train": sorted(names[:n_train]), "val": sorted(val), "test": sorted(test)}
