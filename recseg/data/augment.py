"""Per-clip augmentation: parameters drawn once per clip, applied identically to every frame.

``sample_params`` draws an :class:`AugmentParams` from a ``numpy.random.Generator`` (the loader
seeds one per clip and epoch); ``apply`` transforms a window of frames and labels with it. The
geometry (horizontal flip, then zoom-and-crop or a small rotation + translation) is one affine
map applied to the image with bilinear and to the labels with nearest interpolation, borders
reflected, so labels stay 0/1 and move with the image. Colour jitter (brightness, contrast,
saturation, hue) touches the image only. Nothing here uses a global random state.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

FLIP_P = 0.5
ZOOM_P = 0.5  # otherwise a small rotation + translation
ZOOM = (1.0, 1.3)
ROTATION_DEG = 10.0
TRANSLATION = 0.08  # fraction of width / height
BRIGHTNESS = (0.6, 1.4)
CONTRAST = (0.7, 1.3)
SATURATION = (0.7, 1.3)
HUE = 0.03  # fraction of the colour circle
CONTRAST_PIVOT = 128.0  # fixed, so the colour map is the same function for every frame
BORDER = cv2.BORDER_REFLECT_101


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """One clip's augmentation. ``matrix`` is the 2x3 affine (row-major, output = M @ input)
    including the flip; ``None`` means no geometric change."""

    flip: bool
    matrix: tuple[float, ...] | None
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0  # fraction of the colour circle

    def affine(self) -> np.ndarray | None:
        """The 2x3 float64 matrix, or ``None``."""
        return None if self.matrix is None else np.asarray(self.matrix, np.float64).reshape(2, 3)


def _flip_matrix(width: int) -> np.ndarray:
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def _zoom_matrix(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Zoom in by 1.0-1.3 about the origin, then crop an H x W window at a random offset."""
    s = rng.uniform(*ZOOM)
    ox = rng.uniform(0.0, (s - 1.0) * w)
    oy = rng.uniform(0.0, (s - 1.0) * h)
    return np.array([[s, 0.0, -ox], [0.0, s, -oy], [0.0, 0.0, 1.0]])


def _rotate_matrix(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Rotate by up to +-10 degrees about the centre and translate by up to 8 %."""
    angle = rng.uniform(-ROTATION_DEG, ROTATION_DEG)
    tx = rng.uniform(-TRANSLATION, TRANSLATION) * w
    ty = rng.uniform(-TRANSLATION, TRANSLATION) * h
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
    m[:, 2] += (tx, ty)
    return np.vstack([m, [0.0, 0.0, 1.0]])


def sample_params(rng: np.random.Generator, size: tuple[int, int]) -> AugmentParams:
    """Draw one clip's parameters for frames of ``size`` ``(H, W)``."""
    h, w = size
    flip = bool(rng.random() < FLIP_P)
    geo = _zoom_matrix(rng, h, w) if rng.random() < ZOOM_P else _rotate_matrix(rng, h, w)
    if flip:
        geo = geo @ _flip_matrix(w)
    return AugmentParams(
        flip=flip,
        matrix=tuple(float(x) for x in geo[:2].reshape(-1)),
        brightness=float(rng.uniform(*BRIGHTNESS)),
        contrast=float(rng.uniform(*CONTRAST)),
        saturation=float(rng.uniform(*SATURATION)),
        hue=float(rng.uniform(-HUE, HUE)),
    )


def _luts(params: AugmentParams) -> tuple[np.ndarray, np.ndarray]:
    """(HSV LUT for hue + saturation, RGB LUT for brightness + contrast), uint8, 256 entries."""
    return colour_luts(params.brightness, params.contrast, params.saturation, params.hue)


def colour_luts(
    brightness: float, contrast: float, saturation: float, hue: float
) -> tuple[np.ndarray, np.ndarray]:
    """The lookup tables of a colour jitter: (HSV LUT for hue + saturation, RGB LUT for
    brightness + contrast), uint8, 256 entries; ``hue`` is a fraction of the colour circle."""
    v = np.arange(256, dtype=np.float64)
    hue_lut = np.rint(v + hue * 180.0) % 180.0  # OpenCV 8-bit hue is 0..179
    hsv = np.stack([hue_lut, v * saturation, v], axis=-1)
    rgb = (v * brightness - CONTRAST_PIVOT) * contrast + CONTRAST_PIVOT
    return _to_u8(hsv).reshape(256, 1, 3), _to_u8(rgb)


def _to_u8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def colour(frames: np.ndarray, hsv_lut: np.ndarray, rgb_lut: np.ndarray) -> None:
    """Colour-jitter RGB ``frames`` in place; ``frames`` is one contiguous image (a window is
    passed as ``(n*H, W, 3)``: the map is per pixel, so one call per window suffices)."""
    hsv = cv2.cvtColor(frames, cv2.COLOR_RGB2HSV)
    cv2.LUT(hsv, hsv_lut, dst=hsv)
    cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB, dst=frames)
    cv2.LUT(frames, rgb_lut, dst=frames)


def apply(
    frames: np.ndarray, labels: np.ndarray, params: AugmentParams | None
) -> tuple[np.ndarray, np.ndarray]:
    """Augment ``frames`` (n,H,W,3) RGB uint8 and ``labels`` (n,H,W) uint8 with one clip's
    ``params``; returns new arrays (the inputs are not modified). ``None``: unchanged."""
    if params is None:
        return frames, labels
    n, h, w = labels.shape
    matrix = params.affine()
    if matrix is None:
        out_f, out_l = frames.copy(), labels.copy()
    else:
        out_f, out_l = np.empty_like(frames), np.empty_like(labels)
        linear, nearest = cv2.INTER_LINEAR, cv2.INTER_NEAREST
        for i in range(n):
            cv2.warpAffine(frames[i], matrix, (w, h), out_f[i], linear, BORDER)
            cv2.warpAffine(labels[i], matrix, (w, h), out_l[i], nearest, BORDER)
    colour(out_f.reshape(n * h, w, 3), *_luts(params))
    return out_f, out_l


def describe(params: AugmentParams) -> str:
    """A short human-readable summary (for logs)."""
    m = params.affine()
    scale = math.hypot(m[0, 0], m[1, 0]) if m is not None else 1.0
    return (
        f"flip={params.flip} scale={scale:.2f} brightness={params.brightness:.2f} "
        f"contrast={params.contrast:.2f} saturation={params.saturation:.2f} hue={params.hue:+.3f}"
    )


def resize_window(
    frames: np.ndarray, labels: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``(n, H, W, 3)`` and labels ``(n, H, W)`` resized to ``size = (h, w)``: frames with
    ``INTER_AREA`` when no side grows, else ``INTER_LINEAR``; labels with ``INTER_NEAREST``."""
    (h, w), (old_h, old_w) = size, frames.shape[1:3]
    if (h, w) == (old_h, old_w):
        return frames, labels
    mode = cv2.INTER_AREA if h <= old_h and w <= old_w else cv2.INTER_LINEAR
    out_f = [cv2.resize(np.ascontiguousarray(f), (w, h), interpolation=mode) for f in frames]
    nearest = cv2.INTER_NEAREST
    out_l = [cv2.resize(np.ascontiguousarray(x), (w, h), interpolation=nearest) for x in labels]
    return np.stack(out_f), np.stack(out_l)
