"""Clip files: the fixed composite and labels of one clip and, since store version 2, its
foreground layers (keyed colour + soft alpha); and frames-only files (stored background videos).

See ``recseg.data.store`` for the layout; this module encodes and decodes single files.
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from recseg.errors import InputError

JPEG_QUALITY = 95
ALPHA_ZLIB_LEVEL = 6
# OpenCV >= 4.10 decodes straight to RGB: the same pixels as BGR + cvtColor, one pass less.
_DECODE = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR)


def encode_jpegs(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``frames`` (N,H,W,3) RGB uint8 as concatenated JPEGs and their ``N + 1`` offsets."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (N,H,W,3) uint8, got {frames.shape} {frames.dtype}")
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    chunks = []
    for frame in frames:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise RuntimeError("OpenCV could not JPEG-encode a frame")
        chunks.append(buf.reshape(-1))
    offsets = np.cumsum([0] + [len(c) for c in chunks]).astype(np.int64)
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)), offsets


def _meta_bytes(meta: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(json.dumps(meta).encode(), np.uint8)


def encode_clip(
    frames: np.ndarray,
    labels: np.ndarray,
    meta: dict[str, Any],
    layers: tuple[np.ndarray, np.ndarray] | None = None,
) -> bytes:
    """The bytes of a clip file: ``frames`` (N,H,W,3) RGB uint8 (the fixed composite),
    ``labels`` (N,H,W) 0/1 and, optionally, ``layers = (fg (N,H,W,3) RGB uint8, alpha (N,H,W)
    uint8 0..255)``."""
    if labels.shape != frames.shape[:3]:
        raise ValueError(f"labels {labels.shape} do not match frames {frames.shape[:3]}")
    jpeg, offsets = encode_jpegs(frames)
    packed = np.packbits(labels.reshape(len(labels), -1).astype(bool), axis=1)
    arrays = {
        "jpeg": jpeg,
        "offsets": offsets,
        "labels": np.frombuffer(zlib.compress(packed.tobytes(), 1), np.uint8),
        "shape": np.array(labels.shape, np.int64),
        "meta": _meta_bytes(meta),
    }
    if layers is not None:
        fg, alpha = layers
        if fg.shape != frames.shape or alpha.shape != labels.shape or alpha.dtype != np.uint8:
            raise ValueError(f"layers {fg.shape} {alpha.shape} {alpha.dtype} do not match")
        arrays["fg_jpeg"], arrays["fg_offsets"] = encode_jpegs(fg)
        alpha_z = zlib.compress(np.ascontiguousarray(alpha).tobytes(), ALPHA_ZLIB_LEVEL)
        arrays["alpha"] = np.frombuffer(alpha_z, np.uint8)
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def encode_frames(frames: np.ndarray, meta: dict[str, Any]) -> bytes:
    """The bytes of a frames-only file (a background video): JPEG frames, shape, meta."""
    jpeg, offsets = encode_jpegs(frames)
    out = io.BytesIO()
    shape = np.array(frames.shape[:3], np.int64)
    np.savez(out, jpeg=jpeg, offsets=offsets, shape=shape, meta=_meta_bytes(meta))
    return out.getvalue()


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of a clip file without decoding its frames or labels."""
    with np.load(path) as data:
        return json.loads(data["meta"].tobytes().decode())


def _damaged(path: Path, reason: str) -> InputError:
    return InputError(
        f"{path}: damaged or not a recseg clip file ({reason}); re-run "
        "`recseg preprocess` to remake it"
    )


