"""Backgrounds for ``recseg segment --background``: a colour, an image or a video, and the
compositing of a segmented frame onto one.

``open_background`` checks what the user gave (before any video is decoded or model loaded);
``Background.frames(shape)`` then streams RGB uint8 frames of exactly that size, forever: an image
or a colour repeats, a video loops (decoded one frame at a time, never held whole).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from recseg.data.video import VIDEO_SUFFIXES, VideoError, decode, fit_size, probe
from recseg.errors import InputError

COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
}
COLOUR_FORMS = f"{', '.join(COLOURS)}, #RRGGBB or R,G,B"
_HEX = re.compile(r"#([0-9a-f]{3}|[0-9a-f]{6})")
_TRIPLE = re.compile(r"(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})")


def parse_colour(text: str) -> tuple[int, int, int] | None:
    """``green``, ``#00ff00``, ``#0f0`` or ``0,255,0`` as an RGB triple; None when ``text`` is
    not written as a colour; ``InputError`` for an ``R,G,B`` component above 255."""
    value = text.strip().lower()
    if value in COLOURS:
        return COLOURS[value]
    if match := _HEX.fullmatch(value):
        digits = match.group(1)
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)
    if match := _TRIPLE.fullmatch(value):
        rgb = tuple(int(v) for v in match.groups())
        if max(rgb) > 255:
            raise InputError(f"--background {text}: colour components must be 0-255")
        return rgb  # type: ignore[return-value]
    return None


class Background:
    """Where the person is composited: ``frames(shape)`` yields RGB uint8 ``(H, W, 3)``."""

    description = "background"

    def frames(self, shape: tuple[int, int]) -> Iterator[np.ndarray]:
        raise NotImplementedError


class ColourBackground(Background):
    """One flat colour."""

    def __init__(self, rgb: tuple[int, int, int]) -> None:
        self.rgb = rgb
        self.description = "colour #{:02x}{:02x}{:02x}".format(*rgb)

    def frames(self, shape: tuple[int, int]) -> Iterator[np.ndarray]:
        frame = np.empty((*shape, 3), np.uint8)
        frame[:] = self.rgb
        while True:
            yield frame


class ImageBackground(Background):
    """A still image, centre-cropped to the frame's aspect ratio and resized to cover it."""

    def __init__(self, path: Path, image: np.ndarray) -> None:
        self.path = path
        self.image = image  # RGB uint8
        self.description = f"image {path.name}"

    def frames(self, shape: tuple[int, int]) -> Iterator[np.ndarray]:
        frame = _cover(self.image, shape)
        while True:
            yield frame


class VideoBackground(Background):
    """A video, frame i behind output frame i, looped when shorter; each frame cropped and
    resized to cover the output frame."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"video {path.name}"

    def frames(self, shape: tuple[int, int]) -> Iterator[np.ndarray]:
        while True:
            count = 0
            for _, frame in decode(self.path):
                count += 1
                yield _cover(frame, shape)
            if count == 0:
                raise VideoError(f"--background {self.path}: the video has no frames")


def _cover(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` cropped to the aspect of ``shape`` and resized to it (area when shrinking)."""
    h, w = image.shape[:2]
    shrink = h * w > shape[0] * shape[1]
    return fit_size(image, shape, cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def open_background(text: str) -> Background:
    """The background ``--background`` names: an existing image or video file, else a colour.

    ``InputError`` (one line naming the value) for a missing file, a file that is neither an
    image nor a video, or an unknown colour. Only a video's header is read here.
    """
    path = Path(text).expanduser()
    if path.is_file():
        return _open_file(path, text)
    if path.exists():
        raise InputError(f"--background {text}: not a file (an image, a video or a colour)")
    colour = parse_colour(text)
    if colour is not None:
        return ColourBackground(colour)
    if "/" in text or "\\" in text or path.suffix:
        raise InputError(f"--background {text}: no such file")
    raise InputError(
        f"--background {text}: no such file, and not a colour (use a name: {COLOUR_FORMS})"
    )


def _open_file(path: Path, text: str) -> Background:
    if path.suffix.lower() not in VIDEO_SUFFIXES and cv2.haveImageReader(str(path)):
        try:
            image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
        except cv2.error:  # e.g. a header claiming more pixels than OpenCV decodes
            raise InputError(f"--background {text}: the image is too large to decode") from None
        if image is None or image.size == 0:
            raise InputError(f"--background {text}: the image cannot be decoded")
        return ImageBackground(path, cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    try:
        probe(path)
    except VideoError:
        raise InputError(f"--background {text}: neither an image nor a readable video") from None
    return VideoBackground(path)


def composite(frame: np.ndarray, background: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """``prob * frame + (1 - prob) * background``, rounded to uint8: the person (soft alpha =
    foreground probability ``(H, W)``) over the background; both images ``(H, W, 3)`` uint8."""
    fg = frame.astype(np.float32)
    alpha = prob.astype(np.float32, copy=False)[..., None]
    out = fg * alpha + background.astype(np.float32) * (1.0 - alpha)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def mask_frame(mask: np.ndarray) -> np.ndarray:
    """A boolean mask ``(H, W)`` as an RGB uint8 frame: white person on black."""
    return np.repeat((mask.astype(np.uint8) * 255)[..., None], 3, axis=2)
