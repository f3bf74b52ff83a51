"""Recurrent − base with a 95 % interval: a bootstrap over test clips and seeds.

Every metric is a ratio of sums over clips (:func:`recseg.evaluation.frames.ratio_stats`), so a
resample draws seeds with replacement (independently per variant: seed k of one variant has
nothing to do with seed k of another) and test clips with replacement (the same draw for both
variants: they were scored on the same clips), sums the chosen clips' numerators and
denominators over the chosen seeds, and takes the difference of the two ratios. The interval
is the 2.5th and 97.5th percentile of the differences; the point estimate uses all the data.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from recseg.evaluation.frames import ratio_stats

# (metric, what it is, lower is better): the metrics a verdict is given for
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("fg_iou", "foreground IoU", False),
    ("fg_iou_clean", "fg IoU on clean frames", False),
    ("fg_iou_event", "fg IoU on event frames", False),
    ("fg_iou_occluded", "fg IoU during occlusions", False),
    ("temporal_error", "temporal error (per true person pixel)", True),
    ("recovery_frames", "frames to recover after an event", True),
)
RESAMPLES = 2000


@dataclasses.dataclass(frozen=True)
class Difference:
    """``variant − base`` for one metric, with its 95 % bootstrap interval."""

    variant: str
    base: str
    metric: str
    value: float
    low: float
    high: float
    lower_is_better: bool
    seeds: tuple[int, int]  # seeds of the variant and of the base
    clips: int

    @property
    def verdict(self) -> str:
        """better / worse (the interval excludes 0) or no difference shown."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return "not measured"
        if self.low > 0 or self.high < 0:
            better = (self.high < 0) == self.lower_is_better
            return "better" if better else "worse"
        return "no difference shown"

    def sentence(self, label: str) -> str:
        """One line in plain words (IoU metrics in points)."""
        scale, unit = (100.0, " points") if self.metric.startswith("fg_iou") else (1.0, "")
        digits = 4 if self.metric == "temporal_error" else 2
        v, lo, hi = (f"{x * scale:+.{digits}f}" for x in (self.value, self.low, self.high))
        return (f"{self.variant} − {self.base}, {label}: {v}{unit} (95 % interval "
                f"{lo} to {hi}): {self.verdict}")  # fmt: skip


def stats_array(runs: Sequence[dict[str, Any]], clips: Sequence[str]) -> np.ndarray:
    """``(seeds, clips, metrics, 2)`` numerators and denominators of ``METRICS``."""
    out = np.zeros((len(runs), len(clips), len(METRICS), 2))
    for s, per_clip in enumerate(runs):
        for c, clip in enumerate(clips):
            stats = ratio_stats(per_clip[clip])
            for m, (name, _, _) in enumerate(METRICS):
                out[s, c, m] = stats.get(name, (0.0, 0.0))
    return out


def _ratio(sums: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums[..., 1] > 0, sums[..., 0] / np.maximum(sums[..., 1], 1e-300), np.nan)


def bootstrap(
    variant: np.ndarray, base: np.ndarray, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimate, low and high (2.5 %, 97.5 %) of ``ratio(variant) − ratio(base)`` per
    metric, from two ``stats_array``s over the same clips."""
    point = _ratio(variant.sum((0, 1))) - _ratio(base.sum((0, 1)))
    rng = np.random.default_rng(seed)
    n_clips = variant.shape[1]
    diffs = np.empty((resamples, variant.shape[2]))
    for i in range(resamples):
        clips = rng.integers(0, n_clips, n_clips)
        sv = rng.integers(0, variant.shape[0], variant.shape[0])
        sb = rng.integers(0, base.shape[0], base.shape[0])
        ours, theirs = variant[sv][:, clips].sum((0, 1)), base[sb][:, clips].sum((0, 1))
        diffs[i] = _ratio(ours) - _ratio(theirs)
    with np.errstate(invalid="ignore"):
        low = np.nanpercentile(diffs, 2.5, axis=0) if np.isfinite(diffs).any() else point * np.nan
        high = np.nanpercentile(diffs, 97.5, axis=0) if np.isfinite(diffs).any() else point * np.nan
    return point, low, high


def compare(
    variant: str, variant_runs: Sequence[dict[str, Any]], base: str, base_runs: Sequence[dict]
) -> list[Difference]:
    """Every ``METRICS`` difference of two variants, each given as its runs' per-clip
    statistics (one dict clip id -> summary per seed); only clips all runs scored count."""
    common = set.intersection(*(set(r) for r in [*variant_runs, *base_runs]))
    clips = sorted(common)
    if not clips:
        return []
    point, low, high = bootstrap(stats_array(variant_runs, clips), stats_array(base_runs, clips))
    seeds = (len(variant_runs), len(base_runs))
    return [
        Difference(
            variant, base, name, *map(float, (point[m], low[m], high[m])), lower, seeds, len(clips)
        )
        for m, (name, _, lower) in enumerate(METRICS)
    ]
