"""``recseg train`` as users run it (subprocesses, real signals) against a real MLflow server:
stop and resume by run id, resume on another machine, bad input on resume (SIGKILLs: see
tests/test_kill_storm.py)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch

from recseg.training import checkpoint as ckpt
from tests.media import one_error_line
from tests.stores import make_store
from tests.trainruns import (
    assert_each_step_once,
    histories,
    only_run,
    same_history,
    start,
    train,
    wait_for_line,
    weights,
)


@pytest.fixture
def store(train_store: Path) -> Path:
    return train_store


@pytest.fixture
def reference(train_reference):
    return train_reference


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


def test_bad_input_on_resume(store: Path, tmp_path: Path, mlflow_server: str) -> None:
    """(tests/test_bad_input.py holds the catalogue: unknown runs, other experiments, ...)"""
    # a run stopped after one step: changed param, then a checkpoint of another model
    stopped = train(store, tmp_path, mlflow_server, "bad", "--time-limit", "1")
    assert stopped.returncode == 99, stopped.stderr[-2000:]
    _, run = only_run(mlflow_server, "bad")
    rid = run.info.run_id
    changed = train(store, tmp_path, mlflow_server, "bad", "--run-id", rid, "--loss", "SoftDice")
    one_error_line(changed, "--loss", "loss=CrossDice")
    latest = tmp_path / "checkpoints" / rid / ckpt.LATEST
    payload = ckpt.load(latest)
    ckpt.save(latest, {**payload, "model_name": "Deep+_mobile"})
    result = train(store, tmp_path, mlflow_server, "bad", "--run-id", rid)
    one_error_line(result, "Deep+_mobile model, not Deep_mobile_gruV1")
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


def _logged_weights(uri: str, run) -> dict[str, torch.Tensor]:
    import mlflow

    from recseg.tracking.model_uri import load_network

    mlflow.set_tracking_uri(uri)
    net = load_network(run.data.tags["recseg.model_uri"]).model
    return {k: v.detach() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("extra", [(), ("--schedule", "onecycle")], ids=["cyclic", "onecycle"])
def test_final_weights_rule_picks_the_logged_model(
    store: Path, tmp_path: Path, mlflow_server: str, reference, extra: tuple[str, ...]
) -> None:
    """auto: best (by --best-metric) for the cyclic schedule, the last weights for onecycle
    (annealed to ~0); the param and a tag say which rule made the model."""
    if extra:
        result = train(store, tmp_path, mlflow_server, "final", *extra)
        assert result.returncode == 0, result.stderr[-3000:]
        cwd, experiment = tmp_path, "final"
    else:
        cwd, experiment = reference[0], "reference"
    _, run = only_run(mlflow_server, experiment)
    rule = "last" if extra else "best"
    assert run.data.params["final_weights"] == "auto"
    assert run.data.params["resolved_final_weights"] == rule
    assert run.data.tags["recseg.final_weights"].startswith(f"{rule}: epoch ")
    folder = cwd / "checkpoints" / run.info.run_id
    expected = ckpt.load(folder / (ckpt.LATEST if extra else ckpt.BEST))["model"]
    logged = _logged_weights(mlflow_server, run)
    assert set(logged) == set(expected)
    assert all(torch.equal(logged[k], v) for k, v in expected.items())


def test_init_from_warm_starts_every_matching_layer(
    store: Path, tmp_path: Path, mlflow_server: str, reference
) -> None:
    """--init-from: a new run starts from another model's weights wherever names and shapes
    match (here a GRU-at-output model's into an LSTM-at-output one: all but the recurrent
    unit); the param says how many tensors came over; a URI that names nothing: one line, 2."""
    from recseg.models import build_model
    from recseg.tracking.model_uri import load_network
    from recseg.training.warm_start import warm_start

    _, source_run = only_run(mlflow_server, "reference")
    uri = source_run.data.tags["recseg.model_uri"]
    source = _logged_weights(mlflow_server, source_run)
    target = build_model("Deep_mobile_lstmV1", output_stride=8)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    copied = warm_start(target, uri, load_network)
    after = target.state_dict()
    shared = [k for k in after if k in source and source[k].shape == after[k].shape]
    assert copied == f"{len(shared)}/{len(after)}" and len(shared) < len(after)
    assert all(torch.equal(after[k], source[k]) for k in shared)
    assert all(torch.equal(after[k], before[k]) for k in after if k not in shared)
    assert any(k.startswith("unit.") for k in after if k not in shared)
    result = train(store, tmp_path, mlflow_server, "warm", "--epochs", "1",
                   "--init-from", "runs:/0123456789abcdef0123456789abcdef/model")  # fmt: skip
    one_error_line(result, "--init-from", "0123456789abcdef")
