"""The green screen studio: an unevenly lit, wrinkled backdrop, soft shadows of the figures on
it, green spill on the figures' edges and per-frame sensor noise."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from recseg.data.footage.figure import Layer
from recseg.data.footage.look import Colour, hsv_to_bgr


@dataclass(frozen=True)
class Screen:
    """A video's backdrop (lit, wrinkled plate) and its lighting and camera settings."""

    plate: np.ndarray  # (H, W, 3) float32 BGR
    key: Colour  # nominal screen colour (BGR)
    hue: float  # OpenCV hue of the screen (0-180)
    shadow_shift: tuple[float, float, float]  # dx, dy (pixels) and shear of the cast shadow
    shadow_blur: float  # pixels (sigma)
    shadow_strength: float  # darkening where the shadow is full
    spill: float  # strength of the green tint on the figures' edges
    spill_px: float  # width of the spill band (pixels)
    noise: float  # sensor noise sigma per channel (0-255 scale)
    light: float  # side (sign) and strength of the key light on the figures
    exposure: float  # brightness of the figures


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised coordinates: y in [-1, 1] top to bottom, x scaled by the aspect ratio."""
    h, w = shape
    ys = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
    xs = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :] * (w / h)
    return ys, xs


def lighting(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Smooth uneven lighting: a gradient, a hot spot and a vignette, scaled to 0.55-1.1."""
    ys, xs = _grid(shape)
    angle = rng.uniform(0, 2 * np.pi)
    field = rng.uniform(0.1, 0.35) * (np.cos(angle) * xs + np.sin(angle) * ys)
    cx, cy, spread = rng.uniform(-0.8, 0.8), rng.uniform(-0.7, 0.3), rng.uniform(0.6, 1.4)
    field = field + rng.uniform(0.3, 0.6) * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / spread**2)
    field = field - rng.uniform(0.1, 0.25) * (xs**2 / (shape[1] / shape[0]) ** 2 + ys**2)
    lo, hi = rng.uniform(0.55, 0.7), rng.uniform(0.95, 1.1)
    span = max(float(field.max() - field.min()), 1e-6)
    return (lo + (hi - lo) * (field - field.min()) / span).astype(np.float32)


