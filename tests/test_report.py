"""Tests for recseg.evaluation.report (summary table, CSV, HTML) and .figures (PNG charts)."""

from __future__ import annotations

import csv
import io
import math
import re

import numpy as np
import pytest
from PIL import Image

from recseg.evaluation.figures import LATENCY_FILE, figures, latency_chart, metric_chart
from recseg.evaluation.report import (
    METRICS,
    PERCENT_METRICS,
    RunRecord,
    model_label,
    per_run_csv,
    summary_columns,
    summary_table,
    to_csv,
    to_html,
    variant_label,
)
from recseg.models.registry import model_spec

NAN = math.nan


def _metrics(rng: np.random.Generator, nan: tuple[str, ...] = ()) -> dict[str, float]:
    values = {m: float(rng.uniform(0.3, 0.95)) for m in PERCENT_METRICS}
    values["flicker"] = float(rng.uniform(0.001, 0.05))
    values["loss"] = float(rng.uniform(0.1, 0.9))
    values.update({m: NAN for m in nan})
    return values


def _record(
    model: str,
    seed: int,
    rng: np.random.Generator,
    *,
    loss: str = "CrossDice",
    train: bool = True,
    latency: float | None = 5.0,
    nan: tuple[str, ...] = (),
    label: str | None = None,
) -> RunRecord:
    return RunRecord(
        run_id=f"{model}-{loss}-{seed}",
        run_name=f"{model} seed {seed}",
        model=model,
        label=label if label is not None else model_label(model),
        backbone=model_spec(model).backbone,
        loss=loss,
        seed=seed,
        group=f"{model}|{loss}",
        test=_metrics(rng, nan),
        train=_metrics(rng, nan) if train else {},
        latency_ms=None if latency is None else latency * float(rng.uniform(0.9, 1.1)),
        latency_p90_ms=None if latency is None else latency * 1.3,
        fps=None if latency is None else 1000 / latency,
        params=5_220_834,
        gflops=1.25,
        device="cpu (2 threads)",
    )


def _thesis_runs(
    backbones: tuple[str, ...] = ("mobile", "resnet50"),
    seeds: int = 2,
    base: bool = True,
    timed: bool = True,
    **kwargs: object,
) -> list[RunRecord]:
    """base, GRU V1..V4, LSTM V1..V4 per backbone; ResNet50 slower than MobileNetV2."""
    rng = np.random.default_rng(7)
    runs = []
    for short in backbones:
        names = [f"Deep+_{short}"] if base else []
        names += [f"Deep_{short}_{cell}V{v}" for cell in ("gru", "lstm") for v in (1, 2, 3, 4)]
        for i, name in enumerate(names):
            latency = (4.0 if short == "mobile" else 60.0) * (1 + i / 10) if timed else None
            runs += [_record(name, s, rng, latency=latency, **kwargs) for s in range(seeds)]
    return runs


def _csv_rows(data: bytes) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def _html_rows(page: str) -> dict[str, list[str]]:
    """Model title -> the cell texts of its table row (with tags)."""
    out = {}
    for row in re.findall(r"<tr>(<td.*?)</tr>", page):
        title = re.search(r'title="([^"]*)"', row)
        assert title
        out[title[1]] = re.findall(r"<td[^>]*>(.*?)</td>", row)
    return out


# ---------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("Deep+_mobile", "base"),
        ("Deep+_resnet50", "base"),
        ("Deep_mobile_gruV3", "+ GRUV3"),
        ("Deep_resnet50_lstmV1", "+ LSTMV1"),
        ("Deep_mobile_lstmV6", "+ LSTMV6"),
        ("resnet50-gru-output-prev", "+ GRUV2"),
        ("mobilenetv3-lstm-decoder", "+ LSTMV3"),
        ("mobilenetv3", "base"),
    ],
)
def test_variant_labels(name: str, label: str) -> None:
    assert variant_label(model_spec(name)) == label
    assert model_label(name) == label


def test_unknown_model_keeps_its_name() -> None:
    assert model_label("my-own-net") == "my-own-net"


# ---------------------------------------------------------------- summary table


