"""The clip store that ``recseg preprocess`` writes and the loader reads.

Layout of a store folder::

    store.json                   manifest, written last: settings, splits, clip records, totals
    plan.json                    which video / background goes to which split (resume keeps it)
    clips/<split>/<clip>.npz     one file per clip, written to a temp name and renamed

A clip file holds the composited frames as JPEG (quality ``JPEG_QUALITY``, one image per frame,
concatenated, with offsets) and the labels losslessly: one bit per pixel (``np.packbits``),
zlib-compressed. A 4 s clip at 15 fps and 270x512 is about 2 MB instead of 25 MB raw, and a
window of frames decodes with OpenCV in a few milliseconds. Only complete clip files exist under
their final name, and only a finished run writes ``store.json``: a reader never sees half a clip.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from recseg.errors import InputError

FORMAT = "recseg-clip-store"
VERSION = 1
JPEG_QUALITY = 95
SPLITS = ("train", "val", "test")
MANIFEST = "store.json"
# OpenCV >= 4.10 decodes straight to RGB: the same pixels as BGR + cvtColor, one pass less.
_DECODE = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR)


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


def encode_clip(frames: np.ndarray, labels: np.ndarray, meta: dict[str, Any]) -> bytes:
    """The bytes of a clip file: ``frames`` (N,H,W,3) RGB uint8, ``labels`` (N,H,W) 0/1."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (N,H,W,3) uint8, got {frames.shape} {frames.dtype}")
    if labels.shape != frames.shape[:3]:
        raise ValueError(f"labels {labels.shape} do not match frames {frames.shape[:3]}")
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    chunks = []
    for frame in frames:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise RuntimeError("OpenCV could not JPEG-encode a frame")
        chunks.append(buf.reshape(-1))
    offsets = np.cumsum([0] + [len(c) for c in chunks]).astype(np.int64)
    packed = np.packbits(labels.reshape(len(labels), -1).astype(bool), axis=1)
    out = io.BytesIO()
    np.savez(
        out,
        jpeg=np.concatenate(chunks) if chunks else np.zeros(0, np.uint8),
        offsets=offsets,
        labels=np.frombuffer(zlib.compress(packed.tobytes(), 1), np.uint8),
        shape=np.array(labels.shape, np.int64),
        meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
    )
    return out.getvalue()


def write_clip(
    path: str | Path, frames: np.ndarray, labels: np.ndarray, meta: dict[str, Any]
) -> None:
    """Write one clip file atomically (see ``encode_clip``)."""
    atomic_write_bytes(path, encode_clip(frames, labels, meta))


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of a clip file without decoding its frames or labels."""
    with np.load(path) as data:
        return json.loads(data["meta"].tobytes().decode())


class ClipFile:
    """A clip file loaded into memory; decodes any range of frames on demand."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with np.load(self.path) as data:
                self._jpeg = data["jpeg"]
                self._offsets = data["offsets"]
                self._packed = data["labels"]
                self.shape = tuple(int(x) for x in data["shape"])
                self.meta = json.loads(data["meta"].tobytes().decode())
        except (OSError, ValueError, KeyError) as exc:
            reason = str(exc).split(". ")[0] if "allow_pickle" in str(exc) else str(exc)
            raise InputError(
                f"{self.path}: damaged or not a recseg clip file ({reason}); re-run "
                "`recseg preprocess` to remake it"
            ) from None
        self._labels: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def labels(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Labels ``[start, stop)`` as (n,H,W) uint8 0/1."""
        if self._labels is None:
            n, h, w = self.shape
            packed = np.frombuffer(zlib.decompress(self._packed.tobytes()), np.uint8)
            bits = np.unpackbits(packed.reshape(n, -1), axis=1, count=h * w)
            self._labels = bits.reshape(n, h, w)
        return self._labels[start:stop]

    def frames(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``[start, stop)`` as (n,H,W,3) RGB uint8."""
        idx = range(len(self))[start:stop]
        _, h, w = self.shape
        out = np.empty((len(idx), h, w, 3), np.uint8)
        for k, i in enumerate(idx):
            buf = self._jpeg[self._offsets[i] : self._offsets[i + 1]]
            image = cv2.imdecode(buf, _DECODE)
            if image is None:
                raise InputError(f"{self.path}: frame {i} does not decode")
            if _DECODE == cv2.IMREAD_COLOR:
                cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=out[k])
            else:
                out[k] = image
        return out


def read_clip(path: str | Path, start: int = 0, stop: int | None = None):
    """``(frames (n,H,W,3) RGB uint8, labels (n,H,W) uint8)`` of frames ``[start, stop)``."""
    clip = ClipFile(path)
    return clip.frames(start, stop), clip.labels(start, stop)


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
        if self.manifest.get("format") != FORMAT or self.manifest.get("version") != VERSION:
            raise InputError(f"{manifest}: not a version-{VERSION} recseg clip store")
        self.splits: dict[str, list[ClipRecord]] = {
            split: [ClipRecord.from_dict(c) for c in self.manifest["splits"].get(split, [])]
            for split in SPLITS
        }

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


def write_manifest(
    root: str | Path, settings: dict[str, Any], records: list[ClipRecord], extra: dict | None = None
) -> dict[str, Any]:
    """Write ``store.json`` (atomically) for ``records``; returns the manifest."""
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
        **(extra or {}),
        "splits": splits,
    }
    atomic_write_json(Path(root) / MANIFEST, manifest)
    return manifest
