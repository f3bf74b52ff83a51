"""The thesis table and its flicker verdict (``recseg.evaluation.thesis``), and the MLflow UI
addresses recseg prints (``recseg.tracking.ui``): pure functions, on made-up evaluated runs."""

from __future__ import annotations

import json
import math
import urllib.parse

import pytest

from recseg.evaluation.report import RunRecord, model_label, summary_table
from recseg.evaluation.thesis import answer, markdown_table, report_markdown, verdicts
from recseg.models.registry import model_spec
from recseg.tracking.ui import compare_url, experiment_url, ui_base, ui_command


def record(model: str, seed: int, flicker: float, miou: float = 0.8, loss: str = "CrossDice"):
    return RunRecord(
        run_id=f"{model}-{seed}", run_name=model, model=model, label=model_label(model),
        backbone=model_spec(model).backbone, loss=loss, seed=seed, group=f"{model}/{loss}",
        test={"miou": miou, "fg_iou": miou - 0.1, "dice": miou + 0.05, "flicker": flicker},
        latency_ms=10.0 + seed,
    )  # fmt: skip


def table(*records: RunRecord):
    rows = summary_table(records)
    return rows, verdicts(rows, records)


def test_lower_flicker_beyond_the_seed_spread_is_a_win() -> None:
    _, found = table(
        record("Deep+_mobile", 0, 0.050), record("Deep+_mobile", 1, 0.054),  # range 0.004
        record("Deep_mobile_gruV1", 0, 0.030), record("Deep_mobile_gruV1", 1, 0.036),  # 0.006
        record("Deep_mobile_lstmV3", 0, 0.049), record("Deep_mobile_lstmV3", 1, 0.041),  # 0.008
    )  # fmt: skip
    by = {v.label: v for v in found}
    assert set(by) == {"+ GRUV1", "+ LSTMV3"}
    gru, lstm = by["+ GRUV1"], by["+ LSTMV3"]
    assert gru.lower_by == pytest.approx(0.019) and gru.spread == pytest.approx(0.006)
    assert gru.beyond_spread and "more than the seed-to-seed spread 0.60" in gru.sentence()
    assert lstm.lower_by == pytest.approx(0.007) and lstm.spread == pytest.approx(0.008)
    assert not lstm.beyond_spread and "within" in lstm.sentence()
    assert answer(found).startswith("Yes, for + GRUV1:")


def test_higher_flicker_and_single_seeds_give_no_verdict() -> None:
    _, found = table(
        record("Deep+_mobile", 0, 0.02), record("Deep+_mobile", 1, 0.021),
        record("Deep_mobile_gruV3", 0, 0.04), record("Deep_mobile_gruV3", 1, 0.05),
    )  # fmt: skip
    (v,) = found
    assert (
        v.lower_by < 0
        and not v.beyond_spread
        and "higher by 2.45 points (spread 1.00)" in v.sentence()
    )
    assert answer(found).startswith("Not shown")
    _, single = table(record("Deep+_mobile", 0, 0.05), record("Deep_mobile_gruV3", 0, 0.01))
    assert math.isnan(single[0].spread) and not single[0].beyond_spread
    assert answer(single).startswith("Fewer than two seeds")
    assert answer([]).startswith("No recurrent variant")


def test_variants_compare_with_the_base_of_their_own_loss() -> None:
    _, found = table(
        record("Deep+_mobile", 0, 0.05, loss="CrossDice"),
        record("Deep+_mobile", 1, 0.05, loss="CrossDice"),
        record("Deep_mobile_gruV1", 0, 0.01, loss="SoftDice"),
        record("Deep_mobile_gruV1", 1, 0.01, loss="SoftDice"),
    )
    assert found == []  # no SoftDice base: nothing to compare with


def test_markdown_table_rows_means_spread_and_bold_best() -> None:
    rows, _ = table(record("Deep+_mobile", 0, 0.05, 0.70), record("Deep+_mobile", 1, 0.06, 0.72),
                    record("Deep_mobile_gruV1", 0, 0.03, 0.80),
                    record("Deep_mobile_gruV1", 1, 0.03, 0.84))  # fmt: skip
    lines = markdown_table(rows).splitlines()
    assert lines[0].startswith("| Variant | Model | Loss | Seeds | test mIoU % |")
    base, gru = lines[2], lines[3]
    assert base.startswith("| base | `Deep+_mobile` | CrossDice | 2 | 71.00 ± 1.41 |")
    assert "| **82.00 ± 2.83** |" in gru and "| **3.00 ± 0.00** |" in gru  # best mIoU, flicker
    assert base.endswith("| 10.50 ± 0.71 |") and gru.endswith("| 10.50 ± 0.71 |")  # all alike
    text = report_markdown(rows, [], "T", footer="Made today.")
    assert text.startswith("# T\n") and text.rstrip().endswith("Made today.")


def test_ui_addresses() -> None:
    url = compare_url("http://127.0.0.1:5000", "7", ["b" * 32, "a" * 32])
    base, fragment = url.split("#", 1)
    assert base == "http://127.0.0.1:5000/" and fragment.startswith("/compare-runs?")
    query = urllib.parse.parse_qs(fragment.split("?", 1)[1])
    assert json.loads(query["runs"][0]) == ["a" * 32, "b" * 32]
    assert json.loads(query["experiments"][0]) == ["7"]
    assert query["workflowType"] == ["machine_learning"]
    assert experiment_url("http://h:1", "3").endswith(
        "/#/experiments/3?workflowType=machine_learning"
    )
    assert (
        ui_base("https://me:secret@mlflow.example.org/base/") == "https://mlflow.example.org/base"
    )
    assert ui_command("https://mlflow.example.org") is None
    local = ui_command("sqlite:///mlflow.db")
    assert local is not None and local.startswith("MLFLOW_DISABLE_TELEMETRY=true ")
    assert "ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000" in local
    assert ui_base("sqlite:///mlflow.db") == "http://127.0.0.1:5000"
