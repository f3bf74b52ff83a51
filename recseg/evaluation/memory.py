"""The report's answer with uncertainty: each recurrent variant − its base model, per metric,
with a 95 % bootstrap interval over test clips and seeds; and the per-event figures.

Inputs: the report's records and, per run id, the per-clip statistics ``recseg evaluate`` logs
(``evaluation/per_clip.json``). Runs evaluated before those were logged are left out.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mlflow.exceptions import MlflowException

from recseg.evaluation.frames import EVENT_KINDS, PER_CLIP, WINDOW, event_window
from recseg.evaluation.intervals import METRICS, Difference, compare
from recseg.evaluation.report import RunRecord

KINDS = ("clean", *EVENT_KINDS.values())


def load_per_clip(run_id: str) -> dict[str, Any] | None:
    """The per-clip statistics a run's test evaluation logged (None: not logged)."""
    with tempfile.TemporaryDirectory(prefix="recseg-per-clip-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=PER_CLIP, dst_path=tmp
            )
        except (MlflowException, OSError):  # older evaluations have no such artifact
            return None
        data = json.loads(Path(path).read_text())
    return data.get("clips") if data.get("split") == "test" else None


def _groups(
    records: Sequence[RunRecord], per_clip: dict[str, dict]
) -> dict[tuple[str, str, str], list[dict]]:
    """(backbone, loss, model) -> the per-clip statistics of its seeds."""
    out: dict[tuple[str, str, str], list[dict]] = {}
    for r in sorted(records, key=lambda r: r.seed):
        if r.run_id in per_clip:
            out.setdefault((r.backbone, r.loss, r.model), []).append(per_clip[r.run_id])
    return out


def differences(records: Sequence[RunRecord], per_clip: dict[str, dict]) -> list[Difference]:
    """Every recurrent model − the base model of its backbone and loss, per metric."""
    groups = _groups(records, per_clip)
    labels = {r.model: r.label for r in records}
    bases = {(b, loss): m for (b, loss, m) in groups if labels.get(m) == "base"}
    out = []
    for (backbone, loss, model), runs in groups.items():
        base = bases.get((backbone, loss))
        if base is None or base == model:
            continue
        out += compare(f"{model} ({loss})", runs, f"{base} ({loss})",
                       groups[(backbone, loss, base)])  # fmt: skip
    return out


def markdown(found: Sequence[Difference]) -> str:
    """The section of the report: a table of differences and the verdicts in plain words."""
    if not found:
        return ("No recurrent variant has per-clip test statistics next to a base model's "
                "(evaluate the runs with this recseg).")  # fmt: skip
    names = {m: label for m, label, _ in METRICS}
    lines = ["| variant | metric | recurrent − base | 95 % interval | seeds | clips | verdict |",
             "|---|---|---:|---|---:|---:|---|"]  # fmt: skip
    for d in found:
        interval = f"{_num(d, d.low)} … {_num(d, d.high)}"
        lines.append(
            f"| {d.variant} | {names[d.metric]} | {_num(d, d.value)} | {interval} "
            f"| {d.seeds[0]} vs {d.seeds[1]} | {d.clips} | {d.verdict} |"
        )
    words = [f"- {d.sentence(names[d.metric])}" for d in found if d.verdict != "not measured"]
    helped = sorted({d.variant for d in found if d.verdict == "better"})
    answer = (f"Memory helped, with 95 % confidence, for: {', '.join(helped)} (see which "
              "metrics above)." if helped else "Memory did not help beyond the 95 % intervals "
              "on any metric.")  # fmt: skip
    return "\n".join([*lines, "", *words, "", f"**{answer}** IoU in points."])


def _num(d: Difference, value: float) -> str:
    """IoU differences in points (2 decimals); the temporal error with 4; NaN as a dash."""
    if not math.isfinite(value):
        return "–"
    if d.metric.startswith("fg_iou"):
        return f"{100 * value:+.2f}"
    return f"{value:+.4f}" if d.metric == "temporal_error" else f"{value:+.2f}"


def metrics(found: Sequence[Difference]) -> dict[str, float]:
    """MLflow metrics of the summary run: ``diff_<variant>_<metric>`` and its ``_low``/``_high``."""
    out = {}
    for d in found:
        key = f"diff_{_slug(d.variant)}_{d.metric}"
        for suffix, value in (("", d.value), ("_low", d.low), ("_high", d.high)):
            if math.isfinite(value):
                out[key + suffix] = value
    return out


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


