"""Training-history plots as PNG bytes, drawn with matplotlib's object API on the Agg canvas.

No pyplot and no global state: each plot is its own ``Figure``, so this is safe in threads and
never opens a window.
"""

from __future__ import annotations

import io
import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

History = dict[str, list[tuple[int, float]]]

FIGSIZE = (5.0, 3.2)  # inches
DPI = 80
MARKERS_UP_TO = 30  # short series get point markers, so lone points between gaps show
MARGINS = (0.17, 0.15, 0.97, 0.9)  # left, bottom, right, top: fixed, tight_layout doubles the cost

# File name -> (title, y label, metrics drawn, log-scale y when every value is positive).
PLOTS: dict[str, tuple[str, str, tuple[str, ...], bool]] = {
    "loss.png": ("Loss", "loss", ("train_loss", "val_loss"), False),
    "lr.png": ("Learning rate", "lr", ("lr",), True),
    "miou.png": ("IoU", "IoU", ("val_miou", "val_fg_iou", "train_miou"), False),
}


def _series(pairs: list[tuple[int, float]]) -> tuple[list[float], list[float]]:
    """Epochs and values sorted by epoch; infinities and non-numbers become NaN (a gap)."""
    xs: list[float] = []
    ys: list[float] = []
    for epoch, value in sorted(pairs, key=lambda p: p[0]):
        try:
            y = float(value)
        except (TypeError, ValueError):
            y = math.nan
        xs.append(float(epoch))
        ys.append(y if math.isfinite(y) else math.nan)
    return xs, ys


def _plot(title: str, ylabel: str, metrics: tuple[str, ...], log: bool, history: History) -> bytes:
    """One line per metric present; "no data" when none has a finite value."""
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    finite: list[float] = []
    for name in metrics:
        xs, ys = _series(history.get(name) or [])
        if not xs:
            continue
        ax.plot(xs, ys, marker="o" if len(xs) <= MARKERS_UP_TO else None, markersize=3, label=name)
        finite += [y for y in ys if math.isfinite(y)]
    if finite:
        if log and min(finite) > 0 and max(finite) > min(finite):
            ax.set_yscale("log")
        else:
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useOffset=False)
        if len(metrics) > 1:
            ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    fig.subplots_adjust(*MARGINS)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def history_plots(history: History) -> dict[str, bytes]:
    """PNG bytes for ``loss.png``, ``lr.png`` and ``miou.png`` from ``{metric: [(epoch, value)]}``.

    Missing metrics, single points and NaN values are drawn as far as they go, never fail.
    """
    return {
        file: _plot(title, ylabel, metrics, log, history)
        for file, (title, ylabel, metrics, log) in PLOTS.items()
    }
