"""Reading videos with PyAV: probing, decoding resampled to a target frame rate.

Resampling picks, for each output time ``k / fps``, the source frame shown at that moment (the
last frame whose presentation time is not after it, within half a source frame). So a 30 fps
video read at 15 fps keeps every second frame and a 4 s clip is 4 s of real time whatever the
source rate; the seed instead relabelled ~25-30 fps footage as 29 fps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np

from recseg.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video's first video stream."""

    path: Path
    fps: float
    duration: float  # seconds
    width: int
    height: int
    codec: str


class VideoError(InputError):
    """A video that cannot be used (not a video, truncated, too short, no green screen)."""


def probe(path: str | Path) -> VideoInfo:
    """Open ``path`` and describe its video stream; ``VideoError`` when it is not a video."""
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path.name}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                duration = (stream.frames or 0) / fps if fps else 0.0
            ctx = stream.codec_context
            info = VideoInfo(path, fps, duration, ctx.width, ctx.height, ctx.name)
    except VideoError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"{path.name}: not a readable video ({_reason(exc)})") from None
    if info.fps <= 0 or info.width <= 0 or info.height <= 0:
        raise VideoError(f"{path.name}: not a readable video (no frame rate or frame size)")
    return info


def _reason(exc: BaseException) -> str:
    text = " ".join(str(getattr(exc, "strerror", None) or exc).split())
    return text[:120] or type(exc).__name__


def decode(path: str | Path) -> Iterator[tuple[float, np.ndarray]]:
    """Every frame of the first video stream as ``(time_s, RGB uint8 array)``.

    A stream that stops decoding part-way raises ``VideoError`` naming the time it stopped at.
    """
    path = Path(path)
    last = 0.0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else index / float(stream.rate)
                last = t
                yield t, frame.to_ndarray(format="rgb24")
    except (av.FFmpegError, OSError) as exc:
        raise VideoError(
            f"{path.name}: truncated or corrupt at {last:.2f} s ({_reason(exc)})"
        ) from None


def resampled(
    frames: Iterator[tuple[float, np.ndarray]], fps: float, source_fps: float
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Resample ``(time, frame)`` pairs to ``fps``: yields ``(out_index, src_index, frame)``.

    Output frame k is the source frame nearest in time to ``k / fps`` (the last one is shown
    for one source frame period), so up- and down-sampling both keep real time.
    """
    k = 0
    prev: tuple[int, float, np.ndarray] | None = None
    t0: float | None = None
    for src_index, (t, frame) in enumerate(frames):
        t0 = t if t0 is None else t0
        t -= t0
        if prev is not None:
            middle = (prev[1] + t) / 2
            while k / fps < middle - 1e-9:
                yield k, prev[0], prev[2]
                k += 1
        prev = (src_index, t, frame)
    if prev is not None:
        end = prev[1] + 0.5 / source_fps
        while k / fps < end - 1e-9:
            yield k, prev[0], prev[2]
            k += 1


def fit_size(frame: np.ndarray, size: tuple[int, int], interpolation: int = cv2.INTER_AREA):
    """Centre-crop ``frame`` to the aspect of ``size`` (H, W), then resize to it."""
    h, w = frame.shape[:2]
    th, tw = size
    y0, y1, x0, x1 = crop_box((h, w), size)
    cropped = frame[y0:y1, x0:x1]
    if cropped.shape[:2] == (th, tw):
        return np.ascontiguousarray(cropped)
    return cv2.resize(cropped, (tw, th), interpolation=interpolation)


def crop_box(shape: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of the centred crop of ``shape`` with the aspect ratio of ``size``."""
    h, w = shape
    th, tw = size
    if w * th > h * tw:  # source wider: crop width
        cw = max(1, round(h * tw / th))
        x0 = (w - cw) // 2
        return 0, h, x0, x0 + cw
    ch = max(1, round(w * th / tw))
    y0 = (h - ch) // 2
    return y0, y0 + ch, 0, w
