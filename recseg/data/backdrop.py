"""Moving backgrounds: a slow pan and zoom over a still photo or a video, drawn per clip.

The seed pasted one static, noisy background per clip; a camera that moves over the backdrop
gives the model background motion to cope with, as in real footage. Backgrounds are images or
videos (``--backgrounds`` holds either); every frame is fitted to the store size first.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from recseg.data.video import VIDEO_SUFFIXES, VideoError, decode, probe, resampled
from recseg.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_backgrounds(folder: str | Path, flag: str = "--backgrounds") -> list[Path]:
    """The image and video files of ``folder`` (sorted; recursive); ``InputError`` if there are
    none or the folder cannot be read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{flag} {folder}: not a folder")
    suffixes = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    try:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
    except OSError as exc:
        raise InputError(f"{flag} {folder}: cannot be read ({exc.strerror or exc})") from None
    if not files:
        raise InputError(
            f"{flag} {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) or videos "
            f"({', '.join(VIDEO_SUFFIXES)}) found in the folder"
        )
    return files


def is_video(path: str | Path) -> bool:
    """Whether a background file is a video (by its suffix)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def check_background(path: Path, flag: str = "--backgrounds") -> None:
    """``InputError`` naming ``path`` unless it is a readable image, or a video whose first
    frame decodes."""
    if not is_video(path):
        load_image(path, flag)
        return
    try:
        probe(path)
        first = next(decode(path), None)
    except VideoError as exc:
        raise InputError(f"{flag}: {path} is not a readable video ({exc})") from None
    if first is None or min(first[1].shape[:2]) < 8:
        raise InputError(f"{flag}: {path} is not a readable video (no frame decodes)")


def load_video(
    path: Path, size: tuple[int, int], fps: float, max_seconds: float, flag: str = "--backgrounds"
) -> np.ndarray:
    """A background video's first ``max_seconds`` at ``fps``, each frame fitted to ``size``
    (``fit_background``): (n, h, w, 3) RGB uint8; a stream that breaks part way ends early."""
    frames: list[np.ndarray] = []
    limit = max(1, round(max_seconds * fps))
    try:
        for _, _, frame in resampled(decode(path), fps, probe(path).fps):
            fitted = fit_background(frame, size)
            if frames and fitted.shape != frames[0].shape:  # the stream changed size
                fitted = cv2.resize(fitted, frames[0].shape[1::-1], interpolation=cv2.INTER_AREA)
            frames.append(fitted)
            if len(frames) >= limit:
                break
    except VideoError:
        pass  # keep what decoded
    if not frames:
        raise InputError(f"{flag}: {path} is not a readable video (no frame decodes)")
    return np.stack(frames)


def load_image(path: Path, flag: str = "--backgrounds") -> np.ndarray:
    """An image as RGB uint8; ``InputError`` naming the file if it does not decode."""
    data = np.fromfile(str(path), np.uint8) if path.is_file() else None
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    except cv2.error:  # e.g. a header claiming more pixels than OpenCV decodes
        raise InputError(f"{flag}: {path} is too large to decode") from None
    if image is None or image.shape[0] < 8 or image.shape[1] < 8:
        raise InputError(f"{flag}: {path} is not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def fit_background(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale ``image`` so the largest window of ``size``'s aspect in it is exactly ``size``:
    later zooms then only enlarge, and nothing aliases."""
    th, tw = size
    ih, iw = image.shape[:2]
    factor = min(iw / tw, ih / th)
    new = (max(tw, round(iw / factor)), max(th, round(ih / factor)))
    interp = cv2.INTER_AREA if factor > 1 else cv2.INTER_CUBIC
    return cv2.resize(image, new, interpolation=interp)


@dataclasses.dataclass(frozen=True)
class CameraPath:
    """A linear move of a crop window over the background: centre and zoom, start to end."""

    start: tuple[float, float, float]  # (cx, cy, zoom) in [0, 1] x [0, 1] x [1, inf)
    end: tuple[float, float, float]
    flip: bool

    @classmethod
    def draw(cls, rng: np.random.Generator, max_zoom: float = 1.4) -> CameraPath:
        """A random path: zoom 1..max_zoom, pan anywhere the window stays inside the image."""

        def point() -> tuple[float, float, float]:
            zoom = float(rng.uniform(1.0, max_zoom))
            return float(rng.uniform(0, 1)), float(rng.uniform(0, 1)), zoom

        return cls(point(), point(), bool(rng.random() < 0.5))


def render_background(
    image: np.ndarray, size: tuple[int, int], path: CameraPath, n_frames: int
) -> np.ndarray:
    """``n_frames`` RGB uint8 frames of ``size`` (H, W) along ``path`` over ``image``."""
    if path.flip:
        image = cv2.flip(image, 1)
    out = np.empty((n_frames, *size, 3), np.uint8)
    for k in range(n_frames):
        pan_zoom(image, size, path, k / max(n_frames - 1, 1), out[k])
    return out


def pan_zoom(
    image: np.ndarray, size: tuple[int, int], path: CameraPath, u: float, dst: np.ndarray
) -> None:
    """Write into ``dst`` the window of ``size`` (H, W) at position ``u`` (0: start, 1: end)
    of ``path`` over ``image`` (already flipped when ``path.flip``: the caller flips once)."""
    th, tw = size
    ih, iw = image.shape[:2]
    # the largest window of the output's aspect that fits, at zoom 1
    base = min(iw / tw, ih / th)
    cx, cy, zoom = (a + (b - a) * u for a, b in zip(path.start, path.end, strict=True))
    scale = base / zoom  # source pixels per output pixel
    half_w, half_h = tw * scale / 2, th * scale / 2
    x = half_w + cx * (iw - 2 * half_w)
    y = half_h + cy * (ih - 2 * half_h)
    m = np.array([[scale, 0, x - half_w], [0, scale, y - half_h]], np.float64)
    cv2.warpAffine(
        image,
        m,
        (tw, th),
        dst=dst,
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT_101,
    )


def render_video_background(
    frames: np.ndarray, size: tuple[int, int], path: CameraPath, n_frames: int, offset: int
) -> np.ndarray:
    """As ``render_background`` over a video's fitted ``frames`` (looped from ``offset``)."""
    out = np.empty((n_frames, *size, 3), np.uint8)
    for k in range(n_frames):
        image = frames[(offset + k) % len(frames)]
        if path.flip:
            image = cv2.flip(image, 1)
        pan_zoom(image, size, path, k / max(n_frames - 1, 1), out[k])
    return out
