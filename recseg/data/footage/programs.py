"""What happens in a video: a program picks actors and scripts their motion.

Programs: ``walk-through`` (enter one side, maybe stop to wave or turn, leave the other),
``wave``, ``turn``, ``enter-stay-leave`` (enter, perform, leave the same way) and ``pair``
(two figures: one performs in front, one walks through behind). ``walk-through`` and
``enter-stay-leave`` start and end with an empty frame.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from recseg.data.footage.motion import Actor, new_actor, perform, stand, walk

# Any three consecutive programs (cyclically) include one that starts and ends empty.
PROGRAMS = ("walk-through", "wave", "enter-stay-leave", "turn", "pair")
EMPTY_ENDS = ("walk-through", "enter-stay-leave")


def _margin(height: float) -> float:
    """How far off-frame a figure's centre must be for no part of it to show."""
    return 0.34 * height


def _walker(
    rng: np.random.Generator, shape: tuple[int, int], scale: tuple, ground: float
) -> tuple[Actor, float]:
    """A new actor standing off-frame on a random side; returns (actor, direction, out-x)."""
    h, w = shape
    height = h * rng.uniform(*scale)
    direction = 1.0 if rng.random() < 0.5 else -1.0
    start = -_margin(height) if direction > 0 else w + _margin(height)
    theta = direction * rng.uniform(1.25, math.pi / 2)
    return new_actor(rng, height, h * ground, start, theta), direction


def walk_through(
    rng: np.random.Generator, shape: tuple[int, int], seconds: float, **kw: Any
) -> Actor:
    """Enter from one side, cross (stopping to perform when there is time), leave the other."""
    scale, ground = kw.get("scale", (0.68, 0.86)), kw.get("ground", rng.uniform(0.93, 0.97))
    actor, direction = _walker(rng, shape, scale, ground)
    width = shape[1]
    start = actor.keys[0].x
    end = width + _margin(actor.height) if direction > 0 else -_margin(actor.height)
    theta = actor.keys[0].theta
    speed = actor.height * rng.uniform(0.6, 0.9)
    lead, budget = 0.03 * seconds, 0.9 * seconds
    walking = abs(end - start) / speed
    stand(actor, lead)
    if budget - walking < 1.5 or kw.get("straight", False):
        walk(actor, end, max(budget - lead, 1e-3), theta)
    else:
        middle = width * rng.uniform(0.35, 0.65)
        walk(actor, middle, abs(middle - start) / speed, theta)
        perform(actor, rng, budget - walking - lead)
        walk(actor, end, abs(end - middle) / speed, theta)
    actor.kinds |= {"enter", "exit"}
    return actor


def enter_stay_leave(rng: np.random.Generator, shape: tuple[int, int], seconds: float) -> Actor:
    """Walk in, perform near the middle, walk back out the way it came."""
    actor, _ = _walker(rng, shape, (0.7, 0.88), rng.uniform(0.93, 0.97))
    start, theta = actor.keys[0].x, actor.keys[0].theta
    middle = shape[1] * rng.uniform(0.35, 0.65)
    speed = actor.height * rng.uniform(0.6, 0.9)
    walking = 2 * abs(middle - start) / speed
    lead = 0.03 * seconds
    walking = min(walking, 0.65 * seconds)
    stand(actor, lead)
    walk(actor, middle, walking / 2, theta)
    perform(actor, rng, 0.9 * seconds - walking - lead)
    walk(actor, start, walking / 2, -theta)
    actor.kinds |= {"enter", "exit"}
    return actor


def standing(
    rng: np.random.Generator, shape: tuple[int, int], seconds: float, first: str, **kw: Any
) -> Actor:
    """Stand in frame the whole time, starting with ``first`` (``wave`` or ``turn``)."""
    h, w = shape
    height = h * rng.uniform(*kw.get("scale", (0.7, 0.88)))
    ground = h * kw.get("ground", rng.uniform(0.93, 0.97))
    x = w * rng.uniform(*kw.get("xs", (0.3, 0.7)))
    actor = new_actor(rng, height, ground, x, float(rng.uniform(-0.5, 0.5)))
    stand(actor, 0.08 * seconds)
    perform(actor, rng, 0.9 * seconds, first=first)
    return actor


def plan(
    program: str, rng: np.random.Generator, shape: tuple[int, int], seconds: float
) -> list[Actor]:
    """The actors of ``program``, farthest first."""
    if program == "walk-through":
        return [walk_through(rng, shape, seconds)]
    if program == "enter-stay-leave":
        return [enter_stay_leave(rng, shape, seconds)]
    if program in ("wave", "turn"):
        return [standing(rng, shape, seconds, program)]
    side = (0.22, 0.4) if rng.random() < 0.5 else (0.6, 0.78)
    front = standing(rng, shape, seconds, str(rng.choice(["wave", "turn"])), xs=side)
    back = walk_through(
        rng, shape, seconds, scale=(0.56, 0.66), ground=rng.uniform(0.83, 0.87), straight=True
    )
    return [back, front]
