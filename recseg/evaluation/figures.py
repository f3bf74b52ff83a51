"""The experiment summary's figures as PNG bytes (matplotlib object API on the Agg canvas).

Like :mod:`recseg.tracking.plots`: no pyplot, no global state, one ``Figure`` per chart. Inputs
are :class:`recseg.evaluation.report.RunRecord` lists; groups and their mean/std over seeds come
from :func:`recseg.evaluation.report.summary_table`. Undefined (NaN) values are left out.
"""

from __future__ import annotations

import io
import itertools
import math
import numbers
import re
from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from recseg.evaluation.report import (
    METRIC_NAMES,
    RunRecord,
    backbone_name,
    backbone_order,
    summary_table,
)

DPI = 80
CHART_METRICS = ("miou", "fg_iou", "dice", "pixel_accuracy", "per_class_accuracy", "flicker")
PANEL_TITLES = {
    "miou": "mean IoU",
    "fg_iou": "foreground IoU",
    "dice": "Dice",
    "pixel_accuracy": "pixel accuracy",
    "per_class_accuracy": "per-class accuracy",
    "flicker": "flicker (lower is better)",
}
SPLIT_COLOURS = {"train": "tab:red", "test": "tab:blue"}  # the thesis: train red, val blue
BASE_LINES = ("--", ":", "-.")  # one per loss with a base model (there are three losses)
MARKERS = {"base": "o", "GRU": "s", "LSTM": "^"}
LATENCY_FILE = "latency_vs_fg_iou.png"


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _finite(value: object) -> bool:
    return isinstance(value, numbers.Real) and math.isfinite(float(value))


def _names(rows: list[dict]) -> list[str]:
    """x labels: the variant label, plus the loss when the rows mix losses."""
    mixed = len({r["loss"] for r in rows}) > 1
    return [f"{r['label']}\n({r['loss']})" if mixed else str(r["label"]) for r in rows]


def _bases(rows: list[dict]) -> dict[str, dict]:
    """The base row of each loss (first one when a loss has several)."""
    bases: dict[str, dict] = {}
    for row in rows:
        if row["label"] == "base":
            bases.setdefault(row["loss"], row)
    return bases


def _change(value: float, base: float) -> str | None:
    """ "+12.3%" relative to base; None when undefined."""
    if not (_finite(value) and _finite(base)) or base == 0:
        return None
    return f"{100 * (value - base) / abs(base):+.1f}%"


