"""``recseg runs --stale``: RUNNING runs whose process is gone, found on a real MLflow server,
marked KILLED, or resumed for real - a training run SIGKILLed in its first epoch continues into
the same run id and ends FINISHED."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from recseg.cli.train import train_cmd
from recseg.grid.resume import forwarding, overall_code, train_args
from recseg.grid.sweep import train_config
from recseg.tracking import tags
from tests.media import one_error_line, recseg_in_process
from tests.stores import make_store
from tests.trainruns import wait_for_line

ELSEWHERE = "elsewhere.invalid"
TRAIN = ("--model", "Deep+_mobile", "--loss", "CrossDice", "--epochs", "2", "--batch-size", "2",
         "--seq-len", "3", "--num-workers", "0", "--no-system-metrics")  # fmt: skip


def exited_pid() -> int:
    """The pid of a process that has run, exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def make_runs(client: MlflowClient, experiment: str) -> dict[str, str]:
    """One RUNNING run per kind of process (and a finished one); name -> run id."""
    exp = client.create_experiment(experiment)
    now, here = time.time(), socket.gethostname()
    kinds = {
        "gone": {tags.HOST: here, tags.PID: str(exited_pid()), tags.HEARTBEAT: str(now - 5)},
        "silent": {tags.HOST: ELSEWHERE, tags.PID: "77", tags.HEARTBEAT: str(now - 3600)},
        "quiet": {tags.HOST: ELSEWHERE, tags.PID: "78", tags.HEARTBEAT: str(now - 600)},
        "remote": {tags.HOST: ELSEWHERE, tags.PID: "79", tags.HEARTBEAT: str(now - 60)},
        "alive": {tags.HOST: here, tags.PID: str(os.getpid()), tags.HEARTBEAT: str(now - 30)},
        "finished": {tags.HOST: here, tags.PID: str(exited_pid())},
    }
    ids = {}
    for name, run_tags in kinds.items():
        run = client.create_run(exp, run_name=name, tags={tags.KIND: "train", **run_tags})
        ids[name] = run.info.run_id
    client.set_terminated(ids["finished"], "FINISHED")
    return ids


@pytest.fixture(autouse=True)
def _server(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)


def new_world(uri: str) -> dict:
    client = MlflowClient(uri)
    name = f"stale-{uuid.uuid4().hex[:8]}"
    return {"client": client, "name": name, "ids": make_runs(client, name)}


@pytest.fixture(scope="module")
def world(mlflow_server: str) -> dict:
    """Runs that the tests only read (or leave alone)."""
    return new_world(mlflow_server)


def runs(capsys, *args: str) -> subprocess.CompletedProcess:
    return recseg_in_process(["runs", *args], capsys)


def test_stale_listing(world: dict, capsys) -> None:
    ids = world["ids"]
    table = runs(capsys, "--experiment", world["name"], "--stale")
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert "process" in header
    assert {line.split()[1]: line.split()[5] for line in lines} == {
        "gone": "gone",
        "silent": "gone?",
    }
    listed = runs(capsys, "--experiment", world["name"], "--stale", "--json")
    rows = json.loads(listed.stdout)
    assert {r["run_id"] for r in rows} == {ids["gone"], ids["silent"]}
    assert all(r["status"] == "RUNNING" for r in rows)
    sooner = runs(
        capsys, "--experiment", world["name"], "--stale", "--stale-after", "300", "--json"
    )
    assert {r["run_name"] for r in json.loads(sooner.stdout)} == {"gone", "silent", "quiet"}
    everything = json.loads(runs(capsys, "--experiment", world["name"], "--json").stdout)
    assert {r["run_name"]: r["process"] for r in everything}["quiet"] == "unknown"


