"""The experiment summary of ``recseg evaluate``: evaluated runs in, CSV and HTML bytes out.

Pure: no MLflow, no files. Runs that differ only by seed share a ``group``; a summary row holds
each group's mean and sample standard deviation (``ddof=1``) over its seeds, computed over the
seeds where the value is defined (NaN = undefined, e.g. flicker on single frames). Rows keep
ratios as fractions; ``to_csv`` and ``to_html`` print them in % (2 decimals). The HTML page
follows the thesis's result tables (spec §7.2): one table per backbone, rows base, + GRUV1..,
+ LSTMV1.., train and test columns, the best value per column in bold.
"""

from __future__ import annotations

import csv
import html
import io
import math
import numbers
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields

from recseg.errors import InputError
from recseg.models.deeplab import ModelSpec
from recseg.models.registry import SEED_VERSIONS, model_spec

# Ratio metrics (printed in %) and the evaluation loss (printed as is), in table order.
PERCENT_METRICS = ("miou", "fg_iou", "bg_iou", "dice", "fg_dice", "pixel_accuracy",
                   "per_class_accuracy", "flicker")  # fmt: skip
METRICS = (*PERCENT_METRICS, "loss")
SPLITS = ("test", "train")
LOWER_IS_BETTER = frozenset({"flicker", "loss", "latency_ms"})
BACKBONE_ORDER = ("mobilenet_v2", "resnet50", "mobilenet_v3_large")
BACKBONE_NAMES = {"mobilenet_v2": "MobileNetV2", "resnet50": "ResNet50",
                  "mobilenet_v3_large": "MobileNetV3-Large"}  # fmt: skip
METRIC_NAMES = {"miou": "mIoU", "fg_iou": "fg IoU", "bg_iou": "bg IoU", "dice": "Dice",
                "fg_dice": "fg Dice", "pixel_accuracy": "PixAcc", "loss": "Loss",
                "per_class_accuracy": "PerClassAcc", "flicker": "Flicker"}  # fmt: skip
_VERSION = {spot: n for n, spot in SEED_VERSIONS.items()}  # (position, store_previous) -> n
_SEED_LABEL = re.compile(r"^\+ (GRU|LSTM)V(\d+)$")
_GROUP_FIELDS = ("label", "model", "backbone", "loss")
_TAIL_COLUMNS = ("latency_ms", "latency_p90_ms", "fps", "params", "gflops", "device")


@dataclass(frozen=True)
class RunRecord:
    """One evaluated run: what it is, its split metrics (no prefix) and its cost."""

    run_id: str
    run_name: str
    model: str
    label: str
    backbone: str
    loss: str
    seed: int
    group: str
    test: dict[str, float]
    train: dict[str, float] = field(default_factory=dict)
    latency_ms: float | None = None
    latency_p90_ms: float | None = None
    fps: float | None = None
    params: int = 0
    gflops: float | None = None
    device: str = ""


def variant_label(spec: ModelSpec) -> str:
    """The thesis's short label: "base", "+ GRUV3", "+ LSTMV1"; a readable one ("+ GRU decoder")
    for a cell or position the seed's V1..V6 do not name."""
    if not spec.recurrent:
        return "base"
    cell = str(spec.cell).upper()
    version = _VERSION.get((spec.position, spec.store_previous))
    if cell in {"GRU", "LSTM"} and version is not None:
        return f"+ {cell}V{version}"
    return f"+ {cell} {spec.position}{'-prev' if spec.store_previous else ''}"


def model_label(name: str) -> str:
    """``variant_label`` of a model name ``recseg models`` lists; the name itself otherwise."""
    try:
        return variant_label(model_spec(name))
    except InputError:
        return name


def backbone_name(backbone: str) -> str:
    """Display name of a backbone ("mobilenet_v2" -> "MobileNetV2")."""
    return BACKBONE_NAMES.get(backbone, backbone)


def variant_order(label: str) -> tuple[int, int, str]:
    """Sort key in the thesis's row order: base, + GRUV1.., + LSTMV1.., then others by name."""
    if label == "base":
        return (0, 0, "")
    match = _SEED_LABEL.match(label)
    if match:
        return (1 if match[1] == "GRU" else 2, int(match[2]), "")
    return (3, 0, label)


