"""One video's plan (screen, actors, events, timing) and the rendering of its frames."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recseg.data.footage import events as ev
from recseg.data.footage.figure import Layer, body_parts, bounds, render_figure
from recseg.data.footage.motion import Actor, pose_at
from recseg.data.footage.programs import plan
from recseg.data.footage.scene import (
    Screen,
    SensorNoise,
    composite,
    coverage,
    make_screen,
    shadowed_plate,
    to_uint8,
)

VISIBLE = 0.3  # a figure counts as in frame when this much of its box is inside


@dataclass
class VideoPlan:
    """Everything needed to render a video's frames, fixed before the first frame."""

    program: str
    shape: tuple[int, int]
    fps: float
    screen: Screen
    actors: list[Actor]
    times: np.ndarray  # animation time of each frame (seconds)
    events: list[ev.Event]

    @property
    def frames(self) -> int:
        return len(self.times)

    def event_at(self, i: int) -> ev.Event | None:
        return next((e for e in self.events if e.start <= i < e.start + e.length), None)

    def codes(self) -> np.ndarray:
        """Event code of every frame (uint8)."""
        out = np.zeros(self.frames, np.uint8)
        for e in self.events:
            out[e.start : e.start + e.length] = e.kind
        return out


def visible_boxes(actors: list[Actor], t: float, shape: tuple[int, int]) -> list[ev.Box]:
    """In-frame boxes (1x) of the actors that are mostly in frame at time ``t``."""
    boxes = []
    for actor in actors:
        parts = body_parts(actor.look, pose_at(actor, t))
        full, box = bounds(parts, None), bounds(parts, shape)
        if box is None or full is None:
            continue
        area = (box[2] - box[0]) * (box[3] - box[1])
        if area >= VISIBLE * (full[2] - full[0]) * (full[3] - full[1]):
            boxes.append(box)
    return boxes


def make_plan(
    rng: np.random.Generator, program: str, shape: tuple, fps: float, n: int, hard: bool
) -> VideoPlan:
    """Screen, actors, timing and (with ``hard``) events of one video."""
    screen = make_screen(rng, shape)
    blur = ev.blur_event(rng, n) if hard else None
    times = ev.animation_times(n, fps, blur)
    actors = plan(program, rng, shape, float(times[-1]) + 1.0 / fps)
    events: list[ev.Event] = []
    if hard:
        boxes = [visible_boxes(actors, float(t), shape) for t in times]
        events = ev.schedule(rng, n, blur, boxes, shape)
    return VideoPlan(program, shape, fps, screen, actors, times, events)


def _layers(vp: VideoPlan, t: float) -> tuple[list[Layer], list[tuple]]:
    """The figures' layers at time ``t`` (back to front) and their feet for contact shadows."""
    layers, feet = [], []
    for actor in sorted(vp.actors, key=lambda a: a.ground):
        pose = pose_at(actor, t)
        layer = render_figure(actor.look, pose, vp.shape, vp.screen.light)
        if layer is not None:
            layers.append(layer)
            feet.append((pose.x, pose.ground, pose.height))
    return layers, feet


def _studio(vp: VideoPlan, t: float) -> tuple[np.ndarray, np.ndarray]:
    """The clean (noise-free) picture at time ``t`` and the figures' union coverage."""
    layers, feet = _layers(vp, t)
    alpha = coverage(layers, vp.shape)
    plate = shadowed_plate(vp.screen, alpha, feet)
    return composite(plate, layers, alpha, vp.screen), alpha


def render_frame(
    vp: VideoPlan, i: int, noise: SensorNoise, previous: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``i`` as BGR uint8 and its truth mask (figure coverage > 0.5, amodal);
    ``previous`` is frame ``i - 1`` (for frozen and garbled frames)."""
    t = float(vp.times[i])
    event = vp.event_at(i)
    frame, alpha = _studio(vp, t)
    mask = alpha > 0.5
    if event is not None and event.kind == ev.BLUR:
        span = 0.9 * ev.BLUR_SPEED / vp.fps
        for offset in np.linspace(-span / 2, span / 2, ev.BLUR_SAMPLES):
            if offset != 0:
                frame += _studio(vp, t + float(offset))[0]
        frame /= ev.BLUR_SAMPLES
    if event is not None and event.kind == ev.OCCLUDED:
        ev.draw_board(frame, event.params, i - event.start)
    frame = noise.add(frame)
    if event is not None and event.kind in (ev.BURST, ev.DROPPED):
        frame = ev.corrupt(frame, event, previous, noise.rng)
    return to_uint8(frame), mask
