"""Which frames each lane reads at each step: windows of clips, planned per epoch.

Split from ``recseg.data.loader`` (which re-exports these names); the rules are described there.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Sequence

import numpy as np

from recseg.data import augment as aug
from recseg.data import composite

_ORDER, _AUGMENT, _COMPOSITE = 0, 1, 2  # stream tags for the seed derivation (3: noise)
Params = aug.AugmentParams | composite.CompositeParams


@dataclasses.dataclass(frozen=True)
class Window:
    """One lane's part of a step: frames ``[start, start + length)`` of clip ``clip``.

    ``clip`` indexes the split's clips in store order (-1: padding, nothing left for the lane);
    ``length`` < ``seq_len`` only for an evaluation clip's last window. ``augment``: the clip's
    augmentation of its fixed composite, or its on-the-fly composite, or None."""

    clip: int
    start: int
    length: int
    reset: bool
    augment: Params | None = None


Plan = tuple[Window, ...]
PAD = Window(clip=-1, start=0, length=0, reset=True)


def clip_windows(frames: int, seq_len: int, train: bool) -> list[tuple[int, int]]:
    """``(start, real frames)`` of each window of a clip with ``frames`` frames."""
    if train:
        return [(s, seq_len) for s in range(0, frames - seq_len + 1, seq_len)]
    return [(s, min(seq_len, frames - s)) for s in range(0, frames, seq_len)]


def _rng(seed: int, *words: int) -> np.random.Generator:
    """An independent generator for ``(seed, *words)``."""
    return np.random.default_rng([seed & 0xFFFF_FFFF_FFFF_FFFF, *words])


def _greedy(
    order: Sequence[int], steps: Sequence[int], lanes: int
) -> tuple[list[list[tuple[int, int]]], list[int]]:
    """Give each clip of ``order`` to the lane that frees first (ties: lowest lane).

    Returns per lane the ``(clip, first step)`` it plays and the step at which it frees."""
    heap = [(0, b) for b in range(lanes)]
    schedule: list[list[tuple[int, int]]] = [[] for _ in range(lanes)]
    for clip in order:
        t, b = heapq.heappop(heap)
        schedule[b].append((clip, t))
        heapq.heappush(heap, (t + steps[clip], b))
    ends = [0] * lanes
    for t, b in heap:
        ends[b] = t
    return schedule, ends


class LaneSampler:
    """Builds each epoch's list of plans (one ``Plan`` of ``batch_size`` windows per step).

    ``lengths``: frames per clip, in store order; ``size``: ``(H, W)`` for augmentation.
    Training with augmentation composites a clip on the fly when ``layers[clip]`` and the store
    has train ``backgrounds = (images, videos)``; other clips augment their fixed composite."""

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seq_len: int,
        *,
        seed: int = 0,
        train: bool = True,
        augment: bool | None = None,
        size: tuple[int, int],
        layers: Sequence[bool] | None = None,
        backgrounds: tuple[int, int] = (0, 0),
        piece: int = 0,
    ):
        self.lengths = [int(n) for n in lengths]
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.seed = seed
        self.train = train
        self.augment = train if augment is None else bool(augment)
        self.size = size
        self.layers = [bool(x) for x in layers] if layers is not None else [False] * len(lengths)
        self.backgrounds = (int(backgrounds[0]), int(backgrounds[1]))
        # what lanes play: (clip, first frame, frames); training with ``piece`` cuts each clip
        # into pieces of that many frames, each with its own augmentation and a fresh state
        self.piece = int(piece) if train else 0
        self.units = [(c, first, min(self.piece, n - first)) if self.piece else (c, 0, n)
                      for c, n in enumerate(self.lengths)
                      for first in (range(0, n, self.piece) if self.piece else [0])]  # fmt: skip
        self.windows = [
            [(first + s, k) for s, k in clip_windows(n, seq_len, train)]
            for _, first, n in self.units
        ]
        self._cache: tuple[tuple[int, int], list[Plan]] | None = None

    @property
    def composite(self) -> bool:
        """Whether training composites the clips with layers on the fly."""
        return self.train and self.augment and any(self.layers) and sum(self.backgrounds) > 0

    @property
    def usable(self) -> list[int]:
        """Units (clips, or pieces of clips) with at least one window."""
        return [u for u, w in enumerate(self.windows) if w]

    def order(self, epoch: int) -> list[int]:
        """The units (clips, or pieces) in the order lanes take them in ``epoch``."""
        usable = self.usable
        if not self.train:
            return usable
        perm = _rng(self.seed, epoch, _ORDER).permutation(len(usable))
        return [usable[i] for i in perm]

    def params(self, epoch: int, unit: int) -> Params | None:
        """Unit ``unit``'s augmentation in ``epoch``: its composite (``CompositeParams``), or
        the augmentation of its fixed composite (``AugmentParams``), or ``None``."""
        if not self.augment:
            return None
        clip, first, _ = self.units[unit]
        piece = (first // self.piece,) if self.piece else ()  # whole clips: as before pieces
        if self.composite and self.layers[clip]:
            rng = _rng(self.seed, epoch, _COMPOSITE, clip, *piece)
            # seeds the per-frame noise and names the cached background: one per piece
            key = (self.seed, epoch, clip + (piece[0] << 32 if piece else 0))
            return composite.draw(rng, self.size, *self.backgrounds, key=key)
        return aug.sample_params(_rng(self.seed, epoch, _AUGMENT, clip, *piece), self.size)

    def plans(self, epoch: int) -> list[Plan]:
        """Every step of ``epoch`` (cached for the last epoch asked)."""
        key = (self.seed, epoch)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._build(epoch))
        return self._cache[1]

    def _build(self, epoch: int) -> list[Plan]:
        counts = [len(w) for w in self.windows]
        schedule, ends = _greedy(self.order(epoch), counts, self.batch_size)
        steps = min(ends) if self.train else max(ends)
        grid = [[PAD] * self.batch_size for _ in range(steps)]
        for lane, units in enumerate(schedule):
            for unit, first in units:
                params = self.params(epoch, unit)
                clip = self.units[unit][0]
                for k, (start, length) in enumerate(self.windows[unit][: max(0, steps - first)]):
                    grid[first + k][lane] = Window(clip, start, length, k == 0, params)
        return [tuple(row) for row in grid]
