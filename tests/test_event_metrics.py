"""Per-event metrics and recurrent − base intervals on constructed predictions whose answers are
known: a "model" that is perfect except during occlusions, one that predicts nothing, and one
that is 2 points better everywhere than another."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recseg.evaluation.frames import (
    FrameRecorder,
    clip_summary,
    event_window,
    split_metrics,
    summaries,
)
from recseg.evaluation.intervals import compare
from recseg.evaluation.memory import kind_interval

N, H, W = 30, 12, 16
OCCLUDED = range(10, 15)  # event code 1
CODES = [1 if i in OCCLUDED else 0 for i in range(N)]


def _truth() -> torch.Tensor:
    """A 4x4 person walking one pixel per frame (wrapping), on every frame."""
    y = torch.zeros(N, H, W, dtype=torch.long)
    for i in range(N):
        x = i % (W - 4)
        y[i, 4:8, x : x + 4] = 1
    return y


def _record(pred: torch.Tensor, truth: torch.Tensor, seq_len: int = 4) -> FrameRecorder:
    """Stream one clip through a recorder in windows of ``seq_len`` (one lane), as evaluate."""
    rec = FrameRecorder()
    for start in range(0, N, seq_len):
        n = min(seq_len, N - start)
        p = torch.zeros(1, seq_len, H, W, dtype=torch.long)
        t = torch.full((1, seq_len, H, W), 255, dtype=torch.long)  # padding: ignored
        p[0, :n], t[0, :n] = pred[start : start + n], truth[start : start + n]
        valid = torch.zeros(1, seq_len, dtype=torch.bool)
        valid[0, :n] = True
        batch = {"clip": ["c0"], "start": torch.tensor([start]), "valid": valid,
                 "reset": torch.tensor([start == 0])}  # fmt: skip
        rec.update(p, t, batch)
    return rec


def test_perfect_except_during_occlusions() -> None:
    truth = _truth()
    pred = truth.clone()
    pred[list(OCCLUDED)] = 0  # the person vanishes while occluded
    per_clip = summaries(_record(pred, truth), {"c0": CODES})
    m = split_metrics(per_clip)
    assert m["fg_iou_clean"] == 1.0 and m["fg_iou_occluded"] == 0.0 and m["fg_iou_event"] == 0.0
    assert m["fg_iou"] == pytest.approx(25 / 30)
    assert m["recovery_frames"] == 0.0  # back at once after the event
    # temporal error, sum over pixels of (Δpred − Δtrue)²: frame 10 loses the person (16 px of
    # this frame's box), frames 11-14 miss the true moves (8 px; 32 when the walk wraps round at
    # frame 12), frame 15 brings it back (16 px); scored over the true person pixels of 1..29
    summary = per_clip["c0"]
    err, fg = summary["temporal"]
    assert (err, fg) == (16 + 8 + 32 + 8 + 8 + 16, 16 * 29)
    assert [r["kind"] for r in summary["recoveries"]] == ["occluded"]
    window = event_window(per_clip)
    assert window[:5] == [1.0] * 5 and window[5:10] == [0.0] * 5 and window[10] == 1.0
    perfect = split_metrics(summaries(_record(truth, truth), {"c0": CODES}))
    assert perfect["temporal_error"] == 0.0 and perfect["fg_iou_occluded"] == 1.0


def test_predicting_nothing_cannot_fool_the_temporal_error() -> None:
    truth = _truth()
    nothing = split_metrics(summaries(_record(torch.zeros_like(truth), truth), {"c0": CODES}))
    assert nothing["fg_iou"] == 0.0
    assert nothing["temporal_error"] > 0.1  # every true change is missed


def test_window_sizes_and_unknown_events_do_not_change_the_counts() -> None:
    truth = _truth()
    pred = truth.clone()
    pred[list(OCCLUDED)] = 0
    a = _record(pred, truth, seq_len=3).frames["c0"]
    b = _record(pred, truth, seq_len=8).frames["c0"]
    assert a == b
    no_events = clip_summary(a, None)
    assert set(no_events["counts"]) == {"all", "clean", "event"}
    assert no_events["counts"]["event"] == [0, 0, 0] and not no_events["recoveries"]


def _per_clip(iou: float, rng: np.random.Generator, clips: int = 12) -> dict[str, dict]:
    """Clips of varying size whose every frame kind has foreground IoU ``iou`` ± noise."""
    out = {}
    for c in range(clips):
        size = int(rng.integers(500, 2000))
        noisy = min(1.0, max(0.0, iou + rng.normal(0, 0.01)))
        tp = round(size * noisy)
        counts = {k: [tp, (size - tp) // 2, size - tp - (size - tp) // 2]
                  for k in ("all", "clean", "event", "occluded")}  # fmt: skip
        out[f"clip{c}"] = {"frames": 10, "counts": counts, "temporal": [100, 1000],
                           "recoveries": [{"kind": "occluded", "frames": 2, "recovered": True}],
                           "windows": []}  # fmt: skip
    return out


def test_two_points_better_everywhere_is_shown_with_its_interval() -> None:
    rng = np.random.default_rng(0)
    base = [_per_clip(0.80, rng) for _ in range(3)]
    better = [_per_clip(0.82, rng) for _ in range(3)]
    found = {d.metric: d for d in compare("gru", better, "base", base)}
    d = found["fg_iou"]
    assert d.low < 0.02 < d.high and d.low > 0, d
    assert d.value == pytest.approx(0.02, abs=0.005)
    assert d.verdict == "better" and "+2." in d.sentence("fg IoU")
    assert found["temporal_error"].verdict == "no difference shown"  # identical by construction
    same = {d.metric: d for d in compare("gru", base, "base", base)}
    assert same["fg_iou"].value == 0.0 and same["fg_iou"].low <= 0.0 <= same["fg_iou"].high
    assert same["fg_iou"].verdict == "no difference shown"


def test_kind_interval_brackets_the_pooled_value() -> None:
    rng = np.random.default_rng(1)
    runs = [_per_clip(0.7, rng) for _ in range(2)]
    v, lo, hi = kind_interval(runs, sorted(runs[0]), "occluded")
    assert lo <= v <= hi and v == pytest.approx(0.7, abs=0.01)
    v, lo, hi = kind_interval(runs, sorted(runs[0]), "burst")  # no such frames
    assert math.isnan(v) and math.isnan(lo)


def test_preprocess_keeps_the_footage_event_codes(tmp_path) -> None:
    """``recseg footage --hard`` -> ``recseg preprocess --labels truth``: each clip's metadata
    holds the event code of each of its frames, read from the true masks' file."""
    from recseg.data.store import ClipStore, read_meta
    from tests.media import run_recseg

    footage, out = tmp_path / "f", tmp_path / "s"
    done = run_recseg("footage", str(footage), "--videos", "3", "--seconds", "4", "--size",
                      "72x128", "--hard", "--backgrounds", "4", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = run_recseg("preprocess", "--videos", str(footage / "videos"), "--backgrounds",
                      str(footage / "backgrounds"), "--out", str(out), "--size", "72x128",
                      "--clip-seconds", "2", "--labels", "truth", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    store = ClipStore(out)
    seen = set()
    for split in ("train", "val", "test"):
        for record in store.clips(split):
            meta = read_meta(store.path(record))
            truth = np.load(footage / "truth" / f"{record.video}.npz")["events"]
            assert meta["events"] == [int(truth[i]) for i in meta["source_frames"]]
            seen |= set(meta["events"])
    assert 0 in seen and seen - {0}  # hard footage has events


def test_seeds_of_one_configuration_form_one_group_whatever_they_derive() -> None:
    """The lanes pack the clips a few steps differently per seed: steps_per_epoch, total_steps
    and cycle_steps differ, the configuration does not (one report row with n = seeds)."""
    from recseg.tracking.evaluate import _group

    a = {"model": "Deep+_mobile", "seed": "0", "steps_per_epoch": "330", "total_steps": "330",
         "cycle_steps": "1320", "lr": "0.003"}  # fmt: skip
    b = {**a, "seed": "2", "steps_per_epoch": "328", "total_steps": "328", "cycle_steps": "1312"}
    assert _group(a) == _group(b)
    assert _group(a) != _group({**a, "lr": "0.001"})