def test_groups_mean_and_std_match_numpy() -> None:
    rng = np.random.default_rng(0)
    pair = [_record("Deep_mobile_gruV3", s, rng, latency=4.0 + s) for s in (0, 1)]
    other = _record("Deep+_mobile", 0, rng, loss="SoftDice")
    rows = summary_table([pair[0], other, pair[1]])
    assert [(r["label"], r["n"]) for r in rows] == [("base", 1), ("+ GRUV3", 2)]
    single, double = rows
    for split in ("test", "train"):
        for metric in METRICS:
            values = [getattr(r, split)[metric] for r in pair]
            assert double[f"{split}_{metric}_mean"] == pytest.approx(np.mean(values))
            assert double[f"{split}_{metric}_std"] == pytest.approx(np.std(values, ddof=1))
            assert single[f"{split}_{metric}_mean"] == getattr(other, split)[metric]
            assert math.isnan(single[f"{split}_{metric}_std"])
    assert double["latency_ms"] == pytest.approx(np.median([r.latency_ms for r in pair]))
    assert double["seeds"] == "0;1"
    assert (double["model"], double["backbone"], double["loss"]) == (
        "Deep_mobile_gruV3", "mobilenet_v2", "CrossDice")  # fmt: skip
    assert single["loss"] == "SoftDice"


def test_nan_values_are_left_out_of_mean_and_std() -> None:
    rng = np.random.default_rng(1)
    runs = [_record("Deep+_mobile", s, rng) for s in range(3)]
    runs[1] = _record("Deep+_mobile", 1, rng, nan=("flicker",))
    runs[2] = _record("Deep+_mobile", 2, rng, nan=("flicker", "miou"))
    (row,) = summary_table(runs)
    assert row["test_flicker_mean"] == runs[0].test["flicker"]
    assert math.isnan(row["test_flicker_std"])
    miou = [runs[0].test["miou"], runs[1].test["miou"]]
    assert row["test_miou_mean"] == pytest.approx(np.mean(miou))
    assert row["test_miou_std"] == pytest.approx(np.std(miou, ddof=1))


def test_rows_follow_the_thesis_order() -> None:
    runs = _thesis_runs(seeds=1)[::-1]
    rows = summary_table(runs)
    versions = ["base"] + [f"+ {c}V{v}" for c in ("GRU", "LSTM") for v in (1, 2, 3, 4)]
    assert [r["label"] for r in rows] == versions * 2
    assert [r["backbone"] for r in rows] == ["mobilenet_v2"] * 9 + ["resnet50"] * 9


def test_empty_and_inconsistent_input_is_refused() -> None:
    for call in (summary_table, per_run_csv, figures, latency_chart):
        with pytest.raises(ValueError, match="no evaluated runs"):
            call([])
    for call in (to_csv, lambda rows: to_html(rows, "t")):
        with pytest.raises(ValueError, match="no summary rows"):
            call([])
    rng = np.random.default_rng(2)
    a = _record("Deep+_mobile", 0, rng)
    b = _record("Deep_mobile_gruV1", 1, rng)
    mixed = RunRecord(**{**b.__dict__, "group": a.group})
    with pytest.raises(ValueError, match="mixes"):
        summary_table([a, mixed])
    with pytest.raises(ValueError, match="resnet50"):
        metric_chart([a], "resnet50")


# ---------------------------------------------------------------- CSV


def test_summary_csv_has_columns_rows_and_percentages() -> None:
    runs = _thesis_runs(seeds=2)
    runs.append(_record("Deep+_mobile", 0, np.random.default_rng(3), loss="SoftDice", train=False))
    rows = summary_table(runs)
    header, parsed = _csv_rows(to_csv(rows))
    assert header == summary_columns()
    assert {"test_miou_mean", "test_miou_std", "train_flicker_mean", "latency_ms"} <= set(header)
    assert len(parsed) == len(rows) == 19
    for row, line in zip(rows, parsed, strict=True):
        assert line["label"] == row["label"] and line["n"] == str(row["n"])
        assert line["test_miou_mean"] == f"{100 * row['test_miou_mean']:.2f}"
        assert line["test_loss_mean"] == f"{row['test_loss_mean']:.4f}"
        assert "±" not in "".join(line.values())
    solo = next(p for p in parsed if p["loss"] == "SoftDice")
    assert solo["n"] == "1" and solo["test_miou_std"] == "" and solo["train_miou_mean"] == ""
    assert solo["params"] == "5220834"


