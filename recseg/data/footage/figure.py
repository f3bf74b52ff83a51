"""A people-like figure: a 3-D stick skeleton posed by joint angles, projected orthographically
and painted as shaded, anti-aliased body parts (rendered at 2x, then area-downsampled).

Units: the skeleton lives in figure heights (feet at 0, top of the head at 1; x right, y up,
z toward the camera); the picture lives in 1x frame pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from recseg.data.footage.look import Colour, Look

SUPERSAMPLE = 2
_SHIFT = 3  # cv2 drawing with 1/8-pixel precision
Vec = np.ndarray

# Part labels (index into a per-figure palette); STRIPE is painted after shading.
(TORSO, NECK, HEAD, HAIR, HAIR_BACK, ARM_R, ARM_L, FOREARM_R, FOREARM_L, HAND_R, HAND_L) = range(
    1, 12
)
(THIGH_R, THIGH_L, SHIN_R, SHIN_L, FOOT_R, FOOT_L, BELT, EYES, SKIRT, STRIPE, PELVIS) = range(
    12, 23
)
N_LABELS = 23
_RADIUS = {  # a part's half-width in figure heights: the distance over which shading rises
    TORSO: 0.09, NECK: 0.022, HEAD: 0.05, HAIR: 0.05, HAIR_BACK: 0.06, ARM_R: 0.028,
    ARM_L: 0.028, FOREARM_R: 0.022, FOREARM_L: 0.022, HAND_R: 0.025, HAND_L: 0.025,
    THIGH_R: 0.045, THIGH_L: 0.045, SHIN_R: 0.032, SHIN_L: 0.032, FOOT_R: 0.02, FOOT_L: 0.02,
    BELT: 0.012, EYES: 0.006, SKIRT: 0.08, STRIPE: 0.09, PELVIS: 0.07,
}  # fmt: skip
# Torso outline: (height, lateral half-width, depth half-width) in figure heights, top down.
_TORSO_LEVELS = (
    (0.832, 0.035, 0.035),
    (0.808, 0.105, 0.055),
    (0.785, 0.118, 0.06),
    (0.72, 0.105, 0.07),
    (0.615, 0.087, 0.056),
    (0.53, 0.095, 0.06),
)


@dataclass(frozen=True)
class Limb:
    """Angles (radians) of a two-segment limb: the upper segment's forward swing and outward
    spread, and the lower segment's (absolute, not relative to the upper one)."""

    swing: float = 0.0
    spread: float = 0.0
    swing2: float = 0.0
    spread2: float = 0.0


@dataclass(frozen=True)
class Pose:
    """Where a figure stands (1x pixels), how tall it is, where it faces and its limb angles.
    ``theta`` 0 faces the camera, +pi/2 faces image right. Limbs are (right, left)."""

    x: float
    ground: float
    height: float
    theta: float
    arms: tuple[Limb, Limb]
    legs: tuple[Limb, Limb]


@dataclass(frozen=True)
class Layer:
    """A rendered figure at 1x: premultiplied BGR colour and coverage in a box at (y0, x0)."""

    y0: int
    x0: int
    colour: np.ndarray  # (h, w, 3) float32, premultiplied by alpha
    alpha: np.ndarray  # (h, w) float32 coverage in [0, 1]


def palette(look: Look) -> np.ndarray:
    """Colour (BGR float32) of every part label of ``look``."""
    lower_leg = look.trousers if look.lower == "trousers" else look.skin
    thigh = look.skin if look.lower == "skirt" else look.trousers
    belt = tuple(0.45 * c for c in look.shoes)
    table: dict[int, Colour] = {
        TORSO: look.shirt, NECK: look.skin, HEAD: look.skin, HAIR: look.hair,
        HAIR_BACK: look.hair, ARM_R: look.shirt, ARM_L: look.shirt,
        FOREARM_R: look.shirt if look.long_sleeves else look.skin,
        FOREARM_L: look.shirt if look.long_sleeves else look.skin,
        HAND_R: look.skin, HAND_L: look.skin, THIGH_R: thigh, THIGH_L: thigh,
        SHIN_R: lower_leg, SHIN_L: lower_leg, FOOT_R: look.shoes, FOOT_L: look.shoes,
        BELT: belt, EYES: look.eyes, SKIRT: look.trousers, STRIPE: look.stripe or look.shirt,
        PELVIS: look.trousers,
    }  # fmt: skip
    out = np.zeros((N_LABELS, 3), np.float32)
    for label, colour in table.items():
        out[label] = colour
    return out


