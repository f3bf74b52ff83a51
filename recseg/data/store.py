"""The clip store that ``recseg preprocess`` writes and the loader reads.

Layout of a store folder::

    store.json                   manifest, written last: settings, splits, clip records, totals
    plan.json                    which video / background goes to which split (resume keeps it)
    clips/<split>/<clip>.npz     one file per clip, written to a temp name and renamed
    backgrounds/<name>.jpg|.npz  the train backgrounds (images; videos as JPEG frames), fitted

A clip file holds the fixed composite as JPEG (quality ``JPEG_QUALITY``, one image per frame,
concatenated, with offsets) and the labels losslessly: one bit per pixel (``np.packbits``),
zlib-compressed. Version 2 adds the layers the training loader composites on the fly: the keyed,
despilled foreground colour (JPEG, ``fg_jpeg`` + ``fg_offsets``) and the soft alpha (uint8
0..255, zlib). A 4 s clip at 15 fps and 270x512 is a few MB instead of 25 MB raw per layer, and
a window of frames decodes with OpenCV in a few milliseconds. Only complete files exist under
their final name, and only a finished run writes ``store.json``: a reader never sees half a clip.
Version-1 stores (no layers, no backgrounds) are still read.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recseg.data.clipfile import (
    JPEG_QUALITY,
    ClipFile,
    FrameFile,
    encode_clip,
    encode_frames,
    read_clip,
    read_meta,
)
from recseg.errors import InputError

__all__ = [
    "FORMAT", "JPEG_QUALITY", "MANIFEST", "READS", "SPLITS", "VERSION", "ClipFile", "ClipRecord",
    "ClipStore", "FrameFile", "atomic_write_bytes", "atomic_write_json", "encode_clip",
    "encode_frames", "read_clip", "read_meta", "write_clip", "write_manifest",
]  # fmt: skip

FORMAT = "recseg-clip-store"
VERSION = 2  # 2: foreground layers in clip files, train backgrounds in the store
READS = (1, 2)  # store versions this recseg reads
SPLITS = ("train", "val", "test")
MANIFEST = "store.json"


@dataclasses.dataclass(frozen=True)
class ClipRecord:
    """One clip of a store: where it lies and what it holds."""

    id: str
    split: str
    video: str
    index: int
    frames: int
    height: int
    width: int
    fps: float
    background: str
    fg_ratio: float
    path: str  # relative to the store root
    key_iou: float | None = None
    layers: bool = False  # the clip file holds foreground colour + alpha (store version 2)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _umask() -> int:
    """This process's umask, read without changing it (Linux), else the usual 022."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def atomic_write_bytes(
    path: str | Path, data: bytes, before_replace: Callable[[], None] | None = None
) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it and rename it over ``path``
    (``before_replace()`` runs just before the rename). The file gets the permissions a plain
    ``open`` would give it (``mkstemp`` alone makes it private to its owner)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=False) + "\n").encode())


def write_clip(
    path: str | Path,
    frames: np.ndarray,
    labels: np.ndarray,
    meta: dict[str, Any],
    layers: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Write one clip file atomically (see ``encode_clip``)."""
    atomic_write_bytes(path, encode_clip(frames, labels, meta, layers))


class ClipStore:
    """A finished store (``store.json`` present): its settings and clip records per split."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest = self.root / MANIFEST
        if not self.root.is_dir():
            raise InputError(f"{self.root}: no such store folder (make one with recseg preprocess)")
        if not manifest.is_file():
            raise InputError(
                f"{self.root}: not a finished clip store ({MANIFEST} missing; "
                "run or re-run recseg preprocess --out on it)"
            )
        try:
            self.manifest = json.loads(manifest.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{manifest}: unreadable ({exc})") from None
        _check_version(manifest, self.manifest)
        self.splits: dict[str, list[ClipRecord]] = {
            split: [ClipRecord.from_dict(c) for c in self.manifest["splits"].get(split, [])]
            for split in SPLITS
        }

    @property
    def version(self) -> int:
        """The store format version (1 or 2)."""
        return int(self.manifest["version"])

    def backgrounds(self, kind: str) -> list[Path]:
        """The store's train backgrounds of ``kind`` (``images`` or ``videos``), absolute paths
        (none in a version-1 store)."""
        listed = self.manifest.get("backgrounds", {}).get(kind, [])
        return [self.root / rel for rel in listed]

    @property
    def settings(self) -> dict[str, Any]:
        """The preprocess settings the store was made with."""
        return self.manifest["settings"]

    @property
    def size(self) -> tuple[int, int]:
        """Frame size ``(H, W)``."""
        h, w = self.settings["size"]
        return int(h), int(w)

    def clips(self, split: str) -> list[ClipRecord]:
        """The clips of ``split`` in store order."""
        if split not in self.splits:
            raise InputError(f"unknown split {split!r}; one of {', '.join(SPLITS)}")
        return self.splits[split]

    def path(self, record: ClipRecord) -> Path:
        """Absolute path of a clip's file."""
        return self.root / record.path

    def open(self, record: ClipRecord) -> ClipFile:
        """Load one clip."""
        return ClipFile(self.path(record))


def _check_version(path: Path, manifest: Any) -> None:
    """``InputError`` unless ``manifest`` is a clip store this recseg reads."""
    version = manifest.get("version") if isinstance(manifest, dict) else None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"{path}: not a recseg clip store")
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        raise InputError(
            f"{path}: made by a newer recseg (store version {version}); this recseg reads "
            f"versions {READS[0]}-{READS[-1]}"
        )
    if version not in READS:
        raise InputError(
            f"{path}: unknown store version {version!r}; this recseg reads versions "
            f"{READS[0]}-{READS[-1]}"
        )


def write_manifest(
    root: str | Path,
    settings: dict[str, Any],
    records: list[ClipRecord],
    extra: dict | None = None,
    backgrounds: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Write ``store.json`` (atomically) for ``records`` and the stored train ``backgrounds``
    (``{"images": [...], "videos": [...]}``, paths relative to the root); returns it."""
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for rec in records:
        splits[rec.split].append(rec.to_dict())
    totals = {
        s: {
            "clips": len(splits[s]),
            "frames": sum(c["frames"] for c in splits[s]),
            "videos": len({c["video"] for c in splits[s]}),
        }
        for s in SPLITS
    }
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "jpeg_quality": JPEG_QUALITY,
        "settings": settings,
        "totals": totals,
        "backgrounds": {k: list((backgrounds or {}).get(k, [])) for k in ("images", "videos")},
        **(extra or {}),
        "splits": splits,
    }
    atomic_write_json(Path(root) / MANIFEST, manifest)
    return manifest
