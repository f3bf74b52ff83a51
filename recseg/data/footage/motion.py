"""Skeleton animation: keyframed scripts (walk, wave, turn, enter, leave) and the per-time pose.

An actor's script is a list of keys (time, x, facing, gait amplitude, wave amount); between keys
x and gait change linearly, facing and wave ease in and out. Legs and arms swing with a gait
phase tied to the distance walked, so feet do not slide.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from recseg.data.footage.figure import Limb, Pose
from recseg.data.footage.look import Look, random_look

TAU = 2.0 * math.pi


@dataclass(frozen=True)
class Key:
    """The state of an actor at time ``t`` (seconds of animation time)."""

    t: float
    x: float  # body centre, 1x pixels
    theta: float  # facing, radians (0 = camera, +pi/2 = image right)
    gait: float  # walking amplitude 0-1
    wave: float  # waving amount 0-1


@dataclass
class Actor:
    """A figure: its look, size, ground line, motion style and script."""

    look: Look
    height: float  # 1x pixels
    ground: float  # y of the feet, 1x pixels (larger = nearer the camera)
    stride: float  # pixels walked per gait cycle (two steps)
    swing: float  # arm swing amplitude when walking, radians
    wave_side: int  # 0 waves with the right arm, 1 with the left
    wave_hz: float
    keys: list[Key] = field(default_factory=list)
    kinds: set[str] = field(default_factory=set)

    def key(self, dt: float, **changes: float) -> None:
        """Append a key ``dt`` seconds after the last one, changing only ``changes``."""
        last = self.keys[-1]
        if dt <= 1e-6:
            self.keys[-1] = Key(**{**last.__dict__, **changes})
            return
        self.keys.append(Key(**{**last.__dict__, "t": last.t + dt, **changes}))

    @property
    def now(self) -> float:
        return self.keys[-1].t


def new_actor(
    rng: np.random.Generator, height: float, ground: float, x: float, theta: float
) -> Actor:
    """An actor standing at ``x`` facing ``theta`` at time 0."""
    actor = Actor(
        look=random_look(rng),
        height=height,
        ground=ground,
        stride=height * rng.uniform(0.75, 0.9),
        swing=rng.uniform(0.3, 0.5),
        wave_side=int(rng.integers(2)),
        wave_hz=rng.uniform(1.6, 2.6),
    )
    actor.keys.append(Key(0.0, x, theta, 0.0, 0.0))
    return actor


def walk(actor: Actor, x: float, dt: float, theta: float) -> None:
    """Turn to ``theta`` (briefly), then walk to ``x`` in ``dt`` seconds."""
    last = actor.keys[-1]
    if abs(last.theta - theta) > 0.1:
        turn = min(0.3, dt / 4)
        actor.key(turn, theta=theta, gait=0.0, wave=0.0)
        dt -= turn
    ramp = min(0.25, dt / 3)
    actor.key(ramp, x=last.x + (x - last.x) * ramp / max(dt, 1e-6), gait=1.0, wave=0.0)
    actor.key(dt - ramp, x=x, gait=1.0)
    actor.kinds.add("walk")


def stand(actor: Actor, dt: float, **changes: float) -> None:
    """Stop walking (if walking) and stand for ``dt`` seconds, easing into ``changes``."""
    settle = min(0.25, dt / 3)
    actor.key(settle, gait=0.0)
    actor.key(dt - settle, gait=0.0, **changes)


def wave(actor: Actor, dt: float) -> None:
    """Raise one arm and wave for ``dt`` seconds."""
    ramp = min(0.4, dt / 4)
    stand(actor, ramp, wave=1.0)
    actor.key(dt - 2 * ramp, wave=1.0)
    actor.key(ramp, wave=0.0)
    actor.kinds.add("wave")


def turn_around(actor: Actor, rng: np.random.Generator, dt: float) -> None:
    """Turn a full circle, or half way round and back, in ``dt`` seconds."""
    theta = actor.keys[-1].theta
    if rng.random() < 0.5:
        stand(actor, dt, theta=theta + rng.choice([-1.0, 1.0]) * TAU)
    else:
        back = rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.0) * math.pi
        stand(actor, dt / 2, theta=theta + back)
        stand(actor, dt / 2, theta=theta)
    actor.kinds.add("turn")


def perform(actor: Actor, rng: np.random.Generator, dt: float, first: str | None = None) -> None:
    """Fill ``dt`` seconds standing: face the camera, then wave / turn / idle acts."""
    end = actor.now + dt
    actor.kinds.add("stand")
    face = min(0.5, dt / 4)
    stand(actor, face, theta=float(rng.uniform(-0.45, 0.45)), wave=0.0)
    act = first
    while end - actor.now > 0.05:
        left = end - actor.now
        act = act or str(rng.choice(["wave", "turn", "idle"], p=[0.4, 0.4, 0.2]))
        span = left if left < 2.6 else float(rng.uniform(1.3, min(3.0, left - 1.0)))
        if act == "wave":
            wave(actor, span)
        elif act == "turn":
            turn_around(actor, rng, span)
        else:
            stand(actor, span, theta=float(rng.uniform(-0.6, 0.6)))
        act = None


def state(actor: Actor, t: float) -> tuple[Key, float]:
    """The interpolated key at time ``t`` and the distance walked so far (pixels)."""
    keys, walked = actor.keys, 0.0
    for a, b in itertools.pairwise(keys):
        if t < b.t:
            s = min(max((t - a.t) / max(b.t - a.t, 1e-9), 0.0), 1.0)
            e = s * s * (3.0 - 2.0 * s)
            x = a.x + (b.x - a.x) * s
            key = Key(
                t,
                x,
                a.theta + (b.theta - a.theta) * e,
                a.gait + (b.gait - a.gait) * s,
                a.wave + (b.wave - a.wave) * e,
            )
            return key, walked + abs(x - a.x)
        walked += abs(b.x - a.x)
    return Key(**{**keys[-1].__dict__, "t": t}), walked


def _lerp(a: float, b: float, w: float) -> float:
    return a + (b - a) * w


def pose_at(actor: Actor, t: float) -> Pose:
    """The actor's pose at animation time ``t``."""
    key, walked = state(actor, t)
    p, g = TAU * walked / actor.stride, key.gait
    thigh = g * 0.42 * math.sin(p)
    bend = [g * 0.9 * max(0.0, math.cos(p + k * math.pi)) ** 1.5 + 0.04 for k in (0, 1)]
    legs = (
        Limb(thigh, 0.03, thigh - bend[0], 0.03),
        Limb(-thigh, 0.03, -thigh - bend[1], 0.03),
    )
    breathe = 0.02 * math.sin(TAU * 0.3 * t)
    arms = []
    for k, sign in ((0, -1.0), (1, 1.0)):
        swing = sign * g * actor.swing * math.sin(p)
        elbow = 0.12 + 0.25 * g * max(0.0, swing)
        limb = Limb(swing, 0.12 + breathe, swing + elbow, 0.1 + breathe)
        w = key.wave if k == actor.wave_side else 0.0
        if w > 0:
            flap = 2.75 + 0.35 * math.sin(TAU * actor.wave_hz * t)
            limb = Limb(
                _lerp(limb.swing, 0.15, w),
                _lerp(limb.spread, 1.95, w),
                _lerp(limb.swing2, 0.1, w),
                _lerp(limb.spread2, flap, w),
            )
        arms.append(limb)
    return Pose(key.x, actor.ground, actor.height, key.theta, (arms[0], arms[1]), legs)