def test_per_run_csv_has_one_row_per_run() -> None:
    runs = _thesis_runs(backbones=("mobile",), seeds=2, nan=("flicker",))
    runs[0].test["frames"] = 120
    header, parsed = _csv_rows(per_run_csv(runs))
    assert header[:8] == [
        "run_id",
        "run_name",
        "model",
        "label",
        "backbone",
        "loss",
        "seed",
        "group",
    ]
    assert "test_frames" in header and "train_miou" in header and header[-1] == "device"
    assert [p["run_id"] for p in parsed] == [r.run_id for r in runs]
    assert parsed[0]["test_miou"] == f"{100 * runs[0].test['miou']:.2f}"
    assert parsed[0]["test_frames"] == "120" and parsed[1]["test_frames"] == ""
    assert parsed[0]["test_flicker"] == ""


# ---------------------------------------------------------------- HTML


def test_html_escapes_marks_spread_and_bolds_the_best() -> None:
    rng = np.random.default_rng(4)
    runs = [_record("Deep+_mobile", s, rng) for s in (0, 1)]
    runs.append(_record("Deep_mobile_gruV3", 0, rng, label='+ GRU <b>"odd"</b> & co'))
    runs.append(_record("Deep_mobile_lstmV1", 0, rng, nan=("dice",)))
    rows = summary_table(runs)
    page = to_html(rows, "Summary <of> & runs").decode("utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<title>Summary &lt;of&gt; &amp; runs" in page
    assert "+ GRU &lt;b&gt;&quot;odd&quot;&lt;/b&gt; &amp; co" in page
    assert '<b>"odd"' not in page
    cells = _html_rows(page)
    assert set(cells) == {"Deep+_mobile", "Deep_mobile_gruV3", "Deep_mobile_lstmV1"}
    assert all("±" in c for c in cells["Deep+_mobile"][3:15])
    assert not any("±" in c for c in cells["Deep_mobile_gruV3"] + cells["Deep_mobile_lstmV1"])
    # columns: label, loss, n, then train/test of mIoU, fg IoU, Dice, PixAcc, PerClassAcc, flicker
    by_model = {r["model"]: r for r in rows}
    for index, key, pick in ((4, "test_miou_mean", max), (14, "test_flicker_mean", min)):
        best = pick(by_model, key=lambda m, k=key: by_model[m][k])
        for model, row_cells in cells.items():
            assert row_cells[index].startswith("<b>") == (model == best), (key, model)
    assert cells["Deep_mobile_lstmV1"][7:9] == ["–", "–"]  # Dice undefined
    assert f"{100 * by_model['Deep_mobile_gruV3']['test_miou_mean']:.2f}" in page


def test_html_without_train_numbers_has_test_columns_only() -> None:
    runs = _thesis_runs(backbones=("resnet50",), seeds=1, train=False, timed=False)
    page = to_html(summary_table(runs), "no train").decode("utf-8")
    assert "<th>train</th>" not in page and page.count("<th>test</th>") == 6
    assert "±" not in page
    assert all(len(c) == 3 + 6 + 3 for c in _html_rows(page).values())


# ---------------------------------------------------------------- figures


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and 5_000 < len(data) < 2_000_000
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


@pytest.mark.parametrize(
    ("case", "runs"),
    [
        ("two backbones", lambda: _thesis_runs(seeds=2)),
        ("missing base", lambda: _thesis_runs(backbones=("resnet50",), base=False)),
        ("NaN values", lambda: _thesis_runs(backbones=("mobile",), nan=("flicker", "dice"))),
        ("no train, no latency", lambda: _thesis_runs(train=False, timed=False, seeds=1)),
    ],
)
def test_figures_are_pngs(case: str, runs) -> None:
    records = runs()
    pngs = figures(records)
    expected = {f"metrics_{b}.png" for b in {r.backbone for r in records}} | {LATENCY_FILE}
    assert set(pngs) == expected, case
    for name, data in pngs.items():
        width, height = _png_size(data)
        assert 300 < width < 4000 and 200 < height < 2000, (case, name)


def test_single_run_with_everything_undefined_still_draws() -> None:
    rng = np.random.default_rng(5)
    run = _record("Deep_resnet50_lstmV1", 0, rng, train=False, latency=None, nan=METRICS)
    pngs = figures([run])
    assert set(pngs) == {"metrics_resnet50.png", LATENCY_FILE}
    for data in pngs.values():
        _png_size(data)
