"""The benchmark suite runs as documented (``python -m benchmarks``), prints markdown tables and
writes ``results.json`` with every figure the targets name. Smoke runs at tiny sizes: the speed
targets themselves are the suite's business (``make bench``), not a test's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEYS = (
    "fp32_speedup_mobile", "fp32_speedup_mobile_gru", "fp32_speedup_resnet",
    "bf16_speedup_mobile", "bf16_speedup_resnet", "bf16_iou_drop_points",
    "loader_frames_per_s", "loader_over_train_step", "tracking_overhead_pct",
    "preprocess_realtime_x", "time_to_working_model_s",
)  # fmt: skip


def _bench(*args: str, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args, "--quick", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def test_inference_and_training_parts_write_results(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = _bench(
        "ceiling", "inference", "training",
        "--inference-models", "Deep+_mobile,Deep_mobile_gruV3", "--inference-sizes", "72x128",
        "--compile", "off", "--training-models", "Deep_mobile_gruV3", "--training-size", "48x64",
        out=out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    for heading in ("## ceiling", "## inference", "## training", "## targets"):
        assert heading in text
    assert "| Deep_mobile_gruV3 | 72x128 | bf16 |" in text
    data = json.loads(out.read_text())
    assert set(KEYS) <= set(data)
    assert data["fp32_speedup_mobile"] is None  # measured at 270x512 only
    assert data["machine"]["cores"] >= 1 and data["machine"]["torch"]
    rows = data["parts"]["inference"]["results"]
    assert {(r["model"], r["path"]) for r in rows} == {
        (m, p) for m in ("Deep+_mobile", "Deep_mobile_gruV3") for p in ("reference", "fp32", "bf16")
    }
    for r in rows:
        assert r["ms"] > 0 and r["effective_gflops"] <= r["gflops"]
        assert r["max_rel_diff"] < (1e-4 if r["path"] != "bf16" else 0.1)
    train = data["parts"]["training"]["results"][0]
    assert train["fps"] > 0 and train["peak_mib"] > 0
    ceiling = data["parts"]["ceiling"]["figures"]
    assert ceiling["ceiling_fp32_gflops"] > 0 and ceiling["ceiling_bf16_gflops"] > 0
    # A second, other part merges into the same file; the first part's entry stays.
    again = _bench("ceiling", "--ceiling-n", "256", out=out)
    assert again.returncode == 0, again.stderr[-3000:]
    merged = json.loads(out.read_text())
    assert "inference" in merged["parts"] and "training" in merged["parts"]
    report = subprocess.run(
        [sys.executable, "-m", "benchmarks.report", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert "| fp32_speedup_mobile | - | >= 1.5 | not run |" in report.stdout
    assert "| Deep_mobile_gruV3 | 72x128 | bf16 |" in report.stdout


def test_unknown_part_is_refused(tmp_path: Path) -> None:
    result = _bench("nonsense", out=tmp_path / "r.json")
    assert result.returncode == 2
    assert "unknown part(s) nonsense" in result.stderr
    assert not (tmp_path / "r.json").exists()


def test_loader_and_preprocess_parts(tmp_path: Path) -> None:
    """The data parts (the tracking and accuracy parts train real runs for a minute: they are
    ``make bench``'s, not the test suite's)."""
    out = tmp_path / "results.json"
    result = _bench(
        "loader", "preprocess", "--work", str(tmp_path / "work"),
        "--loader-clips", "3", "--loader-frames", "12", "--loader-workers", "0,2",
        "--loader-train-steps", "1",
        out=out,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["loader_frames_per_s"] > 0 and data["loader_over_train_step"] > 0
    assert data["preprocess_realtime_x"] > 0
    assert data["tracking_overhead_pct"] is None  # not run
    for heading in ("## loader", "## preprocess", "## targets"):
        assert heading in result.stdout


def test_time_to_a_working_model_is_a_target_and_never_reaching_it_misses() -> None:
    """The learning part's figure: the first epoch at or above 0.80 held-out fg IoU; a curve
    that never gets there is measured (None) and counts as a missed target, not as not run."""
    from benchmarks.__main__ import summary
    from benchmarks.learning import WORKING, time_to

    points = [{"wall_s": 80.0, "fg_iou": 0.5}, {"wall_s": 160.0, "fg_iou": 0.81},
              {"wall_s": 240.0, "fg_iou": 0.79}]  # fmt: skip
    assert WORKING == 0.80 and time_to(points, WORKING) == 160.0
    assert time_to(points[:1], WORKING) is None
    rows = {r[0]: r for r in summary({"time_to_working_model_s": None})[0]}
    assert rows["time_to_working_model_s"][3] == "NO"
    assert rows["tracking_overhead_pct"][3] == "not run"
    assert {r[0]: r for r in summary({"time_to_working_model_s": 160.0})[0]}[
        "time_to_working_model_s"
    ][3] == "yes"
