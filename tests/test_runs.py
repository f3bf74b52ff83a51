"""``recseg runs``: training runs on a real MLflow server; live, exited and remote processes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from recseg.cli.runs import format_age
from recseg.errors import InputError
from recseg.tracking import listing, tags
from recseg.tracking.listing import list_training_runs, pid_alive, process_state
from tests.media import run_recseg

HOUR = 3600.0
ELSEWHERE = "elsewhere.invalid"


def exited_pid() -> int:
    """The pid of a process that has run, exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def create(
    client: MlflowClient,
    exp: str,
    name: str,
    start: float,
    tags_: dict[str, str] | None = None,
    epochs: int | None = None,
    status: str | None = None,
) -> str:
    """A training run named ``name`` started at unix time ``start``."""
    run_tags = {tags.KIND: "train", **(tags_ or {})}
    run = client.create_run(exp, start_time=int(start * 1000), tags=run_tags, run_name=name)
    run_id = run.info.run_id
    if epochs is not None:
        client.log_param(run_id, "epochs", str(epochs))
    if status is not None:
        client.set_terminated(run_id, status=status)
    return run_id


@pytest.fixture(scope="module")
def world(mlflow_server: str) -> dict:
    """Two fresh experiments of runs; the first holds one run of every process state."""
    client = MlflowClient(mlflow_server)
    name = f"runs-{uuid.uuid4().hex[:8]}"
    exp = client.create_experiment(name)
    now = time.time()
    here = socket.gethostname()
    ids = {
        "finished": create(
            client,
            exp,
            "finished",
            now - 50,
            epochs=10,
            status="FINISHED",
            tags_={tags.HOST: here, tags.PID: "1", tags.CHECKPOINT_EPOCH: "10"},
        ),
        "stale": create(
            client,
            exp,
            "stale",
            now - 40,
            epochs=10,
            tags_={tags.HOST: ELSEWHERE, tags.PID: "77", tags.HEARTBEAT: str(now - 3 * HOUR)},
        ),
        "remote": create(
            client,
            exp,
            "remote",
            now - 30,
            tags_={tags.HOST: ELSEWHERE, tags.PID: "77", tags.HEARTBEAT: str(now - 60)},
        ),
        "gone": create(
            client,
            exp,
            "gone",
            now - 20,
            epochs=5,
            tags_={tags.HOST: here, tags.PID: str(exited_pid()), tags.HEARTBEAT: str(now - 5)},
        ),
        "alive": create(
            client,
            exp,
            "alive",
            now - 10,
            epochs=10,
            tags_={
                tags.HOST: here,
                tags.PID: str(os.getpid()),
                tags.HEARTBEAT: str(now - 30),
                tags.CHECKPOINT_EPOCH: "3",
                tags.JOB: "4242",
            },
        ),
    }
    client.create_run(exp, tags={tags.KIND: "preprocess"}, run_name="not-training")
    other = f"{name}-other"
    other_id = create(client, client.create_experiment(other), "other", now - 5)
    return {"uri": mlflow_server, "name": name, "other": other, "other_id": other_id, "ids": ids}


def test_rows_of_one_experiment(world: dict) -> None:
    now = time.time()
    rows = list_training_runs(world["name"], client=MlflowClient(world["uri"]), now=now)
    by_name = {row.run_name: row for row in rows}
    assert [row.run_name for row in rows] == ["alive", "gone", "remote", "stale", "finished"]
    assert {row.run_id for row in rows} == set(world["ids"].values())
    assert {row.experiment for row in rows} == {world["name"]}
    assert {n: r.process for n, r in by_name.items()} == {
        "alive": "alive",
        "gone": "gone",
        "remote": "unknown",
        "stale": "gone?",
        "finished": "-",
    }
    assert {n: r.progress for n, r in by_name.items()} == {
        "alive": "3/10",
        "gone": "-",
        "remote": "-",
        "stale": "-",
        "finished": "10/10",
    }
    assert by_name["finished"].status == "FINISHED"
    assert {by_name[n].status for n in ("alive", "gone", "remote", "stale")} == {"RUNNING"}
    alive = by_name["alive"]
    assert alive.pid == os.getpid() and alive.job == "4242" and alive.epochs == 10
    assert alive.heartbeat_age == pytest.approx(30, abs=60)
    assert by_name["stale"].heartbeat_age == pytest.approx(3 * HOUR, abs=60)
    assert by_name["finished"].heartbeat_age is None


