"""Helpers for tests that run ``recseg train`` as users do (subprocesses, a real MLflow server,
real signals): start, wait for a line, compare histories and weights with an uninterrupted run.
The session fixtures ``train_store`` and ``train_reference`` (tests/conftest.py) use them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from recseg.training import checkpoint as ckpt

EPOCHS = 3
ARGS = ("--model", "Deep_mobile_gruV1", "--loss", "CrossDice", "--epochs", str(EPOCHS),
        "--batch-size", "2", "--seq-len", "3", "--num-workers", "0",
        "--no-system-metrics")  # fmt: skip
TIMING = ("epoch_seconds", "overhead_seconds", "log_latency_ms")


def train_cmd(store: Path, experiment: str | None, *extra: str) -> list[str]:
    named = ("--experiment", experiment) if experiment else ()
    return [sys.executable, "-m", "recseg", "train", "--data", str(store), *ARGS, *named,
            *extra]  # fmt: skip


def env_for(uri: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": uri}


def train(store: Path, cwd: Path, uri: str, experiment: str | None, *extra: str):
    return subprocess.run(train_cmd(store, experiment, *extra), cwd=cwd, env=env_for(uri),
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def start(store: Path, cwd: Path, uri: str, experiment: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(train_cmd(store, experiment, *extra), cwd=cwd, env=env_for(uri),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


def wait_for_line(proc: subprocess.Popen, prefix: str) -> list[str]:
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"no line {prefix!r}: {''.join(lines)} {proc.stderr.read()}")


def only_run(uri: str, experiment: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return client, runs[0]


def histories(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    run = client.get_run(run_id)
    out = {}
    for key in run.data.metrics:
        if key.startswith("system/"):
            continue
        out[key] = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
    return out


def assert_each_step_once(hist: dict) -> None:
    for key, points in hist.items():
        steps = [s for s, _ in points]
        assert len(steps) == len(set(steps)), (key, steps)


def same_history(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        if key not in TIMING:
            assert a[key] == b[key], key


def weights(cwd: Path, run_id: str) -> dict[str, torch.Tensor]:
    return ckpt.load(cwd / "checkpoints" / run_id / ckpt.LATEST)["model"]


def reference_run(store: Path, mlflow_server: str, cwd: Path):
    """An uninterrupted run: (its folder, its metric history, its final weights)."""
    result = train(store, cwd, mlflow_server, "reference")
    assert result.returncode == 0, result.stderr[-3000:]
    client, run = only_run(mlflow_server, "reference")
    assert run.info.status == "FINISHED"
    hist = histories(client, run.info.run_id)
    assert {s for s, _ in hist["val_fg_iou"]} == set(range(EPOCHS))
    return cwd, hist, weights(cwd, run.info.run_id)