def folds(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Low-frequency brightness variation of cloth: hanging folds, a few creases, blotches."""
    h, w = shape
    ys, xs = _grid(shape)
    out = np.ones(shape, np.float32)
    for _ in range(int(rng.integers(2, 5))):  # broad folds hanging roughly vertically
        tilt, period = rng.normal(0.0, 0.15), rng.uniform(0.4, 1.2)
        phase = xs * np.cos(tilt) + ys * np.sin(tilt) + 0.1 * np.sin(ys * rng.uniform(1, 3))
        out += rng.uniform(0.008, 0.02) * np.sin(2 * np.pi * phase / period + rng.uniform(0, 6.3))
    wrinkles = rng.normal(0.0, 1.0, (max(h // 60, 2), max(w // 14, 2))).astype(np.float32)
    out += 0.02 * cv2.resize(wrinkles, (w, h), interpolation=cv2.INTER_CUBIC)  # long, vertical
    creases = np.zeros(shape, np.float32)
    for _ in range(int(rng.integers(2, 6))):
        p0 = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        p1 = (int(p0[0] + rng.normal(0, 0.2) * w), int(p0[1] + rng.uniform(0.1, 0.5) * h))
        thickness = max(1, round(min(h, w) / 150))
        cv2.line(creases, p0, p1, float(rng.choice([-1.0, 1.0])), thickness, cv2.LINE_AA)
    sigma = max(min(h, w) / 120, 0.8)
    out += 0.045 * cv2.GaussianBlur(creases, (0, 0), sigma)
    coarse = rng.normal(0.0, 1.0, (max(h // 48, 2), max(w // 48, 2))).astype(np.float32)
    out += 0.02 * cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return out


def make_screen(rng: np.random.Generator, shape: tuple[int, int]) -> Screen:
    """A random green screen set-up for one video."""
    hue, sat, val = rng.uniform(54, 68), rng.uniform(0.62, 0.85), rng.uniform(0.68, 0.82)
    key = hsv_to_bgr(hue, sat, val)
    light = lighting(rng, shape) * folds(rng, shape)
    tint = 1.0 + 0.03 * cv2.resize(
        rng.normal(0, 1, (3, 4, 3)).astype(np.float32), shape[::-1], interpolation=cv2.INTER_CUBIC
    )
    plate = np.asarray(key, np.float32)[None, None, :] * light[..., None] * tint
    side = 1.0 if rng.random() < 0.5 else -1.0
    h = shape[0]
    return Screen(
        plate=np.clip(plate, 0, 255).astype(np.float32),
        key=key,
        hue=float(hue),
        shadow_shift=(
            side * rng.uniform(0.04, 0.12) * h,
            -rng.uniform(0.0, 0.04) * h,
            side * rng.uniform(0.0, 0.25),
        ),
        shadow_blur=rng.uniform(0.012, 0.03) * h,
        shadow_strength=rng.uniform(0.2, 0.4),
        spill=rng.uniform(0.1, 0.3),
        spill_px=rng.uniform(2.0, 4.0) * max(h / 360.0, 0.5),
        noise=rng.uniform(2.0, 5.0),
        light=-0.8 * side * rng.uniform(0.08, 0.16),
        exposure=rng.uniform(0.85, 1.05),
    )


def coverage(layers: list[Layer], shape: tuple[int, int]) -> np.ndarray:
    """Union coverage (H, W) of the layers."""
    alpha = np.zeros(shape, np.float32)
    for layer in layers:
        h, w = layer.alpha.shape
        region = alpha[layer.y0 : layer.y0 + h, layer.x0 : layer.x0 + w]
        region += layer.alpha * (1.0 - region)
    return alpha


def shadowed_plate(screen: Screen, alpha: np.ndarray, feet: list[tuple]) -> np.ndarray:
    """The plate darkened by the figures' soft cast shadow and contact shadows at their feet.
    ``feet`` holds (x, ground, height) of each figure (1x pixels)."""
    h, w = alpha.shape
    q = 4
    small = cv2.resize(alpha, (max(w // q, 1), max(h // q, 1)), interpolation=cv2.INTER_AREA)
    dx, dy, shear = screen.shadow_shift
    matrix = np.float32([[1.0, shear, dx / q - shear * small.shape[0]], [0.0, 1.0, dy / q]])
    cast = cv2.warpAffine(small, matrix, small.shape[::-1], flags=cv2.INTER_LINEAR)
    for x, ground, height in feet:
        centre = (round(x / q * 8), round(ground / q * 8))
        axes = (max(round(0.16 * height / q * 8), 1), max(round(0.02 * height / q * 8), 1))
        cv2.ellipse(cast, centre, axes, 0, 0, 360, 0.8, -1, cv2.LINE_AA, 3)
    sigma = max(screen.shadow_blur / q, 0.5)
    cast = cv2.GaussianBlur(np.minimum(cast, 1.0), (0, 0), sigma)
    cast = cv2.resize(cast, (w, h), interpolation=cv2.INTER_LINEAR)
    return screen.plate * (1.0 - screen.shadow_strength * cast)[..., None]


def _union_box(layers: list[Layer], pad: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Slices of the frame region holding every layer, grown by ``pad`` pixels."""
    y0 = max(min(la.y0 for la in layers) - pad, 0)
    x0 = max(min(la.x0 for la in layers) - pad, 0)
    y1 = min(max(la.y0 + la.alpha.shape[0] for la in layers) + pad, shape[0])
    x1 = min(max(la.x0 + la.alpha.shape[1] for la in layers) + pad, shape[1])
    return slice(y0, y1), slice(x0, x1)


def composite(
    plate: np.ndarray, layers: list[Layer], alpha: np.ndarray, screen: Screen
) -> np.ndarray:
    """Figures over the plate, then green spill on their edges (blend toward the screen)."""
    frame = plate.copy()
    if not layers:
        return frame
    for layer in layers:
        h, w = layer.alpha.shape
        region = frame[layer.y0 : layer.y0 + h, layer.x0 : layer.x0 + w]
        region *= (1.0 - layer.alpha)[..., None]
        region += layer.colour * screen.exposure
    box = _union_box(layers, int(3 * screen.spill_px) + 2, alpha.shape)
    near = cv2.GaussianBlur(alpha[box], (0, 0), screen.spill_px / 2)
    band = np.clip(2.0 * (1.0 - near), 0.0, 1.0) * alpha[box] * screen.spill
    frame[box] += (plate[box] - frame[box]) * band[..., None]
    return frame


class SensorNoise:
    """Gaussian sensor noise, different every frame: random crops of two pre-drawn noise
    fields (drawing fresh normals for every pixel of every frame is the slow part)."""

    PAD = 64

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> None:
        size = (shape[0] + self.PAD, shape[1] + self.PAD, 3)
        self.rng, self.shape = rng, shape
        self.fields = [
            rng.standard_normal(size, dtype=np.float32) * np.float32(sigma) for _ in range(2)
        ]

    def add(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` plus this frame's noise (in place)."""
        k, dy, dx = (int(v) for v in self.rng.integers((2, self.PAD, self.PAD)))
        frame += self.fields[k][dy : dy + self.shape[0], dx : dx + self.shape[1]]
        return frame


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """Round and clip a float frame to uint8 (``frame`` is overwritten)."""
    frame += 0.5
    return np.clip(frame, 0, 255, out=frame).astype(np.uint8)