def _direction(limb_swing: float, spread: float, side: float, f: Vec, r: Vec) -> Vec:
    """Unit direction of a limb segment: down, swung forward by ``swing``, out by ``spread``."""
    down = np.array([0.0, -1.0, 0.0])
    sagittal = math.cos(limb_swing) * down + math.sin(limb_swing) * f
    return math.cos(spread) * sagittal + math.sin(spread) * side * r


def skeleton(pose: Pose, build: float) -> dict[str, Vec]:
    """3-D joints (figure heights) of ``pose``; the lower ankle rests on the ground."""
    f = np.array([math.sin(pose.theta), 0.0, math.cos(pose.theta)])
    r = np.array([-math.cos(pose.theta), 0.0, math.sin(pose.theta)])
    up = np.array([0.0, 1.0, 0.0])
    pelvis = np.array([0.0, 0.52, 0.0])
    joints: dict[str, Vec] = {"pelvis": pelvis, "neck": pelvis + 0.31 * up}
    lengths = {"arm": (0.18, 0.155), "leg": (0.24, 0.245)}
    for kind, limbs, root, spacing in (
        ("arm", pose.arms, joints["neck"] - 0.025 * up, 0.105 * build),
        ("leg", pose.legs, pelvis, 0.055 * build),
    ):
        for side_name, side, limb in (("r", 1.0, limbs[0]), ("l", -1.0, limbs[1])):
            top = root + side * spacing * r
            mid = top + lengths[kind][0] * _direction(limb.swing, limb.spread, side, f, r)
            end = mid + lengths[kind][1] * _direction(limb.swing2, limb.spread2, side, f, r)
            joints[f"{kind}0{side_name}"], joints[f"{kind}1{side_name}"] = top, mid
            joints[f"{kind}2{side_name}"] = end
    lift = 0.035 - min(joints["leg2r"][1], joints["leg2l"][1])
    joints = {k: v + lift * up for k, v in joints.items()}
    joints["head"] = joints["neck"] + 0.094 * up + 0.012 * f
    joints["f"], joints["r"] = f, r  # the facing and right-hand directions, for the painter
    return joints


class _Parts:
    """Collects paintable parts (depth, label, primitive) in 1x pixel coordinates."""

    def __init__(self, pose: Pose) -> None:
        self.pose = pose
        self.items: list[tuple[float, int, str, tuple]] = []

    def px(self, p: Vec) -> tuple[float, float]:
        """Project a 3-D joint to 1x pixels."""
        return (self.pose.x + p[0] * self.pose.height, self.pose.ground - p[1] * self.pose.height)

    def capsule(self, z: float, label: int, a: Vec, b: Vec, ra: float, rb: float) -> None:
        h = self.pose.height
        self.items.append((z, label, "capsule", (self.px(a), self.px(b), ra * h, rb * h)))

    def ellipse(
        self, z: float, label: int, c: Vec, axes: tuple[float, float], arc: tuple = (0, 360)
    ) -> None:
        h = self.pose.height
        self.items.append((z, label, "ellipse", (self.px(c), (axes[0] * h, axes[1] * h), arc)))

    def poly(self, z: float, label: int, points: list[tuple[float, float]]) -> None:
        """A polygon given as (x, y) offsets in figure heights from the pose's root."""
        h = self.pose.height
        pts = [(self.pose.x + x * h, self.pose.ground - y * h) for x, y in points]
        self.items.append((z, label, "poly", (pts,)))


def _torso(parts: _Parts, j: dict[str, Vec], build: float, look: Look) -> None:
    """Shirt (torso outline narrowing as the figure turns), pelvis, belt and skirt."""
    c, s = math.cos(parts.pose.theta), math.sin(parts.pose.theta)
    cx, lift = j["pelvis"][0], j["pelvis"][1] - 0.52
    half = [(y + lift, math.hypot(a * build * c, d * s)) for y, a, d in _TORSO_LEVELS]
    outline = [(cx - w, y) for y, w in half] + [(cx + w, y) for y, w in reversed(half)]
    parts.poly(0.0, TORSO, outline)
    w_hip = half[-1][1]
    hip = [(cx - w_hip, 0.56 + lift), (cx + w_hip, 0.56 + lift)]
    parts.poly(
        -0.001, PELVIS, [*hip, (cx + 0.8 * w_hip, 0.46 + lift), (cx - 0.8 * w_hip, 0.46 + lift)]
    )
    if look.lower != "skirt":
        band = [(cx - w_hip, 0.555 + lift), (cx + w_hip, 0.555 + lift)]
        parts.poly(0.0005, BELT, [*band, (cx + w_hip, 0.53 + lift), (cx - w_hip, 0.53 + lift)])
        return
    knees = [j["leg1r"][0], j["leg1l"][0]]
    lo, hi = min(cx - 1.45 * w_hip, min(knees) - 0.05), max(cx + 1.45 * w_hip, max(knees) + 0.05)
    z = max(j["leg1r"][2], j["leg1l"][2], 0.0) + 0.001
    parts.poly(z, SKIRT, [*hip, (hi, 0.31 + lift), (lo, 0.31 + lift)])


