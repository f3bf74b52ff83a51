"""grid/*.sge and ``recseg sweep`` on a real single-node Grid Engine (grid/local-sge.sh), with
a real MLflow server: soft limits that span jobs of one run, sweeps, the restart limit, qdel
and bad input. Skipped, with the reason, where no Grid Engine can be set up (not root)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from recseg.tracking import tags as T
from recseg.training import checkpoint as ckpt
from tests import sge
from tests.stores import make_store

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

TRAIN = {"MODEL": "Deep_mobile_gruV3", "LOSS": "CrossDice", "EPOCHS": "4", "BATCH_SIZE": "2",
         "SEQ_LEN": "3", "NUM_WORKERS": "0", "SYSTEM_METRICS": "false"}  # fmt: skip
# Grid Engine holds the hard kill back 90 s after the soft limit's SIGUSR1: h_rt >= s_rt + 91
SOFT_LIMIT = "s_rt=0:0:15,h_rt=0:2:0"


@pytest.fixture(scope="module")
def grid_engine():
    started = sge.ensure_grid_engine()
    sge.delete_leftover_jobs()
    yield
    if started:
        sge.stop_grid_engine()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough clips that 4 epochs take about half a minute on one core; test clips too."""
    return make_store(tmp_path_factory.mktemp("grid-store"), train=(24,) * 6, test=(8,))


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("grid-small-store"))


def job_env(uri: str, **variables: str) -> dict[str, str]:
    return {"RECSEG_ENV": sys.prefix, "MLFLOW_TRACKING_URI": uri, **variables}