def _bars(ax: Axes, rows: list[dict], key: str, split: str, offset: float, width: float,
          bases: dict[str, dict]) -> list[float]:  # fmt: skip
    """One split's bars (in %, std error bars, % change vs base above); returns the bar tops."""
    tops: list[float] = []
    for x, row in enumerate(rows):
        mean, std = row[f"{split}_{key}_mean"], row[f"{split}_{key}_std"]
        if not _finite(mean):
            continue
        err = 100 * std if _finite(std) else 0.0
        ax.bar(x + offset, 100 * mean, width, yerr=err or None, capsize=2, alpha=0.85,
               color=SPLIT_COLOURS[split], label=None if tops else split)  # fmt: skip
        tops.append(100 * mean + err)
        base = bases.get(row["loss"])
        text = _change(mean, base[f"{split}_{key}_mean"]) if base and base is not row else None
        if text:
            ax.annotate(text, (x + offset, tops[-1]), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", rotation=90, fontsize=6)  # fmt: skip
    return tops


def _panel(ax: Axes, rows: list[dict], metric: str, bases: dict[str, dict]) -> bool:
    """Train (when present) and test bars per group, a dashed line at each base's test value.
    False when nothing is defined."""
    splits = [s for s in ("train", "test") if any(_finite(r[f"{s}_{metric}_mean"]) for r in rows)]
    width = 0.8 / max(len(splits), 1)
    tops: list[float] = []
    for i, split in enumerate(splits):
        offset = (i - (len(splits) - 1) / 2) * width
        tops += _bars(ax, rows, metric, split, offset, width, bases)
    for style, base in zip(itertools.cycle(BASE_LINES), bases.values()):
        value = base[f"test_{metric}_mean"]
        if _finite(value):
            ax.axhline(100 * value, color="black", linestyle=style, linewidth=0.8)
    if not tops:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return False
    ax.set_ylim(0, max(max(tops), 1e-6) * 1.3)
    return True


def metric_chart(records: Sequence[RunRecord], backbone: str) -> bytes:
    """One backbone's grid of metric panels (the thesis's eval_summary layout) as PNG bytes.

    Each panel: a bar per variant for train (when present) and test, mean over seeds with std
    error bars, in %; a dashed line at the base model's test value and each bar annotated with
    its % change vs the base of the same loss and split (when a base exists).
    """
    rows = [r for r in summary_table(records) if r["backbone"] == backbone]
    if not rows:
        raise ValueError(f"no evaluated runs with backbone {backbone!r}")
    bases = _bases(rows)
    ncols, nrows = 3, math.ceil(len(CHART_METRICS) / 3)
    fig = Figure(figsize=(3 * (1.4 + 0.45 * len(rows)), 3.4 * nrows + 0.6), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    names = _names(rows)
    legend = None
    for ax, metric in zip(axes, CHART_METRICS, strict=False):
        drawn = _panel(ax, rows, metric, bases)
        ax.set_title(PANEL_TITLES.get(metric, METRIC_NAMES[metric]), fontsize=10)
        ax.set_xticks(range(len(rows)), names, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("%", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        if drawn and legend is None:
            legend = ax.get_legend_handles_labels()
    for ax in axes[len(CHART_METRICS) :]:
        ax.set_visible(False)
    if legend and legend[0]:
        fig.legend(*legend, loc="upper right", fontsize=8)
    losses = ", ".join(f"{s} {k}" for s, k in zip(itertools.cycle(BASE_LINES), bases))
    note = (
        f"; lines: base test value{f' ({losses})' if len(bases) > 1 else ''}"
        ", labels: % change vs base"
        if bases
        else "; no base model"
    )
    fig.suptitle(f"{backbone_name(backbone)}: mean ± std over seeds{note}", fontsize=11)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.14, top=0.88, wspace=0.25, hspace=0.6)
    return _png(fig)


def _marker(label: str) -> str:
    """Circle for base, square for GRU, triangle for LSTM, diamond otherwise."""
    if label == "base":
        return MARKERS["base"]
    return next((m for key, m in MARKERS.items() if key in label.upper()), "D")


def _plain(value: float, _pos: object = None) -> str:
    return f"{value:g}"


def _latency_axis(ax: Axes, xs: list[float]) -> None:
    """Log x with plain tick labels (1, 2, 5, 10, ...) when the spread is over 10x."""
    if min(xs) > 0 and max(xs) > 10 * min(xs):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(_plain))
        ax.xaxis.set_minor_formatter(
            FuncFormatter(lambda v, _p: _plain(v) if f"{v:.0e}"[0] in "25" else "")
        )


def latency_chart(records: Sequence[RunRecord]) -> bytes:
    """Median latency (ms/frame, x; log when the spread is over 10x) vs test foreground IoU
    (%, y) as PNG bytes: one marker per group with seed error bars, colour by backbone."""
    rows = [
        r for r in summary_table(records)
        if _finite(r["latency_ms"]) and _finite(r["test_fg_iou_mean"])
    ]  # fmt: skip
    fig = Figure(figsize=(7.5, 5.0), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    backbones = sorted({r["backbone"] for r in rows}, key=backbone_order)
    colours = {b: f"C{i % 10}" for i, b in enumerate(backbones)}
    for row in rows:
        x, y = row["latency_ms"], 100 * row["test_fg_iou_mean"]
        xerr, yerr = row["latency_ms_std"], 100 * row["test_fg_iou_std"]
        ax.errorbar(x, y, xerr=xerr if _finite(xerr) else None,
                    yerr=yerr if _finite(yerr) else None, fmt=_marker(row["label"]),
                    color=colours[row["backbone"]], capsize=2, markersize=6)  # fmt: skip
        text = str(row["label"]).removeprefix("+ ")
        ax.annotate(text, (x, y), xytext=(5, 3), textcoords="offset points", fontsize=7)
    for b in backbones:
        ax.plot([], [], "o", color=colours[b], label=backbone_name(b))
    for kind, marker in MARKERS.items():
        if any(_marker(r["label"]) == marker for r in rows):
            ax.plot([], [], marker, color="grey", label=kind)
    if rows:
        _latency_axis(ax, [r["latency_ms"] for r in rows])
        ax.legend(loc="best", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no latency data", ha="center", va="center", transform=ax.transAxes)
    devices = sorted({r.device for r in records if r.device and _finite(r.latency_ms)})
    where = f" ({', '.join(devices)})" if devices else ""
    ax.set_title(f"Latency vs test foreground IoU{where}", fontsize=10)
    ax.set_xlabel("median latency (ms / frame)")
    ax.set_ylabel("test foreground IoU (%)")
    ax.grid(True, alpha=0.3)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.11, top=0.92)
    return _png(fig)


def _file_part(backbone: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", backbone) or "backbone"


def figures(records: Sequence[RunRecord]) -> dict[str, bytes]:
    """``metrics_<backbone>.png`` for each backbone present and ``latency_vs_fg_iou.png``."""
    if not records:
        raise ValueError("no evaluated runs to draw")
    backbones = sorted({r.backbone for r in records}, key=backbone_order)
    out = {f"metrics_{_file_part(b)}.png": metric_chart(records, b) for b in backbones}
    out[LATENCY_FILE] = latency_chart(records)
    return out