def _limbs(parts: _Parts, j: dict[str, Vec], build: float) -> None:
    """Arms, hands, legs and feet, each at its own depth."""
    f = j["f"]
    for side, bias in (("r", 0), ("l", 1)):
        a0, a1, a2 = j[f"arm0{side}"], j[f"arm1{side}"], j[f"arm2{side}"]
        z_arm = float((a1[2] + a2[2]) / 2)
        parts.capsule(z_arm, ARM_R + bias, a0, a1, 0.033 * build, 0.026)
        parts.capsule(z_arm + 1e-4, FOREARM_R + bias, a1, a2, 0.023, 0.019)
        hand = a2 + 0.018 * (a2 - a1) / (np.linalg.norm(a2 - a1) + 1e-9)
        parts.ellipse(z_arm + 2e-4, HAND_R + bias, hand, (0.024, 0.027))
        l0, l1, l2 = j[f"leg0{side}"], j[f"leg1{side}"], j[f"leg2{side}"]
        z_leg = float((l0[2] + l1[2] + l2[2]) / 3) - 0.02
        parts.capsule(z_leg, THIGH_R + bias, l0, l1, 0.052 * build, 0.037)
        parts.capsule(z_leg + 1e-4, SHIN_R + bias, l1, l2, 0.035, 0.026)
        toe = l2 + np.array([0.0, -0.017, 0.0]) + 0.03 * f
        length = 0.022 + 0.032 * abs(float(f[0]))
        parts.ellipse(z_leg + 2e-4, FOOT_R + bias, toe, (length, 0.02))


def _head(parts: _Parts, j: dict[str, Vec], look: Look) -> None:
    """Neck, head, hair (cap, and long hair behind or in front) and eyes."""
    c, s = math.cos(parts.pose.theta), math.sin(parts.pose.theta)
    head, f, r = j["head"], j["f"], j["r"]
    parts.capsule(0.001, NECK, j["neck"] - np.array([0, 0.02, 0]), head, 0.026, 0.026)
    rx, ry = 0.05 * (0.93 + 0.1 * abs(s)), 0.064
    parts.ellipse(0.002, HEAD, head, (rx, ry))
    back = head - 0.012 * f
    if look.hair_style == "long":
        parts.ellipse(-0.09 * c, HAIR_BACK, back - np.array([0, 0.05, 0]), (rx * 1.2, ry * 1.45))
    cap = {"short": (1.07, 0.95, 200.0), "long": (1.1, 0.97, 210.0), "buzz": (1.02, 0.92, 170.0)}
    sx, sy, span = cap[look.hair_style]
    span += (360.0 - span) * min(max((0.35 - c) / 0.8, 0.0), 1.0)  # facing away: all hair
    mid = 270.0 - 55.0 * s
    if span > 320.0:
        span, mid = 360.0, 180.0
    parts.ellipse(
        0.003,
        HAIR,
        back + np.array([0, 0.008, 0]),
        (rx * sx, ry * sy),
        (mid - span / 2, mid + span / 2),
    )
    for side in (1.0, -1.0):
        eye = head + 0.045 * f + side * 0.019 * r + np.array([0.0, -0.004, 0.0])
        if eye[2] - head[2] > 0.02:
            parts.ellipse(0.004, EYES, eye, (0.0075, 0.0055))


def body_parts(look: Look, pose: Pose) -> list[tuple[float, int, str, tuple]]:
    """Every paintable part of ``look`` in ``pose``, back to front."""
    j = skeleton(pose, look.build)
    parts = _Parts(pose)
    _torso(parts, j, look.build, look)
    _limbs(parts, j, look.build)
    _head(parts, j, look)
    return [item[1:] for item in sorted(parts.items, key=lambda it: it[0])]


def bounds(items: list, shape: tuple[int, int] | None) -> tuple[int, int, int, int] | None:
    """The 1x box (y0, x0, y1, x1) holding every part, clipped to a frame of ``shape`` (not
    clipped when None); None when nothing is in frame."""
    xs: list[float] = []
    ys: list[float] = []
    for _, kind, geo in items:
        if kind == "capsule":
            (ax, ay), (bx, by), ra, rb = geo
            pad = max(ra, rb)
            xs += [ax - pad, ax + pad, bx - pad, bx + pad]
            ys += [ay - pad, ay + pad, by - pad, by + pad]
        elif kind == "ellipse":
            (cx, cy), (ex, ey), _ = geo
            xs += [cx - ex, cx + ex]
            ys += [cy - ey, cy + ey]
        else:
            xs += [p[0] for p in geo[0]]
            ys += [p[1] for p in geo[0]]
    x0, y0 = math.floor(min(xs)) - 2, math.floor(min(ys)) - 2
    x1, y1 = math.ceil(max(xs)) + 2, math.ceil(max(ys)) + 2
    if shape is not None:
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])
    return (y0, x0, y1, x1) if x1 > x0 and y1 > y0 else None


