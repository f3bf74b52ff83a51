"""``--hard`` events that memory can resolve but a single frame cannot: full occlusions by a
passing board, flash and noise bursts, dropped or corrupt frames, and motion blur."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recseg.data.footage.look import hsv_to_bgr

NORMAL, OCCLUDED, BURST, DROPPED, BLUR = range(5)
EVENT_NAMES = {NORMAL: "normal", OCCLUDED: "occluded", BURST: "burst", DROPPED: "dropped"}
EVENT_NAMES[BLUR] = "motion-blur"
BLUR_SPEED = 3.0  # animation runs this much faster during a motion-blur event
BLUR_SAMPLES = 7  # sub-frame renders averaged per blurred frame
Box = tuple[int, int, int, int]  # (y0, x0, y1, x1), 1x pixels


@dataclass(frozen=True)
class Event:
    """``length`` frames from ``start`` of one kind; ``detail`` says which variant."""

    kind: int
    start: int
    length: int
    detail: str
    params: dict = field(default_factory=dict, compare=False)

    def frames(self) -> range:
        return range(self.start, self.start + self.length)

    def summary(self) -> dict:
        """The event as footage.json records it."""
        name = EVENT_NAMES[self.kind]
        return {
            "kind": self.kind,
            "name": name,
            "detail": self.detail,
            "start": self.start,
            "frames": self.length,
        }


def _free(taken: np.ndarray, start: int, length: int) -> bool:
    """True when frames [start-1, start+length] are all unclaimed (one normal frame around)."""
    lo, hi = max(start - 1, 0), min(start + length + 1, len(taken))
    return start >= 1 and start + length < len(taken) and not taken[lo:hi].any()


def blur_event(rng: np.random.Generator, n: int) -> Event | None:
    """A motion-blur window in the middle of the video, or None if the video is too short."""
    if n < 12:
        return None
    length = int(rng.integers(4, 9)) if n >= 40 else 3
    start = int(rng.integers(int(0.3 * n), max(int(0.55 * n) - length, int(0.3 * n)) + 1))
    return Event(BLUR, start, length, "fast motion")


def animation_times(n: int, fps: float, blur: Event | None) -> np.ndarray:
    """Animation time of every frame: real time, except faster through the blur window."""
    speed = np.ones(n)
    if blur is not None:
        speed[blur.start : blur.start + blur.length] = BLUR_SPEED
    steps = np.concatenate([[0.0], speed[1:]]) / fps
    return np.cumsum(steps)


def _place(rng: np.random.Generator, taken: np.ndarray, length: int, ok: np.ndarray) -> int | None:
    """A random start where ``length`` frames are free and all ``ok``; None if none is."""
    starts = [
        s
        for s in range(1, len(taken) - length)
        if _free(taken, s, length) and ok[s : s + length].all()
    ]
    return int(rng.choice(starts)) if starts else None


def _board(rng: np.random.Generator, boxes: list[Box], k: int, shape: tuple[int, int]) -> dict:
    """A non-green board sweeping across in ``k`` frames: it hides every box in all but the
    first and last of them, where it enters and leaves."""
    h, w = shape
    x0, x1 = min(b[1] for b in boxes), max(b[3] for b in boxes)
    top = min(b[0] for b in boxes)
    margin = 0.04 * w
    speed = (x1 - x0) / 2 + margin
    width = (x1 - x0) + 2 * margin + speed * max(k - 3, 0)
    left1 = x0 - margin - speed * max(k - 3, 0)
    direction = 1.0 if rng.random() < 0.5 else -1.0
    lefts = [left1 + speed * (j - 1) for j in range(k)]
    if direction < 0:  # mirror the sweep: right to left
        lefts = [x0 + x1 - (left + width) for left in lefts]
    hue = float(rng.choice([rng.uniform(8, 20), rng.uniform(105, 120), rng.uniform(0, 5)]))
    sat = 0.05 if rng.random() < 0.25 else rng.uniform(0.35, 0.65)
    colour = hsv_to_bgr(hue, sat, rng.uniform(0.35, 0.75))
    grain = rng.uniform(0.02, 0.06) * h
    return {
        "lefts": lefts,
        "width": width,
        "top": top * rng.uniform(0.0, 0.6),
        "colour": colour,
        "grain": grain,
    }


def _try_place(
    rng: np.random.Generator, taken: np.ndarray, wishes: list[tuple], visible: np.ndarray
) -> list[tuple[int, int, int, str]]:
    """Place each wish (kind, length, shortest, detail) at random free frames, shortening it
    when it does not fit; occlusions only where a figure is in frame."""
    taken = taken.copy()
    placed = []
    for kind, length, shortest, detail in wishes:
        ok = visible if kind == OCCLUDED else np.ones(len(taken), bool)
        for size in sorted({length, shortest}, reverse=True):
            start = _place(rng, taken, size, ok)
            if start is not None:
                taken[start : start + size] = True
                placed.append((kind, start, size, detail))
                break
    return placed


def schedule(
    rng: np.random.Generator, n: int, blur: Event | None, boxes: list[list[Box]], shape
) -> list[Event]:
    """Every hard event of a video: the blur window plus an occlusion (while a figure is in
    frame), a dropped frame, a flash burst and a noise burst, as many as fit."""
    taken = np.zeros(n, bool)
    if blur:
        taken[blur.start : blur.start + blur.length] = True
    visible = np.array([bool(b) for b in boxes])
    longest = (int(np.clip(n // 8, 3, 8)), int(np.clip(n // 40, 1, 2)), int(np.clip(n // 20, 1, 3)))
    wishes = [
        (OCCLUDED, int(rng.integers(3, longest[0] + 1)), 3, "board"),
        (
            DROPPED,
            int(rng.integers(1, longest[1] + 1)),
            1,
            str(rng.choice(["black", "frozen", "garbled"])),
        ),
        (BURST, int(rng.integers(1, longest[2] + 1)), 1, "flash"),
        (BURST, int(rng.integers(1, longest[2] + 1)), 1, "noise"),
    ]
    placed: list[tuple[int, int, int, str]] = []
    for _ in range(20):  # random placements can block each other: keep the fullest of a few
        attempt = _try_place(rng, taken, wishes, visible)
        placed = max(placed, attempt, key=len)
        if len(placed) == len(wishes):
            break
    events = [blur] if blur else []
    for kind, start, length, detail in placed:
        params = {}
        if kind == OCCLUDED:
            window = [box for i in range(start, start + length) for box in boxes[i]]
            params = _board(rng, window, length, shape)
        events.append(Event(kind, start, length, detail, params))
    return sorted(events, key=lambda e: e.start)


def draw_board(frame: np.ndarray, params: dict, j: int) -> None:
    """Paint the occluding board of frame ``j`` of its event onto ``frame`` (in place); its
    edges are anti-aliased by exact pixel coverage."""
    h, w = frame.shape[:2]
    left, top = params["lefts"][j], params["top"]
    right = left + params["width"]
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)[:, None]
    cover = np.clip(np.minimum(xs + 1, right) - np.maximum(xs, left), 0, 1)[None, :]
    cover = cover * np.clip(ys + 1 - top, 0, 1)
    u = (xs - left)[None, :]
    grain = params["grain"]
    wood = 1.0 + 0.07 * np.sin(2 * np.pi * u / grain + 1.5 * np.sin(ys / (4 * grain)))
    light = 0.8 + 0.25 * np.clip(u / max(params["width"], 1.0), 0, 1) - 0.1 * ys / h
    board = np.asarray(params["colour"], np.float32) * (wood * light)[..., None]
    frame *= 1.0 - cover[..., None]
    frame += board * cover[..., None]


def _garble(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A decoding error: from some block row on, rows smear sideways with swapped colour
    channels, and scattered blocks turn to flat garbage."""
    h, w = frame.shape[:2]
    out = frame.copy()
    block = max(8, (min(h, w) // 24) // 8 * 8)
    first = int(rng.integers(0, max(h // block // 2, 1))) * block
    for y in range(first, h, block):
        out[y : y + block] = np.roll(frame[y : y + block], int(rng.integers(-w // 4, w // 4)), 1)
    out[first:] = out[first:, :, rng.permutation(3)]
    for _ in range(int(rng.integers(4, 16))):
        y, x = int(rng.integers(0, max(h - block, 1))), int(rng.integers(0, max(w - block, 1)))
        out[y : y + block, x : x + block] = rng.uniform(0, 255, 3)
    return out


def corrupt(
    frame: np.ndarray, event: Event, previous: np.ndarray | None, rng: np.random.Generator
) -> np.ndarray:
    """Apply a burst or dropped-frame event to a finished (noisy, float) frame."""
    if event.detail == "flash":
        white = rng.uniform(0.8, 0.93)
        return frame * (1.0 - white) + 255.0 * white
    if event.detail == "noise":
        noisy = frame + rng.standard_normal(frame.shape, dtype=np.float32) * rng.uniform(35, 60)
        salt = rng.random(frame.shape[:2]) < 0.01
        noisy[salt] = rng.choice([0.0, 255.0], size=(int(salt.sum()), 1))
        return noisy
    if event.detail == "frozen" and previous is not None:
        return previous.astype(np.float32)
    if event.detail == "garbled":
        source = previous.astype(np.float32) if previous is not None else frame
        return _garble(source, rng)
    return rng.standard_normal(frame.shape, dtype=np.float32) * 1.5 + 2.0  # black