def to_csv(found: Sequence[Difference]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["variant", "base", "metric", "difference", "low", "high", "verdict",
                     "seeds_variant", "seeds_base", "clips"])  # fmt: skip
    for d in found:
        writer.writerow([d.variant, d.base, d.metric, d.value, d.low, d.high, d.verdict,
                         *d.seeds, d.clips])  # fmt: skip
    return buf.getvalue().encode()


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def event_chart(groups: dict[tuple[str, str, str], list[dict]]) -> bytes:
    """Foreground IoU per frame kind (clean, occluded, burst, dropped, motion blur) by
    variant, bars with their 95 % bootstrap intervals over clips and seeds."""
    fig = Figure(figsize=(10, 4.5))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(groups))
    for g, ((_, loss, model), runs) in enumerate(groups.items()):
        clips = sorted(set.intersection(*(set(r) for r in runs)))
        found = [kind_interval(runs, clips, kind) for kind in KINDS]
        values = [100 * v if math.isfinite(v) else 0.0 for v, _, _ in found]
        errs = [[100 * (v - lo) if math.isfinite(lo) else 0.0 for v, lo, _ in found],
                [100 * (hi - v) if math.isfinite(hi) else 0.0 for v, _, hi in found]]  # fmt: skip
        xs = np.arange(len(KINDS)) + (g - (len(groups) - 1) / 2) * width
        ax.bar(xs, values, width, yerr=errs, capsize=3, label=f"{model} ({loss})")
    ax.set_xticks(np.arange(len(KINDS)), [k.replace("_", " ") for k in KINDS])
    ax.set_ylabel("test foreground IoU %")
    ax.set_title("Foreground IoU by frame kind (95 % intervals: clips and seeds)")
    ax.legend(fontsize=8)
    return _png(fig)


def kind_interval(
    runs: list[dict], clips: list[str], kind: str, resamples: int = 500
) -> tuple[float, float, float]:
    """Foreground IoU on one frame kind pooled over seeds and clips, and its 95 % bootstrap
    interval (seeds and clips drawn with replacement)."""
    rng = np.random.default_rng(0)
    counts = np.array([[r[c]["counts"].get(kind, [0, 0, 0]) for c in clips] for r in runs], float)

    def iou(seeds: np.ndarray, picked: np.ndarray) -> float:
        tp, fp, fn = counts[seeds][:, picked].sum((0, 1))
        return tp / (tp + fp + fn) if tp + fp + fn else math.nan

    point = iou(np.arange(len(runs)), np.arange(len(clips)))
    draws = [iou(rng.integers(0, len(runs), len(runs)), rng.integers(0, len(clips), len(clips)))
             for _ in range(resamples)]  # fmt: skip
    draws = [d for d in draws if math.isfinite(d)]
    if not draws:
        return point, math.nan, math.nan
    return point, float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def window_chart(groups: dict[tuple[str, str, str], list[dict]]) -> bytes:
    """Mean per-frame foreground IoU around event starts (frame 0), by variant."""
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    offsets = list(range(WINDOW[0], WINDOW[1] + 1))
    for (_, loss, model), runs in groups.items():
        merged = {f"{i}:{c}": s for i, r in enumerate(runs) for c, s in r.items()}
        ax.plot(offsets, [100 * v for v in event_window(merged)], marker=".",
                label=f"{model} ({loss})")  # fmt: skip
    ax.axvline(0, color="grey", linestyle=":")
    ax.set_xlabel("frames from the event's start")
    ax.set_ylabel("foreground IoU %")
    ax.set_title("IoU over time around events (mean over events, clips and seeds)")
    ax.legend(fontsize=8)
    return _png(fig)


def section(records: Sequence[RunRecord]) -> tuple[str, dict[str, float], dict[str, bytes]]:
    """The report's memory section: markdown, summary-run metrics and files."""
    per_clip = {r.run_id: c for r in records if (c := load_per_clip(r.run_id)) is not None}
    found = differences(records, per_clip)
    files: dict[str, bytes] = {}
    groups = _groups(records, per_clip)
    if groups:
        files = {"intervals.csv": to_csv(found), "fg_iou_by_event.png": event_chart(groups),
                 "iou_around_events.png": window_chart(groups)}  # fmt: skip
    return markdown(found), metrics(found), files