def _paint(items: list, box: tuple[int, int, int, int]) -> np.ndarray:
    """A 2x label image of the box: each part painted over those behind it (no anti-aliasing;
    coverage comes from area-downsampling)."""
    y0, x0, y1, x1 = box
    ss, unit = SUPERSAMPLE, float(1 << _SHIFT)
    labels = np.zeros(((y1 - y0) * ss, (x1 - x0) * ss), np.uint8)

    def pt(
        p: tuple[float, float],
    ) -> np.ndarray:  # 1x frame coords -> 2x box coords (pixel centres)
        return np.array([(p[0] - x0) * ss - 0.5, (p[1] - y0) * ss - 0.5])

    def fixed(v: np.ndarray) -> np.ndarray:
        return np.round(v * unit).astype(np.int32)

    for label, kind, geo in items:
        colour = int(label)
        if kind == "poly":
            pts = np.array([pt(p) for p in geo[0]])
            cv2.fillPoly(labels, [fixed(pts)], colour, cv2.LINE_8, _SHIFT)
        elif kind == "ellipse":
            (c, axes, (start, end)) = geo
            ax = (max(round(axes[0] * ss * unit), 1), max(round(axes[1] * ss * unit), 1))
            centre = tuple(int(v) for v in fixed(pt(c)))
            cv2.ellipse(labels, centre, ax, 0, start, end, colour, -1, cv2.LINE_8, _SHIFT)
        else:
            a, b, ra, rb = pt(geo[0]), pt(geo[1]), geo[2] * ss, geo[3] * ss
            d = b - a
            length = float(np.hypot(*d))
            if length > 1e-6:
                n = np.array([-d[1], d[0]]) / length
                quad = np.array([a + n * ra, b + n * rb, b - n * rb, a - n * ra])
                cv2.fillConvexPoly(labels, fixed(quad), colour, cv2.LINE_8, _SHIFT)
            for p, rad in ((a, ra), (b, rb)):
                centre = tuple(int(v) for v in fixed(p))
                cv2.circle(
                    labels, centre, max(round(rad * unit), 1), colour, -1, cv2.LINE_8, _SHIFT
                )
    return labels


def _shade(labels: np.ndarray, look: Look, pose: Pose, box: tuple, light: float) -> np.ndarray:
    """Colour a 2x label image: parts darken toward their outlines (rounded look), a key light
    from one side, and horizontal stripes on striped shirts."""
    ss, h = SUPERSAMPLE, pose.height
    edge = np.zeros(labels.shape, bool)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    dist = cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, 3)
    inv_radius = np.ones(N_LABELS, np.float32)
    for label, radius in _RADIUS.items():
        inv_radius[label] = 1.0 / max(radius * h * ss, 1.0)
    t = np.minimum(dist * inv_radius[labels], 1.0)
    shade = 0.78 + 0.22 * t * (2.0 - t)
    y0, x0 = box[0], box[1]
    xs = (np.arange(labels.shape[1], dtype=np.float32) / ss + x0 - pose.x) / (0.15 * h)
    shade *= 1.0 + light * np.clip(xs, -1.0, 1.0)[None, :]
    painted = labels
    if look.stripe is not None:
        ys = (pose.ground - (np.arange(labels.shape[0]) / ss + y0)) / (look.stripe_period * h)
        rows = (ys % 1.0 < 0.5)[:, None]
        painted = np.where(rows & (labels == TORSO), np.uint8(STRIPE), labels)
    return palette(look)[painted] * shade[..., None]


def render_figure(
    look: Look, pose: Pose, shape: tuple[int, int], light: float = 0.1
) -> Layer | None:
    """Render ``look`` in ``pose`` into a frame of ``shape`` (H, W); None when off-frame.
    ``light`` is the strength and side (sign) of the key light."""
    items = body_parts(look, pose)
    box = bounds(items, shape)
    if box is None:
        return None
    labels = _paint(items, box)
    colour = _shade(labels, look, pose, box, light)
    size = (box[3] - box[1], box[2] - box[0])
    alpha = cv2.resize((labels > 0).astype(np.float32), size, interpolation=cv2.INTER_AREA)
    colour = cv2.resize(colour, size, interpolation=cv2.INTER_AREA)
    return Layer(box[0], box[1], colour, alpha)