def test_mark_killed(mlflow_server: str, capsys) -> None:
    world = new_world(mlflow_server)
    client, ids = world["client"], world["ids"]
    marked = runs(capsys, "--experiment", world["name"], "--stale", "--mark-killed")
    assert marked.returncode == 0, marked.stderr
    lines = marked.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("marked KILLED: run ") for line in lines)
    status = {name: client.get_run(rid).info.status for name, rid in ids.items()}
    assert status == {"gone": "KILLED", "silent": "KILLED", "quiet": "RUNNING",
                      "remote": "RUNNING", "alive": "RUNNING", "finished": "FINISHED"}  # fmt: skip
    gone = client.get_run(ids["gone"]).data.tags
    pid = gone[tags.PID]
    here = socket.gethostname()
    expected = f"stale: process {pid} on host {here} gone; marked by recseg runs"
    assert gone[tags.STOPPED] == expected
    assert f"process {pid} on host {here}" in marked.stdout
    silent = client.get_run(ids["silent"]).data.tags[tags.STOPPED]
    assert silent.startswith(f"stale: process 77 on host {ELSEWHERE} gone (no heartbeat for 36")
    for name in ("quiet", "remote", "alive"):
        assert tags.STOPPED not in client.get_run(ids[name]).data.tags
    again = runs(capsys, "--experiment", world["name"], "--stale", "--mark-killed")
    assert again.stdout.strip() == "no stale training runs"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--mark-killed",), "--stale"),
        (("--resume",), "--stale"),
        (("--stale", "--mark-killed", "--resume"), "do not go together"),
        (("--stale", "--resume", "--json"), "--json"),
        (("--stale", "--grid"), "--grid"),
        (("--stale", "--qsub-args", "-q x"), "--qsub-args"),
        (("--stale", "--stale-after", "0"), "--stale-after"),
        (("--stale", "--stale-after", "-5"), "--stale-after"),
        (("--stale", "--stale-after", "nan"), "--stale-after"),
        (("--stale", "--stale-after", "inf"), "--stale-after"),
        (("--stale", "--stale-after", "soon"), "--stale-after"),
    ],
)
def test_bad_options(world: dict, capsys, tally, args: tuple[str, ...], needle: str) -> None:
    tally("stale runs: bad-input cases tried", 1)
    one_error_line(runs(capsys, "--experiment", world["name"], *args), needle)
    status = {world["client"].get_run(rid).info.status for rid in world["ids"].values()}
    assert status == {"RUNNING", "FINISHED"}  # nothing touched


def test_grid_without_grid_engine(world: dict, capsys, tmp_path: Path, monkeypatch) -> None:
    """No Grid Engine client: exit 2 with one line, before any run is touched."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no qsub
    args = ("--experiment", world["name"], "--stale", "--resume", "--grid")
    one_error_line(runs(capsys, *args), "qsub")
    run = world["client"].get_run(world["ids"]["gone"])
    assert run.info.status == "RUNNING" and tags.JOB not in run.data.tags


def test_train_args_give_the_params_back(tmp_path: Path) -> None:
    """The options of a resumed run are its params, whatever `mlflow run` quoted."""
    params = {"data": "'store'", "model": "Deep+_mobile", "loss": "CrossDice", "epochs": "2",
              "lr": "0.001", "augment": "False", "size": "''", "run_id": "old", "time_limit": "60",
              "num_workers": "0", "resolved_lr": "0.001"}  # fmt: skip
    args = train_args(train_cmd, "rid", params)
    cfg = train_config(train_cmd, args)
    assert (cfg.data, cfg.epochs, cfg.lr, cfg.augment, cfg.size) == ("store", 2, 0.001, False, "")
    assert (cfg.run_id, cfg.time_limit, cfg.num_workers) == ("", 0.0, 0)
    with pytest.raises(ValueError, match="no loss param"):
        train_args(train_cmd, "rid", {"data": "x", "model": "y"})
    assert [overall_code(c) for c in ([0, 0], [0, 99, 1], [0, 1, 2])] == [0, 99, 1]


def test_stop_signals_reach_the_training_process() -> None:
    """While a resumed run trains in the foreground, a SIGTERM for ``recseg runs`` (a grid
    limit, a ``kill``) goes on to the training process, which checkpoints and exits 99."""
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(99))\n"
            "print('ready', flush=True)\ntime.sleep(60)")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    before = signal.getsignal(signal.SIGTERM)
    with forwarding(proc) as asked:
        os.kill(os.getpid(), signal.SIGTERM)
        assert proc.wait(timeout=30) == 99
    assert asked == [signal.SIGTERM] and signal.getsignal(signal.SIGTERM) == before


def test_resume_a_killed_run(mlflow_server: str, tmp_path: Path, monkeypatch, capfd, tally):
    """A real run SIGKILLed in its first epoch; ``--stale --resume`` finishes it, same id."""
    make_store(tmp_path / "store")
    experiment = f"resume-{uuid.uuid4().hex[:8]}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    cmd = [sys.executable, "-m", "recseg", "train", "--data", "store", *TRAIN,
           "--experiment", experiment]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    wait_for_line(proc, "epoch 1/")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    tally("stale runs: training runs killed and resumed", 1)
    client = MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.info.status == "RUNNING"
    listed = json.loads(recseg_in_process(["runs", "--stale", "--json"], capfd).stdout)
    assert {r["run_id"]: r["process"] for r in listed}[run.info.run_id] == "gone"
    resumed = recseg_in_process(["runs", "--experiment", experiment, "--stale", "--resume"], capfd)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resuming run {run.info.run_id}" in resumed.stdout
    assert f"run {run.info.run_id}: finished" in resumed.stdout
    (after,) = client.search_runs([run.info.experiment_id])
    assert after.info.run_id == run.info.run_id and after.info.status == "FINISHED"
    assert after.data.tags[tags.CHECKPOINT_EPOCH] == "2"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert sorted(steps) == [0, 1]
    # the epoch line comes after the local checkpoint: the resumed job trains epoch 2 only
    assert "epoch 2/2" in resumed.stdout and "epoch 1/2" not in resumed.stdout
