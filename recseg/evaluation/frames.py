"""Per-frame scores of an evaluation, for what memory is for: frames with events.

``recseg footage --hard`` records an event code per frame (0 normal, 1 occluded, 2 burst: flash
or noise, 3 dropped/corrupt, 4 motion blur); ``recseg preprocess`` keeps them in each clip's
metadata. :class:`FrameRecorder` counts, per real frame, the person pixels predicted right
(tp), wrongly (fp) and missed (fn), and the temporal error: the squared difference between the
predicted change and the true change from the previous frame of the clip, summed over pixels
(a dtSSD for binary masks, as RobustVideoMatting measures temporal coherence). Predicting less
cannot fool it: a model that misses the person misses its true changes too.

:func:`clip_summary` turns one clip's frames into sufficient statistics (numerator and
denominator per metric), so split metrics and bootstrap intervals are ratios of sums.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

PER_CLIP = "evaluation/per_clip.json"  # the artifact `recseg evaluate` writes these summaries to
EVENT_KINDS = {1: "occluded", 2: "burst", 3: "dropped", 4: "motion_blur"}
RECOVERY_POINTS = 0.05  # back within 5 IoU points of the level before the event
PRE_FRAMES = 5  # clean frames before an event that set its level
WINDOW = (-5, 15)  # frames around an event's start in the IoU-over-time figure
IGNORE = 255


class FrameRecorder:
    """Collects ``[tp, fp, fn, truth, temporal error, has previous]`` per (clip, frame)."""

    def __init__(self) -> None:
        self.frames: dict[str, dict[int, list[int]]] = {}
        self._prev: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, pred: torch.Tensor, labels: torch.Tensor, batch: dict[str, Any]) -> None:
        """One evaluation step: ``pred``/``labels`` (B, T, H, W); the batch's lanes stream
        clips (``clip`` ids, ``start`` frames, ``valid``, ``reset``)."""
        valid, reset = batch["valid"].cpu(), batch["reset"].cpu()
        for b, clip in enumerate(batch["clip"]):
            n = int(valid[b].sum())
            if not n or not clip:
                continue
            if bool(reset[b]):
                self._prev.pop(b, None)
            y = labels[b, :n]
            ok = y != IGNORE
            p, t = (pred[b, :n] == 1) & ok, (y == 1) & ok
            rows = self.frames.setdefault(clip, {})
            err, has_prev = self._temporal(b, p, t)
            sums = [(p & t).sum((1, 2)), (p & ~t).sum((1, 2)), (~p & t).sum((1, 2)), t.sum((1, 2))]
            counts = torch.stack([*sums, err], 1).tolist()
            start = int(batch["start"][b])
            for k, row in enumerate(counts):
                rows[start + k] = [*row, int(has_prev[k])]
            self._prev[b] = (p[-1], t[-1])

    def _temporal(
        self, lane: int, p: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, list[bool]]:
        """Per frame: sum over pixels of (Δpred − Δtruth)², and whether there was a previous
        frame of the clip (the first frame of a clip has no change to score)."""
        prev = self._prev.get(lane)
        first = prev is None
        if prev is not None:
            p = torch.cat([prev[0][None], p])
            t = torch.cat([prev[1][None], t])
        dp = p[1:].to(torch.int8) - p[:-1].to(torch.int8)
        dt = t[1:].to(torch.int8) - t[:-1].to(torch.int8)
        err = (dp - dt).to(torch.int32).pow(2).sum((1, 2))
        if first:
            err = torch.cat([err.new_zeros(1), err])
        has = [not first] + [True] * (len(err) - 1)
        return err.to(torch.int64), has


def _iou(tp: float, fp: float, fn: float) -> float:
    den = tp + fp + fn
    return tp / den if den else 1.0  # no person, none predicted: the frame is right


def _runs(codes: Sequence[int]) -> list[tuple[int, int, int]]:
    """``(kind, start, stop)`` of each run of one non-zero event code."""
    out, start = [], None
    for i, code in enumerate([*codes, 0]):
        if start is not None and code != codes[start]:
            out.append((codes[start], start, i))
            start = None
        if start is None and i < len(codes) and code:
            start = i
    return out


def _recovery(iou: list[float], codes: Sequence[int], start: int, stop: int) -> dict | None:
    """Frames after an event until IoU is back within 5 points of its level before; None when
    no clean frame precedes it (no level to return to)."""
    before = [iou[i] for i in range(max(0, start - PRE_FRAMES), start) if not codes[i]]
    if not before:
        return None
    level = sum(before) / len(before) - RECOVERY_POINTS
    for k, i in enumerate(range(stop, len(iou))):
        if codes[i]:
            break
        if iou[i] >= level:
            return {"frames": k, "recovered": True}
    return {"frames": len(iou) - stop, "recovered": False}  # censored at the clip's end


def clip_summary(rows: dict[int, list[int]], codes: Sequence[int] | None) -> dict[str, Any]:
    """One clip's statistics: ``counts`` [tp, fp, fn] for all/clean/event frames and per event
    kind, ``temporal`` [error, true fg pixels], ``recoveries`` and IoU ``windows``."""
    n = max(rows) + 1 if rows else 0
    codes = list(codes) if codes is not None and len(codes) >= n else [0] * n
    frames = [rows.get(i, [0, 0, 0, 0, 0, 0]) for i in range(n)]
    groups: dict[str, list[int]] = {"all": [0, 0, 0], "clean": [0, 0, 0], "event": [0, 0, 0]}
    for code, (tp, fp, fn, *_rest) in zip(codes, frames, strict=True):
        names = ["all", "event" if code else "clean"]
        names += [EVENT_KINDS[code]] if code in EVENT_KINDS else []
        for name in names:
            g = groups.setdefault(name, [0, 0, 0])
            g[0], g[1], g[2] = g[0] + tp, g[1] + fp, g[2] + fn
    temporal = [sum(f[4] for f in frames if f[5]), sum(f[3] for f in frames if f[5])]
    iou = [_iou(*f[:3]) for f in frames]
    recoveries, windows = [], []
    for kind, start, stop in _runs(codes):
        name = EVENT_KINDS.get(kind, str(kind))
        found = _recovery(iou, codes, start, stop)
        if found is not None:
            recoveries.append({"kind": name, **found})
        span = range(start + WINDOW[0], start + WINDOW[1] + 1)
        windows.append({"kind": name, "iou": [iou[i] if 0 <= i < n else None for i in span]})
    return {"frames": n, "counts": groups, "temporal": temporal, "recoveries": recoveries,
            "windows": windows}  # fmt: skip


def summaries(recorder: FrameRecorder, events: dict[str, Sequence[int] | None]) -> dict[str, Any]:
    """Every recorded clip's summary, by clip id."""
    return {clip: clip_summary(rows, events.get(clip)) for clip, rows in recorder.frames.items()}