class JpegFrames:
    """Frames stored as concatenated JPEGs with offsets; decodes any range on demand."""

    def __init__(self, path: Path, jpeg: np.ndarray, offsets: np.ndarray, size: tuple[int, int]):
        self.path, self._jpeg, self._offsets, self.size = path, jpeg, offsets, size

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def decode(self, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` as (n,H,W,3) RGB uint8."""
        h, w = self.size
        out = np.empty((len(indices), h, w, 3), np.uint8)
        for k, i in enumerate(indices):
            buf = self._jpeg[self._offsets[i] : self._offsets[i + 1]]
            image = cv2.imdecode(buf, _DECODE)
            if image is None or image.shape[:2] != (h, w):
                raise InputError(f"{self.path}: frame {i} does not decode")
            if _DECODE == cv2.IMREAD_COLOR:
                cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=out[k])
            else:
                out[k] = image
        return out


def _load(path: Path, names: Sequence[str], optional: Sequence[str] = ()) -> dict[str, Any]:
    """The arrays ``names`` (and those of ``optional`` that are there) of an ``.npz`` file."""
    try:
        with np.load(path) as data:
            out = {name: data[name] for name in names}
            out.update({name: data[name] for name in optional if name in data.files})
            out["meta"] = json.loads(out["meta"].tobytes().decode())
            out["shape"] = tuple(int(x) for x in out["shape"])
            return out
    except (OSError, ValueError, KeyError, zlib.error) as exc:
        reason = str(exc).split(". ")[0] if "allow_pickle" in str(exc) else str(exc)
        raise _damaged(path, reason) from None


class ClipFile:
    """A clip file loaded into memory; decodes any range of frames (and layers) on demand."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        data = _load(
            self.path,
            ("jpeg", "offsets", "labels", "shape", "meta"),
            ("fg_jpeg", "fg_offsets", "alpha"),
        )
        self.shape: tuple[int, ...] = data["shape"]
        self.meta: dict[str, Any] = data["meta"]
        if len(self.shape) != 3 or len(data["offsets"]) != self.shape[0] + 1:
            raise _damaged(self.path, f"shape {self.shape} does not match its frames")
        size = (self.shape[1], self.shape[2])
        self._frames = JpegFrames(self.path, data["jpeg"], data["offsets"], size)
        self._packed = data["labels"]
        self._fg: JpegFrames | None = None
        self._alpha_z: np.ndarray | None = data.get("alpha")
        if "fg_jpeg" in data and "fg_offsets" in data and self._alpha_z is not None:
            self._fg = JpegFrames(self.path, data["fg_jpeg"], data["fg_offsets"], size)
        self._labels: np.ndarray | None = None
        self._alpha: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def has_layers(self) -> bool:
        """Whether the file holds the foreground colour and alpha (store version 2)."""
        return self._fg is not None

    def _inflate(self, data: np.ndarray, size: int, what: str) -> np.ndarray:
        try:
            raw = zlib.decompress(data.tobytes())
        except zlib.error as exc:
            raise _damaged(self.path, f"{what}: {exc}") from None
        if len(raw) != size:
            raise _damaged(self.path, f"{what}: {len(raw)} bytes, expected {size}")
        return np.frombuffer(raw, np.uint8)

    def labels(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Labels ``[start, stop)`` as (n,H,W) uint8 0/1."""
        if self._labels is None:
            n, h, w = self.shape
            row = (h * w + 7) // 8
            packed = self._inflate(self._packed, n * row, "labels")
            bits = np.unpackbits(packed.reshape(n, row), axis=1, count=h * w)
            self._labels = bits.reshape(n, h, w)
        return self._labels[start:stop]

    def frames(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``[start, stop)`` of the fixed composite as (n,H,W,3) RGB uint8."""
        return self._frames.decode(range(len(self))[start:stop])

    def layers(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(fg (n,H,W,3) RGB uint8, alpha (n,H,W) uint8 0..255)`` of frames ``[start, stop)``;
        ``InputError`` for a clip without layers (``has_layers`` False)."""
        if self._fg is None or self._alpha_z is None:
            raise InputError(f"{self.path}: has no foreground layers (made by an older recseg)")
        if self._alpha is None:
            n, h, w = self.shape
            self._alpha = self._inflate(self._alpha_z, n * h * w, "alpha").reshape(n, h, w)
        return self._fg.decode(range(len(self))[start:stop]), self._alpha[start:stop]


class FrameFile:
    """A frames-only file (a stored background video): JPEG frames decoded on demand."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        data = _load(self.path, ("jpeg", "offsets", "shape", "meta"))
        self.shape: tuple[int, ...] = data["shape"]
        self.meta: dict[str, Any] = data["meta"]
        if len(self.shape) != 3 or self.shape[0] < 1 or len(data["offsets"]) != self.shape[0] + 1:
            raise _damaged(self.path, f"shape {self.shape} does not match its frames")
        self._frames = JpegFrames(self.path, data["jpeg"], data["offsets"], self.shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` as (n,H,W,3) RGB uint8."""
        return self._frames.decode(indices)


def read_clip(path: str | Path, start: int = 0, stop: int | None = None):
    """``(frames (n,H,W,3) RGB uint8, labels (n,H,W) uint8)`` of frames ``[start, stop)``."""
    clip = ClipFile(path)
    return clip.frames(start, stop), clip.labels(start, stop)
