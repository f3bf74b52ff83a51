"""Atomic file writing: H.264 mp4 (PyAV, libx264 yuv420p), reproducible npz, JSON, images.

Every file is written under a temporary name in its own folder and moved into place with
``os.replace``, so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import cv2
import numpy as np

CODEC = "libx264"
ODD_CODEC = "libvpx-vp9"  # frame sizes with an odd side (see Mp4Writer)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, obj: object) -> None:
    """Write ``obj`` as indented JSON atomically."""
    write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def write_image(path: Path, image: np.ndarray) -> None:
    """Encode a BGR image by the path's suffix (JPEG quality 92) and write it atomically."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, data = cv2.imencode(path.suffix, image, params)
    if not ok:
        raise OSError(f"could not encode {path.name}")
    write_bytes(path, data.tobytes())


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Like ``np.savez_compressed`` but byte-reproducible (fixed zip timestamps), atomic."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
    write_bytes(path, buffer.getvalue())


def rate(fps: float) -> Fraction:
    """``fps`` as an exact fraction (30 -> 30/1, 29.97 -> 2997/100)."""
    return Fraction(fps).limit_denominator(1001)


# BGR (0-255) -> Y', Cb', Cr' of ITU-R BT.601 in limited range, before the +16/+128 offsets.
_BT601 = (
    np.array(
        [[24.966, 128.553, 65.481], [112.0, -74.203, -37.797], [-18.214, -93.786, 112.0]],
        np.float32,
    )
    / 255.0
)


def to_i420(frame: np.ndarray) -> np.ndarray:
    """A BGR uint8 frame (even sides) as planar yuv420p (I420), ``(h * 3 // 2, w)``: the Y, U
    and V planes one after the other. BT.601 limited range, chroma averaged over 2x2 pixels, like
    libswscale (whose threaded conversion is avoided so that the output is the same from run to
    run)."""
    h, w = frame.shape[:2]
    ycc = cv2.transform(frame.astype(np.float32), _BT601)
    chroma = cv2.resize(ycc[..., 1:], (w // 2, h // 2), interpolation=cv2.INTER_AREA) + 128.0
    out = np.empty(h * w * 3 // 2, np.uint8)
    out[: h * w] = np.clip(np.rint(ycc[..., 0] + 16.0), 0, 255).reshape(-1)
    out[h * w :] = np.clip(np.rint(chroma), 0, 255).transpose(2, 0, 1).reshape(-1)
    return out.reshape(h * 3 // 2, w)


def odd_yuv420p(frame: np.ndarray) -> av.VideoFrame:
    """A BGR uint8 frame with an odd side as a yuv420p ``VideoFrame``, converted like
    ``to_i420`` (the odd side is padded by repeating the edge; its chroma covers one pixel)."""
    h, w = frame.shape[:2]
    padded = cv2.copyMakeBorder(frame, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
    ph, pw = padded.shape[:2]
    flat = to_i420(padded).reshape(-1)
    quarter = (ph // 2) * (pw // 2)
    planes = (
        flat[: ph * pw].reshape(ph, pw)[:h, :w],
        flat[ph * pw : ph * pw + quarter].reshape(ph // 2, pw // 2),
        flat[ph * pw + quarter :].reshape(ph // 2, pw // 2),
    )
    video_frame = av.VideoFrame(w, h, "yuv420p")
    for plane, data in zip(video_frame.planes, planes, strict=True):
        rows = np.zeros((data.shape[0], plane.line_size), np.uint8)
        rows[:, : data.shape[1]] = data
        plane.update(rows.tobytes())
    return video_frame


class Mp4Writer:
    """Writes BGR uint8 frames (RGB with ``rgb=True``) to an H.264 mp4 (yuv420p) under a
    temporary name; ``close`` moves it into place, an exception inside ``with`` discards it.

    H.264 4:2:0 cannot code an odd width or height (its frame cropping works in 2-pixel steps),
    so a frame size with an odd side is written as VP9 profile 0 (yuv420p, chroma rounded up) in
    the same mp4 container, at exactly that size; browsers play both.
    """

    def __init__(
        self, path: Path, fps: float, shape: tuple[int, int], crf: int = 21, *, rgb: bool = False
    ) -> None:
        self.path = path
        self.rgb = rgb
        self.odd = bool(shape[0] % 2 or shape[1] % 2)
        self.tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
        # the file is ours to close: PyAV leaves its own open when a write fails (disk full)
        self.file = open(self.tmp, "wb")  # noqa: SIM115 - closed in close() / __exit__
        self.container = av.open(self.file, mode="w", format="mp4")
        self.stream = self.container.add_stream(ODD_CODEC if self.odd else CODEC, rate=rate(fps))
        self.stream.height, self.stream.width = shape
        self.stream.pix_fmt = "yuv420p"
        # Byte-identical output from run to run needs fixed settings (threads included) and
        # no macroblock-tree rate control: its float maths gave different bits depending on
        # what other threads (OpenCV's) had done to the floating-point state in between.
        if not self.odd:
            self.stream.options = {
                "crf": str(crf),
                "preset": "veryfast",
                "threads": "1",
                "x264-params": "mbtree=0",
            }
        else:  # VP9's constant-quality scale is 0-63: about crf + 10 for similar quality
            self.stream.options = {
                "crf": str(min(63, crf + 10)),
                "b": "0",
                "deadline": "good",
                "cpu-used": "5",
                "threads": "1",
                "row-mt": "0",
            }
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        """Encode one BGR (``rgb=True``: RGB) uint8 frame."""
        if self.rgb:
            frame = np.ascontiguousarray(frame[..., ::-1])
        if self.odd:
            video_frame = odd_yuv420p(frame)
        else:
            video_frame = av.VideoFrame.from_ndarray(to_i420(frame), format="yuv420p")
        video_frame.pts = self.frames
        self.container.mux(self.stream.encode(video_frame))
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder, check the frame count and move the file into place."""
        self.container.mux(self.stream.encode(None))
        self.container.close()
        self.file.close()
        found = count_frames(self.tmp)
        if found != self.frames:
            raise OSError(f"{self.path.name}: wrote {self.frames} frames but the mp4 has {found}")
        os.replace(self.tmp, self.path)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self, kind: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if kind is None:
                self.close()
            else:
                with contextlib.suppress(Exception):  # the first error is the one to report
                    self.container.close()
        finally:
            with contextlib.suppress(OSError):
                self.file.close()
            self.tmp.unlink(missing_ok=True)


def count_frames(path: Path) -> int:
    """Frames in a video file, counted from its packets (no decoding)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size)