def ratio_stats(summary: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """``metric -> (numerator, denominator)`` of one clip (or of summed clips)."""
    out = {}
    for name, (tp, fp, fn) in summary["counts"].items():
        key = "fg_iou" if name == "all" else f"fg_iou_{name}"
        out[key] = (float(tp), float(tp + fp + fn))
    out["temporal_error"] = (float(summary["temporal"][0]), float(summary["temporal"][1]))
    rec = summary["recoveries"]
    out["recovery_frames"] = (float(sum(r["frames"] for r in rec)), float(len(rec)))
    return out


def split_metrics(per_clip: dict[str, Any]) -> dict[str, float]:
    """Split-level metrics from every clip's statistics (ratios of sums; NaN: no frames of a
    kind). ``temporal_error``: per true person pixel; ``recovery_frames``: mean over events."""
    totals: dict[str, list[float]] = {}
    for summary in per_clip.values():
        for key, (num, den) in ratio_stats(summary).items():
            t = totals.setdefault(key, [0.0, 0.0])
            t[0], t[1] = t[0] + num, t[1] + den
    return {k: (num / den if den else math.nan) for k, (num, den) in totals.items()}


def event_window(per_clip: dict[str, Any], kind: str | None = None) -> list[float]:
    """Mean per-frame IoU at each offset of ``WINDOW`` around event starts (NaN: no event
    reaches that offset); ``kind`` picks one kind of event."""
    series = [w["iou"] for s in per_clip.values() for w in s["windows"]
              if kind is None or w["kind"] == kind]  # fmt: skip
    width = WINDOW[1] - WINDOW[0] + 1
    out = []
    for i in range(width):
        vals = [s[i] for s in series if s[i] is not None]
        out.append(float(np.mean(vals)) if vals else math.nan)
    return out
