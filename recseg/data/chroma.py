"""Chroma key: a soft alpha from hue and saturation, green-spill suppression, a binary label.

The seed keyed with a fixed BGR box (``cv2.inRange``), which fails under uneven lighting and
shadow and leaves green fringes. Here a pixel counts as screen by how close its hue is to the
screen's own hue (measured per video) and how saturated and bright it is: a shadow on the screen
is darker but keeps its hue, so it stays screen. Alpha ramps between an inner and an outer hue
tolerance, which gives soft edges; a median filter removes sensor-noise specks. Despill clamps
green to ``max(R, B)``, which only changes pixels that are greener than they are red or blue.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

# OpenCV hue runs 0..180; greens sit around 60.
GREEN_HUES = (35, 90)


@dataclasses.dataclass(frozen=True)
class Key:
    """The screen colour of one video and the tolerances of the key."""

    hue: float  # OpenCV hue (0..180) of the screen
    saturation: float  # typical screen saturation, 0..255
    hue_inner: float = 10.0  # |hue - key| below this: fully screen (if saturated)
    hue_outer: float = 20.0  # above this: fully foreground
    sat_low: float = 0.25  # saturation (fraction of the screen's) below which: foreground
    sat_high: float = 0.45  # above which: screen
    val_low: float = 12.0  # value (0..255) below which hue is noise: foreground
    val_high: float = 30.0

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def screen_fraction(frame: np.ndarray) -> float:
    """Share of pixels of an RGB frame that are clearly green screen."""
    hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)
    return float(_green_pixels(hsv).mean())


def _green_pixels(hsv: np.ndarray) -> np.ndarray:
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    return (h >= GREEN_HUES[0]) & (h <= GREEN_HUES[1]) & (s >= 70) & (v >= 40)


def estimate_key(frames: list[np.ndarray], min_fraction: float = 0.05) -> Key | None:
    """The screen colour from a few RGB frames, or None when they show no green screen."""
    hues, sats = [], []
    for frame in frames:
        hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)
        green = _green_pixels(hsv)
        if green.mean() >= min_fraction:
            hues.append(hsv[..., 0][green])
            sats.append(hsv[..., 1][green])
    if not hues:
        return None
    return Key(
        hue=float(np.median(np.concatenate(hues))),
        saturation=float(np.median(np.concatenate(sats))),
    )


def _ramp(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """0 at ``low``, 1 at ``high``, linear between (float32)."""
    return np.clip((x - low) * (1.0 / max(high - low, 1e-6)), 0.0, 1.0)


def screen_score(frame: np.ndarray, key: Key) -> np.ndarray:
    """How much each pixel looks like the screen: (H, W) uint8, 255 = screen."""
    hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV).astype(np.float32)
    hue_dist = np.abs(hsv[..., 0] - key.hue)
    screen = 1.0 - _ramp(hue_dist, key.hue_inner, key.hue_outer)
    screen *= _ramp(hsv[..., 1], key.sat_low * key.saturation, key.sat_high * key.saturation)
    screen *= _ramp(hsv[..., 2], key.val_low, key.val_high)
    return cv2.medianBlur((255.0 * screen).astype(np.uint8), 5)


def _local_mean(image: np.ndarray, mask: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``image`` over the pixels in ``mask`` within a box of ``radius`` around each
    pixel, and the share of such pixels (box filters: constant time per pixel)."""
    ksize = (2 * radius + 1, 2 * radius + 1)
    weight = cv2.blur(mask.astype(np.float32), ksize)
    total = cv2.blur(cv2.bitwise_and(image, image, mask=mask.view(np.uint8)), ksize)
    return total / np.maximum(weight, 1e-4)[..., None], weight