def backbone_order(backbone: str) -> tuple[int, str]:
    """Sort key: MobileNetV2, ResNet50, MobileNetV3-Large, then others by name."""
    known = backbone in BACKBONE_ORDER
    return (BACKBONE_ORDER.index(backbone) if known else len(BACKBONE_ORDER), backbone)


def _finite(values: Iterable[object]) -> list[float]:
    """The defined (finite, numeric) values as floats."""
    return [float(v) for v in values if isinstance(v, numbers.Real) and math.isfinite(float(v))]


def _mean_std(values: Iterable[object]) -> tuple[float, float]:
    """Mean and sample std of the defined values; NaN where there are too few."""
    vals = _finite(values)
    mean = statistics.fmean(vals) if vals else math.nan
    std = statistics.stdev(vals) if len(vals) > 1 else math.nan
    return mean, std


def _median(values: Iterable[object]) -> float:
    vals = _finite(values)
    return statistics.median(vals) if vals else math.nan


def _check_group(key: str, runs: list[RunRecord]) -> None:
    for name in _GROUP_FIELDS:
        seen = {getattr(r, name) for r in runs}
        if len(seen) > 1:
            raise ValueError(f"group {key!r} mixes {name}s: {', '.join(sorted(map(str, seen)))}")


def _group_row(key: str, runs: list[RunRecord]) -> dict:
    _check_group(key, runs)
    first = runs[0]
    row: dict = {name: getattr(first, name) for name in _GROUP_FIELDS}
    row.update(group=key, n=len(runs), seeds=";".join(str(r.seed) for r in runs))
    for split in SPLITS:
        for metric in METRICS:
            mean, std = _mean_std(getattr(r, split).get(metric) for r in runs)
            row[f"{split}_{metric}_mean"] = mean
            row[f"{split}_{metric}_std"] = std
    for name in ("latency_ms", "latency_p90_ms", "fps"):
        row[name] = _median(getattr(r, name) for r in runs)
    row["latency_ms_std"] = _mean_std(r.latency_ms for r in runs)[1]
    row["params"] = first.params
    row["gflops"] = _median(r.gflops for r in runs)
    row["device"] = " / ".join(sorted({r.device for r in runs if r.device}))
    return row


def summary_table(records: Sequence[RunRecord]) -> list[dict]:
    """One row per group (mean/std over seeds, medians of latency), in thesis order.

    Keys: label, model, backbone, loss, group, n, seeds, ``{split}_{metric}_{mean|std}`` for
    split in test/train and metric in ``METRICS`` (fractions), latency_ms (median over seeds of
    the runs' median), latency_ms_std, latency_p90_ms, fps, params, gflops, device. Runs keep
    their order within a group. ``ValueError`` for no records or a group mixing models.
    """
    if not records:
        raise ValueError("no evaluated runs to summarise")
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(record.group, []).append(record)
    rows = [_group_row(key, runs) for key, runs in groups.items()]
    rows.sort(
        key=lambda r: (
            backbone_order(r["backbone"]),
            variant_order(r["label"]),
            r["loss"],
            r["model"],
            r["group"],
        )
    )
    return rows


def _is_nan(value: object) -> bool:
    """True for None and non-finite numbers (undefined values)."""
    if value is None:
        return True
    return isinstance(value, numbers.Real) and not math.isfinite(float(value))


def _metric_of(key: str) -> str:
    """The metric of a column key: "test_miou_mean" -> "miou", "latency_ms" -> "latency_ms"."""
    key = key.removesuffix("_mean").removesuffix("_std")
    for split in SPLITS:
        if key.startswith(f"{split}_"):
            return key[len(split) + 1 :]
    return key


def _scale(key: str) -> float:
    """100 for a split's ratio metric (shown in %), 1 otherwise."""
    is_split = key.startswith(tuple(f"{s}_" for s in SPLITS))
    return 100.0 if is_split and _metric_of(key) in PERCENT_METRICS else 1.0