def recseg(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "recseg", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def only_run(uri: str, experiment: str):
    """The one training run of the experiment (the evaluation adds its summary run)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, experiment
    runs = client.search_runs([exp.experiment_id], f"tags.`{T.KIND}` = 'train'")
    assert len(runs) == 1, [(r.info.run_id, r.info.status) for r in runs]
    return client, runs[0]


def epochs_logged(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def local_training(store: Path, cwd: Path, uri: str, experiment: str) -> subprocess.Popen:
    """The same training, uninterrupted, outside the grid (one thread, as the jobs have)."""
    args = []
    for name, value in {**TRAIN, "DATA": str(store), "EXPERIMENT": experiment}.items():
        flag = "--" + name.lower().replace("_", "-")
        args += ["--no-system-metrics"] if name == "SYSTEM_METRICS" else [flag, value]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "recseg", "train", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def test_soft_limit_spans_jobs_of_one_run_and_evaluation_waits(
    grid_engine, store: Path, tmp_path: Path, mlflow_server: str
) -> None:
    jobs, local = tmp_path / "jobs", tmp_path / "local"
    jobs.mkdir(), local.mkdir()
    variables = job_env(mlflow_server, DATA=str(store), EXPERIMENT="grid-requeue", **TRAIN)
    first = sge.qsub("train.sge", variables, "-N", "t-requeue", "-l", SOFT_LIMIT, cwd=jobs)
    evaluation = job_env(mlflow_server, DATA=str(store), EXPERIMENT="grid-requeue",
                         LATENCY_FRAMES="3", WARMUP="1", VIDEO_FRAMES="0")  # fmt: skip
    sge.qsub("evaluate.sge", evaluation, "-N", "t-evaluate", "-hold_jid", first, cwd=jobs)
    reference = local_training(store, local, mlflow_server, "grid-reference")
    sge.wait_until_gone({"t-requeue", "t-evaluate"}, timeout=600)
    out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, out[-3000:]

    records = sge.accounting("t-requeue", first, expected=3)
    assert len(records) >= 3 and records[0].job == first, records
    assert all(r.exit_status == 0 for r in records), records
    for record, nxt in itertools.pairwise(records):
        assert f"resubmitted as job {nxt.job}" in sge.log_of(jobs, "t-requeue", record.job)
    assert "finished run" in sge.log_of(jobs, "t-requeue", records[-1].job)

    client, run = only_run(mlflow_server, "grid-requeue")
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.tags[T.RESTARTS] == str(len(records) - 1)
    for key in ("train_loss", "val_loss", "val_fg_iou", "lr", "epoch_seconds"):
        assert epochs_logged(client, run_id, key) == [0, 1, 2, 3], key
    _, ref = only_run(mlflow_server, "grid-reference")
    final = ckpt.load(jobs / "checkpoints" / run_id / ckpt.LATEST)["model"]
    expected = ckpt.load(local / "checkpoints" / ref.info.run_id / ckpt.LATEST)["model"]
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[k], expected[k]) for k in expected)

    # the evaluation was held until the last training job ended, not just the first one
    (evaluated,) = sge.accounting("t-evaluate", first, expected=1)
    assert evaluated.exit_status == 0
    assert sge.started_after_end(evaluated, records[-1]), (evaluated, records[-1])
    assert "test_fg_iou" in client.get_run(run_id).data.metrics


def test_data_parallel_job_on_two_slots(
    grid_engine, small_store: Path, tmp_path: Path, mlflow_server: str
) -> None:
    """NPROC=2 on the two slots of `-pe smp 2`: one run, tracked by rank 0, FINISHED. (Stop and
    resume of a two-process run: tests/test_distributed.py.)"""
    variables = job_env(mlflow_server, DATA=str(small_store), EXPERIMENT="grid-ddp",
                        **{**TRAIN, "EPOCHS": "2", "NPROC": "2"})  # fmt: skip
    job = sge.qsub("train.sge", variables, "-N", "t-ddp", "-pe", "smp", "2", cwd=tmp_path)
    sge.wait_until_gone({"t-ddp"}, timeout=600)
    (record,) = sge.accounting("t-ddp", job, expected=1)
    log = sge.log_of(tmp_path, "t-ddp", job)
    assert record.exit_status == 0 and "finished run" in log, log
    assert log.count("epoch 2/2") == 1, log  # rank 0 alone reports
    client, run = only_run(mlflow_server, "grid-ddp")
    assert run.info.status == "FINISHED" and run.data.tags["processes"] == "2"
    for key in ("train_loss", "val_fg_iou"):
        assert epochs_logged(client, run.info.run_id, key) == [0, 1], key
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [run.info.run_id]


def test_sweep_submits_each_configuration_once(
    grid_engine, small_store: Path, store: Path, tmp_path: Path, mlflow_server: str
) -> None:
    args = ["sweep", "--data", str(small_store), "--model", "Deep+_mobile,Deep_mobile_gruV1",
            "--loss", "CrossDice,SoftDice", "--epochs", "1", "--batch-size", "2",
            "--seq-len", "3", "--num-workers", "0", "--no-system-metrics",
            "--experiment", "grid-sweep", "--log-dir", "logs"]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    first = recseg(*args, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    submitted = [ln.split()[2].rstrip(":") for ln in first.stdout.splitlines()
                 if ln.strip().startswith("submitted job")]  # fmt: skip
    assert len(submitted) == 4, first.stdout
    names = {f"{m}-{loss}" for m in ("Deep+_mobile", "Deep_mobile_gruV1")
             for loss in ("CrossDice", "SoftDice")}  # fmt: skip
    sge.wait_until_gone(names, timeout=600)
    for name in names:
        (record,) = sge.accounting(name, min(submitted, key=int), expected=1)
        assert record.exit_status == 0 and record.job in submitted, record

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("grid-sweep")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get(T.KIND) == "sweep"]
    children = [r for r in runs if r.data.tags.get(T.KIND) == "train"]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0].info.run_id
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.tags[T.JOB] in submitted
    assert {(r.data.params["model"], r.data.params["loss"]) for r in children} == {
        tuple(n.split("-")) for n in names
    }

    again = recseg(*args, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert "0 to submit" in again.stdout and "submitted job" not in again.stdout
    assert not sge.queued(names)
    assert len(client.search_runs([exp.experiment_id])) == 5

    # a configuration whose job was deleted before it started: SCHEDULED without a job
    held = [*args[:4], "Deep+_mobile", "--loss", "CrossEntropy", *args[7:], "--qsub-args", "-h"]
    third = recseg(*held, cwd=tmp_path, env=env)
    assert third.returncode == 0 and "submitted job" in third.stdout, third.stderr
    job = next(ln.split()[2].rstrip(":") for ln in third.stdout.splitlines() if "submitted" in ln)
    subprocess.run(["qdel", job], check=True, capture_output=True)
    retry = recseg(*held, "--retry", "--dry-run", cwd=tmp_path, env=env)
    assert "retry: model=Deep+_mobile loss=CrossEntropy" in retry.stdout, retry.stdout

    # the sweep -> evaluate -> report path of the full thesis comparison, reduced (scored on a
    # store with a test split: the small one has none)
    scored = recseg("evaluate", "--data", str(store), "--experiment", "grid-sweep",
                    "--latency-frames", "0", "--video-frames", "0", "--num-workers", "0",
                    cwd=tmp_path, env=env)  # fmt: skip
    assert scored.returncode == 0, scored.stderr[-2000:]
    report = recseg("report", "--experiment", "grid-sweep", "--out", "report", cwd=tmp_path,
                    env=env)  # fmt: skip
    assert report.returncode == 0, report.stderr[-2000:]
    assert "## Recurrent − base, with 95 % intervals" in report.stdout, report.stdout
    rows = [ln for ln in report.stdout.splitlines()
            if ln.startswith("| Deep_mobile_gruV1 (CrossDice) | ")]  # fmt: skip
    assert {ln.split(" | ")[1] for ln in rows} >= {"foreground IoU", "temporal error (per true "
                                                    "person pixel)"}, report.stdout  # fmt: skip
    assert (tmp_path / "report" / "intervals.csv").is_file()


def test_restart_limit_qdel_bad_input_and_lr_find(
    grid_engine, store: Path, tmp_path: Path, mlflow_server: str
) -> None:
    good = job_env(mlflow_server, DATA=str(store), **TRAIN)
    # enough epochs that the resubmitted job cannot finish before its own stop either
    limited = {**good, "EXPERIMENT": "grid-limit", "MAX_RESTARTS": "1", "EPOCHS": "40"}
    # only a hard limit: SIGUSR2 a notify time (10 s) before SIGKILL; checkpoint and resubmit
    first = sge.qsub("train.sge", limited, "-N", "t-limit", "-l", "h_rt=0:0:20",
                     cwd=tmp_path)  # fmt: skip
    deleted = sge.qsub("train.sge", {**good, "EXPERIMENT": "grid-qdel"}, "-N", "t-qdel",
                       cwd=tmp_path)  # fmt: skip
    bad = {
        "t-no-data": ({k: v for k, v in good.items() if k != "DATA"}, "DATA"),
        "t-bad-env": ({**good, "RECSEG_ENV": "no-such-env"}, "RECSEG_ENV=no-such-env"),
        "t-bad-model": ({**good, "MODEL": "NoSuchModel"}, "MODEL: unknown model 'NoSuchModel'"),
    }
    for name, (variables, _) in bad.items():
        sge.qsub("train.sge", variables, "-N", name, cwd=tmp_path)
    # RECSEG_ENV by name, found under CONDA_ROOT/envs (here: a link to this environment)
    (tmp_path / "conda" / "envs").mkdir(parents=True)
    (tmp_path / "conda" / "envs" / "recseg-env").symlink_to(sys.prefix)
    lr = job_env(mlflow_server, DATA=str(store), MODEL="Deep+_mobile", LOSS="CrossDice",
                 WEIGHT_DECAYS="0%2C1e-4", NUM_ITER="4", BATCH_SIZE="2", SEQ_LEN="2",
                 NUM_WORKERS="0", EXPERIMENT="grid-lr", RECSEG_ENV="recseg-env",
                 CONDA_ROOT=str(tmp_path / "conda"))  # fmt: skip
    sge.qsub("lr_find.sge", lr, "-N", "t-lr-find", cwd=tmp_path)

    log = tmp_path / f"t-qdel.{deleted}.log"
    deadline = time.monotonic() + 300
    while "epoch 1/" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the qdel job never finished an epoch"
        time.sleep(0.5)
    subprocess.run(["qdel", deleted], check=True, capture_output=True)
    sge.wait_until_gone({"t-limit", "t-qdel", "t-lr-find", *bad}, timeout=600)

    for name, (_, needle) in bad.items():  # at once, one line, no resubmission
        (record,) = sge.accounting(name, first, expected=1)
        assert record.exit_status == 2 and record.wallclock < 60, record
        lines = sge.log_of(tmp_path, name, record.job).strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("recseg: error:"), lines
        assert needle in lines[0], lines

    limit = sge.accounting("t-limit", first, expected=2)
    assert len(limit) == 2 and [r.exit_status for r in limit] == [0, 1], limit
    assert "stopped: signal SIGUSR2" in sge.log_of(tmp_path, "t-limit", limit[0].job)
    assert f"resubmitted as job {limit[1].job}" in sge.log_of(tmp_path, "t-limit", limit[0].job)
    assert "restart limit reached" in sge.log_of(tmp_path, "t-limit", limit[-1].job)
    _, run = only_run(mlflow_server, "grid-limit")
    assert run.info.status == "FAILED"
    assert "restart limit reached" in run.data.tags[T.STOPPED]

    (record,) = sge.accounting("t-lr-find", first, expected=1)  # a comma (%2C) in a variable
    assert record.exit_status == 0, sge.log_of(tmp_path, "t-lr-find", record.job)
    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("grid-lr").experiment_id])
    decays = [float(r.data.params["weight_decay"]) for r in runs if "weight_decay" in r.data.params]
    assert sorted(decays) == [0.0, 1e-4], decays

    # deleted with qdel: checkpointed, not resubmitted
    (record,) = sge.accounting("t-qdel", first, expected=1)
    assert "being deleted (qdel): not resubmitted" in sge.log_of(tmp_path, "t-qdel", deleted)
    _, run = only_run(mlflow_server, "grid-qdel")
    assert run.info.status == "KILLED" and "SIGUSR2" in run.data.tags[T.STOPPED]
    assert (tmp_path / "checkpoints" / run.info.run_id / ckpt.LATEST).exists()
