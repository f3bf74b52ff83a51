"""How a figure looks: skin, hair, clothes and build, in colours a chroma key can separate.

Every colour is drawn in HSV away from green: OpenCV hue (0-180) 35-90 is never used unless the
saturation is below 0.15, so a green screen key never confuses a figure with the backdrop.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

Colour = tuple[float, float, float]  # BGR, 0-255

GREEN_HUES = (35.0, 90.0)  # OpenCV hue range (0-180) no figure colour may use...
GREY_SATURATION = 0.15  # ...unless its saturation is below this
# Hues for saturated colours: a wide margin around the green band, because yellows and cyans
# drift toward green under spill, noise and 4:2:0 chroma subsampling.
_HUE_BANDS = ((0.0, 22.0), (105.0, 179.0))


def hsv_to_bgr(hue: float, sat: float, val: float) -> Colour:
    """OpenCV-style HSV (hue 0-180, saturation and value 0-1) to a BGR colour (0-255)."""
    r, g, b = colorsys.hsv_to_rgb((hue % 180.0) / 180.0, sat, val)
    return (b * 255.0, g * 255.0, r * 255.0)


def bgr_to_hsv(colour: Colour) -> tuple[float, float, float]:
    """A BGR colour (0-255) to OpenCV-style HSV (hue 0-180, saturation and value 0-1)."""
    b, g, r = (c / 255.0 for c in colour)
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    return h * 180.0, s, v


def keyable(colour: Colour) -> bool:
    """True when a chroma key can tell ``colour`` from a green screen."""
    hue, sat, _ = bgr_to_hsv(colour)
    return sat < GREY_SATURATION or not GREEN_HUES[0] <= hue <= GREEN_HUES[1]


@dataclass(frozen=True)
class Look:
    """A figure's appearance: colours (BGR), clothing cut, hair style and build."""

    skin: Colour
    hair: Colour
    shirt: Colour
    stripe: Colour | None  # second shirt colour for horizontal stripes, or None
    trousers: Colour
    shoes: Colour
    eyes: Colour
    long_sleeves: bool
    lower: str  # "trousers", "shorts" or "skirt"
    hair_style: str  # "short", "long" or "buzz"
    build: float  # width factor, about 0.9-1.15
    stripe_period: float  # stripe period as a fraction of the figure's height

    def colours(self) -> list[Colour]:
        """Every colour the figure is painted with."""
        extra = [self.stripe] if self.stripe else []
        return [self.skin, self.hair, self.shirt, self.trousers, self.shoes, self.eyes, *extra]


def _vivid(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> Colour:
    """A saturated colour with a hue outside the green band."""
    lo, hi = _HUE_BANDS[int(rng.integers(len(_HUE_BANDS)))]
    return hsv_to_bgr(rng.uniform(lo, hi), rng.uniform(*sat), rng.uniform(*val))


def _grey(rng: np.random.Generator, val: tuple[float, float]) -> Colour:
    """A near-neutral colour (white, grey, charcoal) with a slight warm or cool cast."""
    return hsv_to_bgr(rng.choice([10.0, 115.0]), rng.uniform(0.0, 0.1), rng.uniform(*val))


def _skin(rng: np.random.Generator) -> Colour:
    return hsv_to_bgr(rng.uniform(6, 18), rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.92))


def _hair(rng: np.random.Generator) -> Colour:
    kind = rng.choice(["black", "brown", "blonde", "auburn", "grey"], p=[0.3, 0.3, 0.15, 0.1, 0.15])
    hsv = {
        "black": (rng.uniform(5, 15), rng.uniform(0.2, 0.4), rng.uniform(0.18, 0.25)),
        "brown": (rng.uniform(8, 15), rng.uniform(0.5, 0.7), rng.uniform(0.25, 0.45)),
        "blonde": (rng.uniform(16, 21), rng.uniform(0.45, 0.6), rng.uniform(0.7, 0.85)),
        "auburn": (rng.uniform(4, 10), rng.uniform(0.6, 0.75), rng.uniform(0.4, 0.6)),
        "grey": (rng.uniform(0, 20), rng.uniform(0.0, 0.08), rng.uniform(0.55, 0.8)),
    }[str(kind)]
    return hsv_to_bgr(*hsv)


def _shirt(rng: np.random.Generator) -> Colour:
    if rng.random() < 0.3:
        return _grey(rng, (0.2, 0.95))
    return _vivid(rng, (0.35, 0.9), (0.35, 0.95))


def _trousers(rng: np.random.Generator) -> Colour:
    kind = rng.choice(["denim", "dark", "khaki", "brown", "vivid"], p=[0.35, 0.25, 0.15, 0.1, 0.15])
    if kind == "denim":
        return hsv_to_bgr(rng.uniform(104, 116), rng.uniform(0.45, 0.7), rng.uniform(0.3, 0.55))
    if kind == "dark":
        return _grey(rng, (0.2, 0.4))
    if kind == "khaki":
        return hsv_to_bgr(rng.uniform(14, 20), rng.uniform(0.3, 0.45), rng.uniform(0.5, 0.7))
    if kind == "brown":
        return hsv_to_bgr(rng.uniform(8, 16), rng.uniform(0.45, 0.65), rng.uniform(0.25, 0.45))
    return _vivid(rng, (0.4, 0.8), (0.3, 0.7))


def _shoes(rng: np.random.Generator) -> Colour:
    if rng.random() < 0.25:
        return _grey(rng, (0.8, 0.95))
    return hsv_to_bgr(rng.uniform(5, 15), rng.uniform(0.1, 0.5), rng.uniform(0.18, 0.3))


def random_look(rng: np.random.Generator) -> Look:
    """A random, keyable appearance."""
    shirt = _shirt(rng)
    stripe = _shirt(rng) if rng.random() < 0.3 else None
    look = Look(
        skin=_skin(rng),
        hair=_hair(rng),
        shirt=shirt,
        stripe=stripe,
        trousers=_trousers(rng),
        shoes=_shoes(rng),
        eyes=hsv_to_bgr(10, 0.3, 0.15),
        long_sleeves=bool(rng.random() < 0.5),
        lower=str(rng.choice(["trousers", "shorts", "skirt"], p=[0.6, 0.15, 0.25])),
        hair_style=str(rng.choice(["short", "long", "buzz"], p=[0.45, 0.4, 0.15])),
        build=float(rng.uniform(0.9, 1.15)),
        stripe_period=float(rng.uniform(0.025, 0.05)),
    )
    assert all(keyable(c) for c in look.colours())
    return look
