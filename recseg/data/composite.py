"""On-the-fly compositing: what is drawn, per (seed, epoch, clip), to make a training clip.

A store of version 2 keeps each clip's keyed foreground colour and soft alpha. In training with
augmentation every clip gets, each epoch, a fresh :class:`CompositeParams` (``draw``): a
background (one of the store's train images under a moving camera, a stored background video, or
a flat green or blue screen), clutter on it, a colour jitter of its own; a foreground affine
(flip, scale, translation, rotation: one matrix for every frame of the clip), a colour jitter of
the foreground and sometimes a channel permutation, or no person at all; and after compositing,
blur, sensor noise and a light global colour jitter. ``recseg.data.layers`` renders a window with
them. Every constant is here, so that they can be tuned from measurements. Nothing here uses a
global random state.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import cv2
import numpy as np

from recseg.data.backdrop import CameraPath

# ----- background source -------------------------------------------------------------------
SCREEN_P = 0.08  # a flat green or blue screen: "green is not background"
VIDEO_P = 0.25  # a stored background video, when the store has any (else an image)
CAMERA_MAX_ZOOM = 1.4  # pan/zoom over an image or video (backdrop.CameraPath)
SCREEN_HUES = ((52.0, 68.0), (100.0, 118.0))  # OpenCV hue ranges (0..180): green, blue
SCREEN_SATURATION = (150.0, 255.0)
SCREEN_VALUE = (90.0, 230.0)
SCREEN_GRADIENT = (0.0, 0.35)  # brightness change from the centre to the frame's edge
SCREEN_NOISE = (1.0, 5.0)  # sensor noise sigma, 0..255 scale
# ----- background clutter: distractors that are not people ---------------------------------
CLUTTER_P = 0.5
CLUTTER_SHAPES = (2, 8)  # how many filled shapes (inclusive)
CLUTTER_KINDS = ("ellipse", "rectangle", "line", "polygon")
CLUTTER_SIZE = (0.03, 0.3)  # a shape's radius / side, fraction of the height
PASTE_P = 0.4  # of a cluttered clip: a rectangle pasted from a train background image
PASTE_SIZE = (0.2, 0.6)  # its width and height, fractions of the frame
# ----- background colour (independent of the foreground's) ---------------------------------
BG_BRIGHTNESS = (0.6, 1.4)
BG_CONTRAST = (0.7, 1.3)
BG_SATURATION = (0.6, 1.4)
BG_HUE = (-0.05, 0.05)  # fraction of the colour circle
# ----- foreground geometry: one affine per clip --------------------------------------------
FG_FLIP_P = 0.5
FG_SCALE = (0.7, 1.4)  # log-uniform, about FG_SCALE_CENTRE
FG_SCALE_CENTRE = (0.5, 0.5)  # fractions of width and height
FG_SHIFT = (0.3, 0.15)  # uniform +- fraction of width, height
FG_ROTATION_DEG = (-8.0, 8.0)
# ----- foreground colour -------------------------------------------------------------------
FG_BRIGHTNESS = (0.7, 1.3)
FG_CONTRAST = (0.7, 1.3)
FG_SATURATION = (0.6, 1.4)
FG_PERMUTE_P = 0.5  # a strong colour change: the RGB channels permuted (never the identity)
EMPTY_P = 0.07  # no person: alpha and labels zero for the whole clip
# ----- after compositing -------------------------------------------------------------------
BLUR_P = 0.3
BLUR_KERNELS = (3, 5)
NOISE_P = 0.3
NOISE_SIGMA = (2.0, 10.0)  # Gaussian, 0..255 scale; per frame from (seed, epoch, clip, frame)
GLOBAL_P = 0.5  # a light colour jitter of the whole composite
GLOBAL_BRIGHTNESS = (0.9, 1.1)
GLOBAL_CONTRAST = (0.9, 1.1)
GLOBAL_SATURATION = (0.9, 1.1)

LUMA = (0.299, 0.587, 0.114)  # the grey that saturation moves towards
CONTRAST_PIVOT = 128.0
NOISE_STREAM = 3  # seed-derivation tag of the per-frame noise (the sampler uses 0-2)
_PERMUTATIONS = ((0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


@dataclasses.dataclass(frozen=True)
class Colour:
    """A colour jitter: brightness, contrast, saturation and hue, as one affine map of RGB
    (``matrix``: applied with ``cv2.transform``, a single pass over uint8 pixels)."""

    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0  # fraction of the colour circle

    def matrix(self, permute: tuple[int, ...] = (0, 1, 2)) -> np.ndarray:
        """The 3x4 float32 map ``rgb' = M[:, :3] @ rgb + M[:, 3]`` of, in this order: the
        channel permutation (output channel i = input channel ``permute[i]``), the hue turn
        about the grey axis, saturation (towards or away from luma), then brightness and
        contrast about CONTRAST_PIVOT (as ``recseg.data.augment``'s colour jitter)."""
        return _colour_matrix(self, tuple(permute))


@functools.lru_cache(maxsize=512)
def _colour_matrix(colour: Colour, permute: tuple[int, ...]) -> np.ndarray:
    perm = np.eye(3)[list(permute)]
    angle = 2 * math.pi * colour.hue
    cos, sin, third = math.cos(angle), math.sin(angle) / math.sqrt(3.0), 1.0 / 3.0
    a, b, c = cos + (1 - cos) * third, (1 - cos) * third - sin, (1 - cos) * third + sin
    turn = np.array([[a, b, c], [c, a, b], [b, c, a]])
    sat = colour.saturation * np.eye(3) + (1.0 - colour.saturation) * np.tile(LUMA, (3, 1))
    out = np.zeros((3, 4))
    out[:, :3] = colour.brightness * colour.contrast * sat @ turn @ perm
    out[:, 3] = CONTRAST_PIVOT * (1.0 - colour.contrast)
    out = out.astype(np.float32)
    out.flags.writeable = False  # shared by every caller
    return out


@dataclasses.dataclass(frozen=True)
class Shape:
    """A filled clutter shape at ``at`` (fractions of the image's width and height); every
    length is a fraction of the image's height, so shapes keep their aspect at any size."""

    kind: str  # one of CLUTTER_KINDS
    colour: tuple[int, ...]  # RGB
    at: tuple[float, float]  # ellipse/polygon: centre; rectangle: a corner; line: one end
    extent: tuple[float, ...]  # ellipse: axes; rectangle: (dx, dy); line: (dx, dy, thickness);
    # polygon: (dx, dy) of each corner
    angle: float = 0.0  # degrees (ellipse)


@dataclasses.dataclass(frozen=True)
class Paste:
    """A rectangle of train background image ``image`` pasted onto the background."""

    image: int
    size: tuple[float, float]  # width, height: fractions of the target
    src: tuple[float, float]  # where in the source: fractions of the free range
    dst: tuple[float, float]  # where in the target: fractions of the free range


@dataclasses.dataclass(frozen=True)
class CompositeParams:
    """One clip's composite in one epoch (see the module doc). ``key = (seed, epoch, clip)``
    seeds the per-frame noise; ``matrix`` is the foreground's 2x3 affine (output = M @ input,
    flip included)."""

    key: tuple[int, int, int]
    source: str  # "image", "video" or "screen"
    index: int  # the image or video (-1: a screen)
    camera: CameraPath
    video_start: float  # where in the (looped) video the clip starts, fraction of its length
    screen: tuple[float, ...]  # R, G, B, gradient x, gradient y, noise sigma (a screen only)
    clutter: tuple[Shape, ...]
    paste: Paste | None
    background_colour: Colour
    matrix: tuple[float, ...]
    flip: bool
    foreground_colour: Colour
    permute: tuple[int, int, int]
    empty: bool
    blur: int  # Gaussian kernel, 0: none
    noise: float  # sigma, 0: none
    colour: Colour  # the light global jitter (identity when not drawn)

    def affine(self) -> np.ndarray:
        """The foreground's 2x3 float64 matrix."""
        return np.asarray(self.matrix, np.float64).reshape(2, 3)


def frame_rng(key: tuple[int, int, int], frame: int, stream: int = 0) -> np.random.Generator:
    """The generator of one frame's noise (``stream`` tells a clip's noises apart): a function
    of (seed, epoch, clip, frame) only."""
    seed, epoch, clip = key
    words = [seed & 0xFFFF_FFFF_FFFF_FFFF, epoch, NOISE_STREAM, clip, frame, stream]
    return np.random.default_rng(words)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def _source(rng: np.random.Generator, images: int, videos: int) -> tuple[str, int]:
    u = rng.random()
    if u < SCREEN_P or images + videos == 0:
        return "screen", -1
    if (videos and (u - SCREEN_P) / (1.0 - SCREEN_P) < VIDEO_P) or not images:
        return "video", int(rng.integers(videos))
    return "image", int(rng.integers(images))


def _screen(rng: np.random.Generator) -> tuple[float, ...]:
    lo, hi = SCREEN_HUES[int(rng.integers(len(SCREEN_HUES)))]
    hsv = np.array(
        [[[rng.uniform(lo, hi), _uniform(rng, SCREEN_SATURATION), _uniform(rng, SCREEN_VALUE)]]]
    )
    rgb = cv2.cvtColor(np.rint(hsv).astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
    angle = rng.uniform(0, 2 * math.pi)
    gradient = _uniform(rng, SCREEN_GRADIENT)
    gx, gy = gradient * math.cos(angle), gradient * math.sin(angle)
    return (*(float(c) for c in rgb), gx, gy, _uniform(rng, SCREEN_NOISE))


def _shape(rng: np.random.Generator) -> Shape:
    kind = CLUTTER_KINDS[int(rng.integers(len(CLUTTER_KINDS)))]
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    r = _uniform(rng, CLUTTER_SIZE)
    at = (float(rng.random()), float(rng.random()))
    if kind == "ellipse":
        axes = (r, r * float(rng.uniform(0.3, 2.0)))
        return Shape(kind, colour, at, axes, float(rng.uniform(0, 180)))
    if kind == "rectangle":
        return Shape(kind, colour, at, tuple(float(v) for v in rng.uniform(-2 * r, 2 * r, 2)))
    if kind == "line":
        dx, dy = (float(v) for v in rng.uniform(-1.0, 1.0, 2))
        return Shape(kind, colour, at, (dx, dy, max(r / 3, 0.01)))
    corners = int(rng.integers(3, 7))
    angles = np.sort(rng.uniform(0, 2 * math.pi, corners))
    radii = r * rng.uniform(0.5, 1.5, corners)
    extent = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1).reshape(-1)
    return Shape(kind, colour, at, tuple(float(v) for v in extent))


def _clutter(rng: np.random.Generator, images: int) -> tuple[tuple[Shape, ...], Paste | None]:
    if rng.random() >= CLUTTER_P:
        return (), None
    lo, hi = CLUTTER_SHAPES
    shapes = tuple(_shape(rng) for _ in range(int(rng.integers(lo, hi + 1))))
    if not images or rng.random() >= PASTE_P:
        return shapes, None
    size = (_uniform(rng, PASTE_SIZE), _uniform(rng, PASTE_SIZE))
    src, dst = (
        (float(rng.random()), float(rng.random())),
        (float(rng.random()), float(rng.random())),
    )
    return shapes, Paste(int(rng.integers(images)), size, src, dst)


def _matrix(rng: np.random.Generator, size: tuple[int, int]) -> tuple[bool, tuple[float, ...]]:
    """The foreground's affine: flip, scale and rotate about FG_SCALE_CENTRE, then shift."""
    h, w = size
    flip = bool(rng.random() < FG_FLIP_P)
    scale = math.exp(rng.uniform(math.log(FG_SCALE[0]), math.log(FG_SCALE[1])))
    angle = _uniform(rng, FG_ROTATION_DEG)
    tx = rng.uniform(-FG_SHIFT[0], FG_SHIFT[0]) * w
    ty = rng.uniform(-FG_SHIFT[1], FG_SHIFT[1]) * h
    centre = (FG_SCALE_CENTRE[0] * (w - 1), FG_SCALE_CENTRE[1] * (h - 1))
    m = np.vstack([cv2.getRotationMatrix2D(centre, angle, scale), [0.0, 0.0, 1.0]])
    if flip:  # mirror about the vertical centre line first
        m = m @ np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    m[:2, 2] += (tx, ty)
    return flip, tuple(float(x) for x in m[:2].reshape(-1))


def _colour(rng: np.random.Generator, *ranges: tuple[float, float]) -> Colour:
    return Colour(*(_uniform(rng, r) for r in ranges))


def draw(
    rng: np.random.Generator,
    size: tuple[int, int],
    images: int,
    videos: int,
    key: tuple[int, int, int],
) -> CompositeParams:
    """Draw one clip's composite for frames of ``size`` (H, W) from a store with ``images``
    train background images and ``videos`` background videos (the draws come in a fixed order:
    the same generator state gives the same parameters)."""
    source, index = _source(rng, images, videos)
    camera = CameraPath.draw(rng, CAMERA_MAX_ZOOM)
    video_start = float(rng.random())
    screen = _screen(rng) if source == "screen" else ()
    clutter, paste = _clutter(rng, images)
    background = _colour(rng, BG_BRIGHTNESS, BG_CONTRAST, BG_SATURATION, BG_HUE)
    flip, matrix = _matrix(rng, size)
    foreground = _colour(rng, FG_BRIGHTNESS, FG_CONTRAST, FG_SATURATION)
    permute = (0, 1, 2)
    if rng.random() < FG_PERMUTE_P:
        permute = _PERMUTATIONS[int(rng.integers(len(_PERMUTATIONS)))]
    empty = bool(rng.random() < EMPTY_P)
    blur = int(BLUR_KERNELS[int(rng.integers(len(BLUR_KERNELS)))]) if rng.random() < BLUR_P else 0
    noise = _uniform(rng, NOISE_SIGMA) if rng.random() < NOISE_P else 0.0
    colour = Colour()
    if rng.random() < GLOBAL_P:
        colour = _colour(rng, GLOBAL_BRIGHTNESS, GLOBAL_CONTRAST, GLOBAL_SATURATION)
    return CompositeParams(
        key=key,
        source=source,
        index=index,
        camera=camera,
        video_start=video_start,
        screen=screen,
        clutter=clutter,
        paste=paste,
        background_colour=background,
        matrix=matrix,
        flip=flip,
        foreground_colour=foreground,
        permute=permute,
        empty=empty,
        blur=blur,
        noise=noise,
        colour=colour,
    )


def describe(params: CompositeParams) -> str:
    """A short human-readable summary (for logs)."""
    m = params.affine()
    scale = math.hypot(m[0, 0], m[1, 0])
    parts = [
        f"{params.source}{'' if params.index < 0 else params.index}",
        f"clutter={len(params.clutter)}{'+paste' if params.paste else ''}",
        "empty" if params.empty else f"flip={params.flip} scale={scale:.2f}",
        f"permute={params.permute}" if params.permute != (0, 1, 2) else "",
        f"blur={params.blur}" if params.blur else "",
        f"noise={params.noise:.1f}" if params.noise else "",
    ]
    return " ".join(p for p in parts if p)