def test_all_experiments_and_paging(world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listing, "PAGE_SIZE", 2)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world["uri"])
    rows = list_training_runs()  # MLflow's tracking URI, every experiment, pages of 2
    mine = [row for row in rows if row.experiment in (world["name"], world["other"])]
    assert [row.run_name for row in mine] == [
        "other",
        "alive",
        "gone",
        "remote",
        "stale",
        "finished",
    ]
    assert mine[0].run_id == world["other_id"] and mine[0].experiment == world["other"]
    starts = [row.start_time for row in rows]
    assert starts == sorted(starts, reverse=True)
    assert "not-training" not in {row.run_name for row in rows}


def test_unknown_experiment(world: dict) -> None:
    with pytest.raises(InputError, match="--experiment: no experiment named 'nope-"):
        list_training_runs(f"nope-{uuid.uuid4().hex}", client=MlflowClient(world["uri"]))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_zombie_is_not_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        stat = Path(f"/proc/{proc.pid}/stat")
        deadline = time.monotonic() + 30
        while stat.read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline, "child did not exit"
            time.sleep(0.05)
        assert not pid_alive(proc.pid)  # exited, not yet reaped
    finally:
        proc.wait()
    assert pid_alive(os.getpid()) and not pid_alive(proc.pid) and not pid_alive(0)


def test_process_state_rules() -> None:
    here = socket.gethostname()
    assert process_state("FAILED", here, os.getpid(), None, 0.0) == "-"
    assert process_state("RUNNING", here, None, None, 0.0) == "unknown"
    assert process_state("RUNNING", ELSEWHERE, 1, 0.0, 100.0, stale_after=50) == "gone?"
    assert process_state("RUNNING", ELSEWHERE, 1, 0.0, 100.0, stale_after=500) == "unknown"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0, "0s ago"), (119.9, "119s ago"), (600, "10m ago"), (3 * HOUR, "3h ago")],
)
def test_format_age(seconds: float | None, text: str) -> None:
    assert format_age(seconds) == text
    assert format_age(5 * 86400) == "5d ago"


def test_command_table(world: dict, tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": world["uri"]}
    result = run_recseg("runs", "--experiment", world["name"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split("  ")[0] == "run id" and "heartbeat" in header
    assert len(lines) == 5
    assert {len(line.split()[0]) for line in lines} == {32}
    assert header.index("status") == lines[0].index("RUNNING")  # aligned columns
    cols = {line.split()[1]: line.split() for line in lines}
    assert cols["alive"][2:6] == [world["name"], "RUNNING", "3/10", "alive"]
    assert re.fullmatch(r"\d+[sm]", cols["alive"][6])
    assert cols["gone"][4:6] == ["-", "gone"]
    assert cols["remote"][5] == "unknown" and cols["stale"][5] == "gone?"
    assert cols["stale"][6:] == ["3h", "ago", ELSEWHERE]
    assert cols["finished"][3:7] == ["FINISHED", "10/10", "-", "-"]


def test_command_json_and_status(world: dict, tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": world["uri"]}
    result = run_recseg("runs", "--experiment", world["name"], "--json", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["run_name"] for r in rows] == ["alive", "gone", "remote", "stale", "finished"]
    assert rows[0]["process"] == "alive" and rows[0]["checkpoint_epoch"] == 3
    assert rows[0]["epochs"] == 10 and rows[0]["run_id"] == world["ids"]["alive"]

    args = ("runs", "--experiment", world["name"], "--status", "finished")
    result = run_recseg(*args, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[1].split()[:2] == [world["ids"]["finished"], "finished"]

    args = ("runs", "--experiment", world["other"], "--status", "KILLED")
    result = run_recseg(*args, cwd=tmp_path, env=env)
    assert result.returncode == 0 and result.stdout.strip() == "no training runs"


def test_command_unknown_experiment(world: dict, tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": world["uri"]}
    result = run_recseg("runs", "--experiment", "no-such-experiment", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("recseg: error: --experiment: no experiment")
