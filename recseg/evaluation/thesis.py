"""The thesis table of ``recseg report``: every variant x loss with mean ± std over seeds, as
markdown, and the answer to the thesis's question — does memory make predictions flicker less?

Pure: rows come from :func:`recseg.evaluation.report.summary_table`, records from
:mod:`recseg.tracking.evaluate`. A recurrent variant "flickers less beyond the spread" when its
mean test flicker is below the base model's (same backbone and loss) by more than the larger of
the two seed-to-seed ranges (max − min over seeds): a difference seeds alone did not produce.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from recseg.evaluation.report import RunRecord, _finite, _is_nan, backbone_name

# (column title, row key, scale, lower is better)
COLUMNS: tuple[tuple[str, str, float, bool], ...] = (
    ("test mIoU %", "test_miou", 100.0, False),
    ("fg IoU %", "test_fg_iou", 100.0, False),
    ("Dice %", "test_dice", 100.0, False),
    ("flicker %", "test_flicker", 100.0, True),
    ("latency ms/frame", "latency_ms", 1.0, True),
)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A recurrent variant's test flicker against its base model's (fractions, not %)."""

    label: str
    model: str
    backbone: str
    loss: str
    flicker: float
    base_flicker: float
    spread: float  # the larger seed-to-seed range of the two; NaN with one seed
    seeds: int

    @property
    def lower_by(self) -> float:
        return self.base_flicker - self.flicker

    @property
    def beyond_spread(self) -> bool:
        """Lower than the base by more than the seeds' spread (needs ≥ 2 seeds each)."""
        return math.isfinite(self.spread) and self.lower_by > self.spread

    def sentence(self) -> str:
        """One markdown bullet."""
        a, b, gap = 100 * self.flicker, 100 * self.base_flicker, 100 * self.lower_by
        what = (
            f"**{self.label}** (`{self.model}`, {self.loss}): flicker {a:.2f} % vs base {b:.2f} %"
        )
        if not math.isfinite(self.spread):
            return f"{what}; one seed, no spread to compare with"
        spread = f"the seed-to-seed spread {100 * self.spread:.2f}"
        if gap <= 0:
            return f"{what}: higher by {-gap:.2f} points (spread {100 * self.spread:.2f})"
        if self.beyond_spread:
            return f"{what}: lower by {gap:.2f} points, more than {spread} — memory helped"
        return f"{what}: lower by {gap:.2f} points, within {spread} — not conclusive"


def _spread(values: Sequence[float]) -> float:
    vals = _finite(values)
    return max(vals) - min(vals) if len(vals) > 1 else math.nan


def verdicts(rows: Sequence[dict], records: Sequence[RunRecord]) -> list[Verdict]:
    """A verdict per recurrent row that has a base row of the same backbone and loss."""
    flicker = {
        row["group"]: [r.test.get("flicker", math.nan) for r in records if r.group == row["group"]]
        for row in rows
    }
    bases = {(r["backbone"], r["loss"]): r for r in rows if r["label"] == "base"}
    out = []
    for row in rows:
        base = bases.get((row["backbone"], row["loss"]))
        if row["label"] == "base" or base is None:
            continue
        if _is_nan(row["test_flicker_mean"]) or _is_nan(base["test_flicker_mean"]):
            continue
        ranges = [_spread(flicker[row["group"]]), _spread(flicker[base["group"]])]
        defined = [x for x in ranges if math.isfinite(x)]
        spread = max(defined) if len(defined) == 2 else math.nan
        out.append(Verdict(row["label"], row["model"], row["backbone"], row["loss"],
                           row["test_flicker_mean"], base["test_flicker_mean"], spread,
                           min(int(row["n"]), int(base["n"]))))  # fmt: skip
    return out


def _cell(row: dict, key: str, scale: float) -> str:
    mean = row.get(f"{key}_mean", row.get(key))
    if _is_nan(mean):
        return "–"
    std = row.get(f"{key}_std", math.nan)
    text = f"{scale * float(mean):.2f}"
    return text if _is_nan(std) or int(row["n"]) < 2 else f"{text} ± {scale * float(std):.2f}"


def _best(rows: Sequence[dict], key: str, scale: float, lower: bool) -> str | None:
    vals = [(scale * float(r.get(f"{key}_mean", r.get(key))), _cell(r, key, scale)) for r in rows
            if not _is_nan(r.get(f"{key}_mean", r.get(key)))]  # fmt: skip
    if len({text for _, text in vals}) < 2:  # one value, or all alike: nothing stands out
        return None
    return (min(vals) if lower else max(vals))[1]


def markdown_table(rows: Sequence[dict]) -> str:
    """The table: a row per variant x loss (x backbone), mean ± sample std over seeds; the
    best value of each column (within a backbone) in bold."""
    many = len({r["backbone"] for r in rows}) > 1
    head = ["Variant", "Model", "Loss", "Seeds", *(c[0] for c in COLUMNS)]
    if many:
        head.insert(0, "Backbone")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for backbone in dict.fromkeys(r["backbone"] for r in rows):
        group = [r for r in rows if r["backbone"] == backbone]
        best = {key: _best(group, key, scale, lower) for _, key, scale, lower in COLUMNS}
        for row in group:
            cells = [str(row["label"]), f"`{row['model']}`", str(row["loss"]), str(row["n"])]
            for _, key, scale, _lower in COLUMNS:
                text = _cell(row, key, scale)
                cells.append(f"**{text}**" if text == best[key] and text != "–" else text)
            if many:
                cells.insert(0, backbone_name(str(backbone)))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def answer(found: Sequence[Verdict]) -> str:
    """The one-paragraph answer to "does memory help?" (flicker on the test split)."""
    if not found:
        return (
            "No recurrent variant has a base model of the same backbone and loss to compare with."
        )
    if min(v.seeds for v in found) < 2:
        return "Fewer than two seeds per variant: no seed-to-seed spread, so no verdict."
    winners = [v.label for v in found if v.beyond_spread]
    if winners:
        return (f"Yes, for {', '.join(winners)}: lower test flicker than the base model by "
                f"more than the seed-to-seed spread.")  # fmt: skip
    return ("Not shown: no recurrent variant flickers less than the base model by more than "
            "the seed-to-seed spread.")  # fmt: skip


def report_markdown(rows: Sequence[dict], records: Sequence[RunRecord], title: str,
                    footer: str = "", memory: str = "") -> str:  # fmt: skip
    """The whole report: title, table, legend, the flicker verdicts and the answer, then the
    ``memory`` section (recurrent − base with 95 % intervals) when given."""
    found = verdicts(rows, records)
    parts = [
        f"# {title}",
        "",
        markdown_table(rows),
        "",
        "Test split; mean ± sample std over seeds; flicker = share of pixels whose predicted "
        "class changes between consecutive frames where the true class does not (lower is "
        "better); latency = median ms per frame at batch 1. Bold: best per column.",
        "",
        "## Does memory help? (test flicker vs the base model)",
        "",
        *(f"- {v.sentence()}" for v in found),
        "",
        f"**{answer(found)}** Spread = the larger of the two variants' seed-to-seed ranges "
        "(max − min over seeds).",
    ]
    if memory:
        parts += ["", "## Recurrent − base, with 95 % intervals (bootstrap over test clips and "
                  "seeds)", "", memory]  # fmt: skip
    if footer:
        parts += ["", footer]
    return "\n".join(parts) + "\n"