def _cell(column: str, value: object) -> str:
    """CSV text: blank when undefined, ratios in % with 2 decimals, loss with 4."""
    if _is_nan(value):
        return ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    metric = _metric_of(column)
    if _scale(column) != 1.0:
        return f"{100 * float(value):.2f}"
    if metric == "loss":
        return f"{float(value):.4f}"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return f"{float(value):.3f}" if metric == "gflops" else f"{float(value):.2f}"


def _write_csv(columns: Sequence[str], rows: Iterable[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(c, row.get(c)) for c in columns])
    return buf.getvalue().encode("utf-8")


def summary_columns() -> list[str]:
    """The columns of ``to_csv``, in order."""
    metric_columns = [
        f"{split}_{metric}_{stat}"
        for split in SPLITS
        for metric in METRICS
        for stat in ("mean", "std")
    ]
    return [
        "label", "model", "backbone", "loss", "n", "seeds", "group",
        *metric_columns,
        "latency_ms", "latency_ms_std", "latency_p90_ms", "fps", "params", "gflops", "device",
    ]  # fmt: skip


def to_csv(rows: Sequence[dict]) -> bytes:
    """``summary_table`` rows as CSV (UTF-8, comma, header); ratio metrics in %, blank = NaN."""
    if not rows:
        raise ValueError("no summary rows to write")
    return _write_csv(summary_columns(), rows)


def per_run_csv(records: Sequence[RunRecord]) -> bytes:
    """One row per run with every field; metrics as ``test_<key>`` / ``train_<key>`` (ratios in
    %), keys beyond ``METRICS`` (e.g. ``frames``) appended in name order."""
    if not records:
        raise ValueError("no evaluated runs to write")
    extra = sorted({k for r in records for k in (*r.test, *r.train)} - set(METRICS))
    keys = [*METRICS, *extra]
    head = [f.name for f in fields(RunRecord) if f.name not in {"test", "train", *_TAIL_COLUMNS}]
    columns = [*head, *(f"{s}_{k}" for s in SPLITS for k in keys), *_TAIL_COLUMNS]
    rows = []
    for r in records:
        row = {name: getattr(r, name) for name in (*head, *_TAIL_COLUMNS)}
        for split in SPLITS:
            row.update({f"{split}_{k}": v for k, v in getattr(r, split).items()})
        rows.append(row)
    return _write_csv(columns, rows)


# ---------------------------------------------------------------- HTML