def alpha_matte(frame: np.ndarray, key: Key, band_px: int = 2, sure: float = 0.95) -> np.ndarray:
    """Soft foreground alpha (H, W) float32 in [0, 1] of an RGB uint8 frame.

    Hue decides sure screen and sure foreground. In the band where they meet (mixed pixels,
    blurred further by the video's half-resolution chroma) alpha comes from linear unmixing:
    the pixel's position on the line from the local screen colour to the local foreground
    colour (in YCrCb), so a pixel counts as person when it is at least half person.
    """
    screen = screen_score(frame, key)
    sure_bg = screen >= round(255 * sure)
    sure_fg = screen <= round(255 * (1 - sure))
    alpha = 1.0 - screen.astype(np.float32) * (1.0 / 255.0)
    kernel = np.ones((2 * band_px + 1, 2 * band_px + 1), np.uint8)
    near_bg = cv2.dilate(sure_bg.astype(np.uint8), kernel).astype(bool)
    near_fg = cv2.dilate(sure_fg.astype(np.uint8), kernel).astype(bool)
    band = (near_bg & near_fg) | ~(sure_bg | sure_fg)
    if not band.any():
        return alpha
    image = cv2.cvtColor(frame, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    bg, bg_weight = _local_mean(image, sure_bg, 2 * band_px + 2)
    fg, fg_weight = _local_mean(image, sure_fg, 2 * band_px + 2)
    bg, fg = bg[band], fg[band]
    diff = fg - bg
    norm = np.einsum("ij,ij->i", diff, diff)
    unmixed = np.einsum("ij,ij->i", image[band] - bg, diff) / np.maximum(norm, 1.0)
    # unmix where both references exist and differ by ~10 levels; elsewhere keep the hue alpha
    ok = (norm > 100.0) & (bg_weight[band] > 0.02) & (fg_weight[band] > 0.02)
    alpha[band] = np.where(ok, np.clip(unmixed, 0.0, 1.0), alpha[band])
    luma = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32) * (1.0 / 255.0)
    return np.clip(guided_filter(luma, alpha, 1, 1e-3), 0.0, 1.0)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with a grey guide: edges of ``src`` snap to edges of the
    guide. Luma is stored at full resolution while chroma is halved, so it sharpens the key."""
    ksize = (2 * radius + 1, 2 * radius + 1)

    def mean(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, ksize)

    mg, ms = mean(guide), mean(src)
    a = (mean(guide * src) - mg * ms) / (mean(guide * guide) - mg * mg + eps)
    return mean(a) * guide + mean(ms - a * mg)


def despill(frame: np.ndarray) -> np.ndarray:
    """Clamp green to ``max(red, blue)``: removes green spill, leaves non-green colours alone."""
    out = frame.copy()
    limit = np.maximum(frame[..., 0], frame[..., 2])
    np.minimum(frame[..., 1], limit, out=out[..., 1])
    return out


def key_frame(
    frame: np.ndarray, key: Key, size: tuple[int, int], max_scale: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Key an RGB frame (already cropped to the aspect of ``size``) and bring it to ``size``.

    The key runs at up to ``max_scale`` times the output size, and alpha is then averaged
    down (area), so edge pixels get their coverage, not a guess at the output's resolution.
    Returns ``(despilled foreground RGB uint8, alpha float32)``, both of ``size`` (H, W).
    """
    th, tw = size
    h = frame.shape[0]
    if h > max_scale * th:
        kh, kw = round(max_scale * th), round(max_scale * tw)
        frame = cv2.resize(frame, (kw, kh), interpolation=cv2.INTER_AREA)
    alpha = alpha_matte(frame, key)
    fg = despill(frame)
    if fg.shape[:2] != (th, tw):
        down = cv2.INTER_AREA if fg.shape[0] > th else cv2.INTER_LINEAR
        fg = cv2.resize(fg, (tw, th), interpolation=down)
        alpha = cv2.resize(alpha, (tw, th), interpolation=down)
    return fg, alpha


def composite(
    fg: np.ndarray, alpha: np.ndarray, background: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``fg`` over ``background`` by ``alpha``: ``(RGB uint8, label (H, W) uint8 0/1)``."""
    a = alpha[..., None]
    out = background.astype(np.float32)
    out += (fg.astype(np.float32) - out) * a
    label = (alpha >= 0.5).astype(np.uint8)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), label


def alpha_to_u8(alpha: np.ndarray) -> np.ndarray:
    """Alpha in [0, 1] as uint8 0..255 (rounded; ``>= 128`` exactly where alpha >= 0.5)."""
    return np.clip(np.rint(alpha * np.float32(255.0)), 0, 255).astype(np.uint8)


def extend_colour(fg: np.ndarray, alpha: np.ndarray, smallest: int = 8) -> np.ndarray:
    """``fg`` (H, W, 3) uint8 where ``alpha`` (uint8) > 0, and a smooth continuation of its
    colour elsewhere (push-pull: the alpha-premultiplied colour averaged down a Gaussian
    pyramid, then composited back up). JPEG then does not bleed the empty area into the
    person's edge, and a warp's bilinear samples at the edge see the person's own colours."""
    inside = alpha > 0
    if inside.all() or not inside.any():
        return fg
    w = alpha.astype(np.float32)
    w *= np.float32(1.0 / 255.0)
    cw = cv2.merge([*cv2.split(cv2.multiply(fg, cv2.merge([w, w, w]), dtype=cv2.CV_32F)), w])
    levels = [cv2.pyrDown(cw)]  # premultiplied colour and weight, halved until small
    while min(levels[-1].shape[:2]) > smallest:
        levels.append(cv2.pyrDown(levels[-1]))
    total = cv2.sumElems(cw)
    mean = np.array(total[:3], np.float32) / max(total[3], 1e-6)
    eps = np.float32(1e-3)
    top = levels[-1]
    fill = (top[..., :3] + mean * eps) / (top[..., 3:] + eps)
    for level in reversed(levels[:-1]):
        up = cv2.pyrUp(fill, dstsize=level.shape[1::-1])
        fill = level[..., :3] + up * (1.0 - level[..., 3:])
    # at full size the weight is 0 outside the alpha: the fill there is the upsampled one
    out = cv2.pyrUp(fill, dstsize=fg.shape[1::-1])
    out = cv2.convertScaleAbs(out)  # rounds and saturates to uint8
    cv2.copyTo(fg, inside.view(np.uint8), out)
    return out
