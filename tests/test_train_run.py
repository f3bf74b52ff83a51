"""``recseg train`` as users run it (subprocesses, real signals) against a real MLflow server:
stop and resume by run id, SIGKILL, and bad input."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from recseg.training import checkpoint as ckpt
from tests.media import one_error_line, run_recseg
from tests.stores import make_store

EPOCHS = 3
ARGS = ("--model", "Deep_mobile_gruV1", "--loss", "CrossDice", "--epochs", str(EPOCHS),
        "--batch-size", "2", "--seq-len", "3", "--num-workers", "0",
        "--no-system-metrics")  # fmt: skip
TIMING = ("epoch_seconds", "overhead_seconds")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("run-store"))


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


@pytest.fixture(scope="module")
def reference(store: Path, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted run: (its folder, its metric history, its final weights)."""
    cwd = tmp_path_factory.mktemp("reference")
    result = train(store, cwd, mlflow_server, "reference")
    assert result.returncode == 0, result.stderr[-3000:]
    client, run = only_run(mlflow_server, "reference")
    assert run.info.status == "FINISHED"
    hist = histories(client, run.info.run_id)
    assert {s for s, _ in hist["val_fg_iou"]} == set(range(EPOCHS))
    return cwd, hist, weights(cwd, run.info.run_id)


def test_signal_then_time_limit_then_resume_is_the_same_run(
    store: Path, tmp_path: Path, mlflow_server: str, reference
) -> None:
    _, ref_hist, ref_weights = reference
    # with loader workers, and the signal sent to the whole process group as a grid does
    proc = start(store, tmp_path, mlflow_server, "stopped", "--num-workers", "2")
    wait_for_line(proc, "epoch 1/")
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGUSR1)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 99, err[-3000:]
    assert "stopped: signal SIGUSR1" in out
    client, run = only_run(mlflow_server, "stopped")
    run_id = run.info.run_id
    assert run.info.status == "KILLED"
    for extra in (("--time-limit", "1"), ()):
        result = train(store, tmp_path, mlflow_server, "stopped", "--run-id", run_id, *extra)
        if extra:
            assert result.returncode == 99, result.stderr[-3000:]
            assert "stopped: time limit" in result.stdout
        else:
            assert result.returncode == 0, result.stderr[-3000:]
    client, run = only_run(mlflow_server, "stopped")
    assert run.info.status == "FINISHED" and run.info.run_id == run_id
    hist = histories(client, run_id)
    assert_each_step_once(hist)
    same_history(ref_hist, hist)
    final = weights(tmp_path, run_id)
    assert all(torch.equal(final[k], v) for k, v in ref_weights.items())
    artifacts = {f.path for f in client.list_artifacts(run_id, "checkpoints")}
    assert artifacts == {"checkpoints/latest.pt", "checkpoints/best.pt"}


def test_sigkill_then_resume_completes_from_the_last_checkpoint(
    store: Path, tmp_path: Path, mlflow_server: str, reference
) -> None:
    _, ref_hist, ref_weights = reference
    proc = start(store, tmp_path, mlflow_server, "killed")
    wait_for_line(proc, "epoch 1/")
    time.sleep(random.uniform(0, 3))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    client, run = only_run(mlflow_server, "killed")
    run_id = run.info.run_id
    if run.info.status == "RUNNING":  # unless it had finished already
        listed = run_recseg("runs", "--experiment", "killed", "--json", cwd=tmp_path,
                            env={"MLFLOW_TRACKING_URI": mlflow_server})  # fmt: skip
        row = json.loads(listed.stdout)[0]
        assert row["status"] == "RUNNING" and row["process"] == "gone", row
    result = train(store, tmp_path, mlflow_server, "killed", "--run-id", run_id)
    assert result.returncode == 0, result.stderr[-3000:]
    client, run = only_run(mlflow_server, "killed")
    assert run.info.status == "FINISHED"
    hist = histories(client, run_id)
    assert_each_step_once(hist)
    same_history(ref_hist, hist)
    final = weights(tmp_path, run_id)
    assert all(torch.equal(final[k], v) for k, v in ref_weights.items())
    assert not list((tmp_path / "checkpoints" / run_id).glob("*.tmp"))


def test_bad_input(store: Path, tmp_path: Path, mlflow_server: str, reference) -> None:
    _, ref_run = only_run(mlflow_server, "reference")
    bad = [
        (("--run-id", "0" * 32), ("--run-id", "no run")),
        (("--run-id", ref_run.info.run_id), ("belongs to experiment 'reference'",)),
        (("--epochs", "0"), ("--epochs",)),
    ]
    for extra, needles in bad:
        one_error_line(train(store, tmp_path, mlflow_server, "bad", *extra), *needles)
    (tmp_path / "empty").mkdir()
    result = subprocess.run(
        [*train_cmd(tmp_path / "empty", "bad")], cwd=tmp_path, env=env_for(mlflow_server),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    one_error_line(result, "--data", "store.json")
    # a run stopped after one step: changed param, then a truncated checkpoint
    stopped = train(store, tmp_path, mlflow_server, "bad", "--time-limit", "1")
    assert stopped.returncode == 99, stopped.stderr[-2000:]
    _, run = only_run(mlflow_server, "bad")
    rid = run.info.run_id
    changed = train(store, tmp_path, mlflow_server, "bad", "--run-id", rid, "--loss", "SoftDice")
    one_error_line(changed, "--loss", "loss=CrossDice")
    latest = tmp_path / "checkpoints" / rid / ckpt.LATEST
    latest.write_bytes(latest.read_bytes()[:1000])
    one_error_line(train(store, tmp_path, mlflow_server, "bad", "--run-id", rid), "truncated")
    _, run = only_run(mlflow_server, "bad")
    assert run.info.status == "KILLED"  # the bad attempts changed nothing


def test_a_crash_ends_the_run_failed_not_finished(tmp_path: Path, mlflow_server: str) -> None:
    store = make_store(tmp_path / "store")
    (store / "clips" / "val" / "val1.npz").unlink()  # found missing at the first evaluation
    result = train(store, tmp_path, mlflow_server, "crash", "--epochs", "1")
    line = one_error_line(result, "val1.npz")
    assert "Traceback" not in result.stderr, line
    _, run = only_run(mlflow_server, "crash")
    assert run.info.status == "FAILED"


def test_another_machine_resumes_from_the_artifact(
    store: Path, tmp_path: Path, mlflow_server: str, reference
) -> None:
    """No local checkpoint (another node, another --checkpoint-dir): the run's artifact
    holds the complete state. Without --experiment the run's own experiment is used."""
    _, ref_hist, ref_weights = reference
    first, second = tmp_path / "node1", tmp_path / "node2"
    first.mkdir(), second.mkdir()
    stopped = train(store, first, mlflow_server, "moved", "--time-limit", "1")
    assert stopped.returncode == 99, stopped.stderr[-2000:]
    _, run = only_run(mlflow_server, "moved")
    result = train(store, second, mlflow_server, None, "--run-id", run.info.run_id)
    assert result.returncode == 0, result.stderr[-2000:]
    client, run = only_run(mlflow_server, "moved")
    hist = histories(client, run.info.run_id)
    assert_each_step_once(hist)
    same_history(ref_hist, hist)
    final = weights(second, run.info.run_id)
    assert all(torch.equal(final[k], v) for k, v in ref_weights.items())