HTML_METRICS = ("miou", "fg_iou", "dice", "pixel_accuracy", "per_class_accuracy", "flicker")
# (title, row key, lower is better; None: not ranked): the cost columns of a backbone's table
_COST_COLUMNS: tuple[tuple[str, str, bool | None], ...] = (
    ("Latency (ms/frame)", "latency_ms", True),
    ("Params", "params", None),
    ("GFLOPs", "gflops", None),
)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 2em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th { background: #eef; text-align: center; }
td.name { text-align: left; }
caption { text-align: left; font-weight: bold; font-size: 1.1em; padding: 0.3em 0; }
p.note { color: #555; font-size: 0.85em; }
"""


@dataclass(frozen=True)
class _Column:
    title: str  # metric name, spans its split sub-columns
    split: str  # "train" / "test", "" for cost columns
    key: str  # row key (without _mean / _std)
    lower: bool | None  # lower is better; None: no bold


def _html_columns(rows: Sequence[dict]) -> list[_Column]:
    """One backbone's columns; train columns only where some row has train numbers."""
    has_train = any(not _is_nan(r.get(f"train_{m}_mean")) for r in rows for m in HTML_METRICS)
    splits = ("train", "test") if has_train else ("test",)
    columns = [
        _Column(METRIC_NAMES[m], s, f"{s}_{m}", m in LOWER_IS_BETTER)
        for m in HTML_METRICS
        for s in splits
    ]
    return columns + [_Column(t, "", key, lower) for t, key, lower in _COST_COLUMNS]


def _mean_of(row: dict, key: str) -> float:
    value = row.get(f"{key}_mean", row.get(key))
    return math.nan if _is_nan(value) else float(value)  # type: ignore[arg-type]


def _display(row: dict, key: str) -> str:
    """Cell text: "–" undefined, % for ratio metrics, "mean ± std" when n > 1."""
    mean = _mean_of(row, key)
    if _is_nan(mean):
        return "–"
    if key == "params":
        return f"{int(mean):,}"
    if key == "gflops":
        return f"{mean:.3f}"
    scale = _scale(key)
    text = f"{scale * mean:.2f}"
    std = row.get(f"{key}_std", math.nan)
    if f"{key}_mean" in row and int(row["n"]) > 1 and not _is_nan(std):
        text += f" ± {scale * float(std):.2f}"
    return text


def _best(rows: Sequence[dict], column: _Column) -> float | None:
    """The best shown (rounded) value of a column; None if unranked or fewer than 2 values."""
    if column.lower is None:
        return None
    vals = [
        round(_scale(column.key) * v, 2) for v in _finite(_mean_of(r, column.key) for r in rows)
    ]
    if len(vals) < 2:
        return None
    return min(vals) if column.lower else max(vals)


def _header(columns: list[_Column]) -> str:
    esc = html.escape
    top = ['<th rowspan="2">Model</th>', '<th rowspan="2">Loss</th>', '<th rowspan="2">n</th>']
    sub = []
    for title in dict.fromkeys(c.title for c in columns):
        group = [c for c in columns if c.title == title]
        if group[0].split:
            top.append(f'<th colspan="{len(group)}">{esc(title)}</th>')
            sub += [f"<th>{esc(c.split)}</th>" for c in group]
        else:
            top.append(f'<th rowspan="2">{esc(title)}</th>')
    return f"<thead><tr>{''.join(top)}</tr>\n<tr>{''.join(sub)}</tr></thead>"


def _table(backbone: str, rows: Sequence[dict]) -> str:
    esc = html.escape
    columns = _html_columns(rows)
    best = {c.key: _best(rows, c) for c in columns}
    body = []
    for row in rows:
        cells = [
            f'<td class="name" title="{esc(str(row["model"]))}">{esc(str(row["label"]))}</td>',
            f'<td class="name">{esc(str(row["loss"]))}</td>',
            f"<td>{int(row['n'])}</td>",
        ]
        for c in columns:
            text = esc(_display(row, c.key))
            mean = _mean_of(row, c.key)
            if best[c.key] is not None and round(_scale(c.key) * mean, 2) == best[c.key]:
                text = f"<b>{text}</b>"
            cells.append(f"<td>{text}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f"<table>\n<caption>{esc(backbone_name(backbone))}</caption>\n{_header(columns)}\n"
        f"<tbody>\n{chr(10).join(body)}\n</tbody>\n</table>"
    )


def _note(rows: Sequence[dict]) -> str:
    """The page's legend (HTML): units, spread, bold rule, latency device."""
    spread = "mean ± sample std over seeds" if any(int(r["n"]) > 1 for r in rows) else "one run"
    timed = [r for r in rows if not _is_nan(r.get("latency_ms"))]
    devices = sorted({d for r in timed for d in str(r.get("device") or "").split(" / ") if d})
    latency = "Latency: median ms per frame" + (f" on {', '.join(devices)}" if devices else "")
    return html.escape(
        f"Metrics in % ({spread}); – = undefined. Bold: best per column within a backbone "
        f"(lower is better for flicker and latency). {latency if timed else 'No latency measured'}."
    )


def to_html(rows: Sequence[dict], title: str) -> bytes:
    """A self-contained HTML page (UTF-8): one table per backbone in the thesis's layout."""
    if not rows:
        raise ValueError("no summary rows to write")
    backbones = sorted({r["backbone"] for r in rows}, key=backbone_order)
    tables = [_table(b, [r for r in rows if r["backbone"] == b]) for b in backbones]
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f'<h1>{html.escape(title)}</h1>\n<p class="note">{_note(rows)}</p>\n'
        + "\n".join(tables)
        + "\n</body>\n</html>\n"
    )
    return page.encode("utf-8")
