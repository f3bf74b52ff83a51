"""``python -m benchmarks.scale`` (``make scale``): the cluster tracking server under load.

Starts the server of ``grid/tracking-server.sh`` (PostgreSQL, an S3 object store - moto_server -
and ``mlflow server`` with basic-auth) in a temp folder, runs ``--runs`` (16) tiny ``recseg
train`` jobs at once as one non-admin user with no S3 credentials, stops a quarter of them with
SIGTERM (exit 99) and SIGKILLs another quarter in their second epoch and resumes each by run id,
then audits everything (``benchmarks/audit.py``) and measures the latency the jobs saw when
logging an epoch's metrics (their ``log_latency_ms``). Adds the data-parallel comparison of
``benchmarks/ddp.py``. Prints a table, writes ``benchmarks/scale.json``; exit 1 when the audit
found anything lost, duplicated or unfinished.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.audit import Audit, Bucket, audit_runs
from benchmarks.common import REPO
from recseg.tracking import HTTP_DEFAULTS
from recseg.training.launch import free_port

EXPERIMENT = "scale"
DDP_BOUND = 1e-4  # the largest weight difference of 2 processes against 1
KILL_IN_EPOCH = 2  # stop/kill once the job says it finished this epoch (1-based)


def train_args(epochs: int) -> tuple[str, ...]:
    """A tiny job: the smallest recurrent model, short clips, one thread."""
    return ("--model", "Deep_mobile_gruV1", "--loss", "CrossDice", "--epochs", str(epochs),
            "--batch-size", "2", "--seq-len", "2", "--num-workers", "0", "--device", "cpu",
            "--no-system-metrics", "--experiment", EXPERIMENT)  # fmt: skip


@dataclasses.dataclass
class Job:
    """One training job: its folder, what happens to it (``none``, ``term`` or ``kill`` in
    epoch 2, then resumed), its exit codes and output."""

    index: int
    cwd: Path
    plan: str
    kill_at: int = KILL_IN_EPOCH  # the epoch (1-based) after which it is interrupted
    codes: list[int] = dataclasses.field(default_factory=list)
    lines: list[str] = dataclasses.field(default_factory=list)
    run_id: str | None = None

    @property
    def expected(self) -> list[int]:
        return {"none": [0], "term": [99, 0], "kill": [-signal.SIGKILL, 0]}[self.plan]

    @property
    def ok(self) -> bool:
        return self.codes == self.expected and self.run_id is not None


def plan_of(i: int) -> str:
    return {1: "term", 3: "kill"}.get(i % 4, "none")


def job_env(login: dict[str, str]) -> dict[str, str]:
    """A job's environment: the server and the user's login only; no S3 credentials."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "MLFLOW_S3_", "MLFLOW_TRACKING_"))}  # fmt: skip
    threads = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return {**env, **login, **threads, "PYTHONDONTWRITEBYTECODE": "1"}


def run_once(job: Job, cmd: list[str], env: dict[str, str]) -> int:
    """Run one process of the job; interrupt it as planned in its second epoch."""
    out = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    proc = subprocess.Popen(cmd, cwd=job.cwd, env=env, start_new_session=True, **out)
    assert proc.stdout is not None
    interrupt = {"term": signal.SIGTERM, "kill": signal.SIGKILL}.get(job.plan)
    for line in proc.stdout:
        job.lines.append(line)
        if interrupt and not job.codes and line.startswith(f"epoch {job.kill_at}/"):
            os.killpg(proc.pid, interrupt)
            interrupt = None
    return proc.wait()


def drive(job: Job, store: Path, epochs: int, env: dict[str, str]) -> Job:
    """Run the job, and resume it by run id once after its planned interruption."""
    job.cwd.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "recseg", "train", "--data", str(store), *train_args(epochs)]
    job.codes.append(run_once(job, cmd, env))
    folders = [p for p in (job.cwd / "checkpoints").glob("*") if p.is_dir()]
    job.run_id = folders[0].name if len(folders) == 1 else None
    if job.plan != "none" and job.run_id is not None:
        job.codes.append(run_once(job, [*cmd, "--run-id", job.run_id], env))
    return job


def run_jobs(store: Path, work: Path, plans: list[str], epochs: int, login: dict[str, str],
             kill_at: int = KILL_IN_EPOCH) -> list[Job]:  # fmt: skip
    """A job per plan, all at once (in ``work/job-NN``), interrupted and resumed as planned
    (``none``, ``term``: SIGTERM, ``kill``: SIGKILL, once epoch ``kill_at`` is done)."""
    env = job_env(login)
    count = len(plans)
    jobs = [Job(i, work / f"job-{i:02d}", plan, kill_at) for i, plan in enumerate(plans)]
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda j: drive(j, store, epochs, env), jobs))


def job_problems(jobs: list[Job]) -> list[str]:
    """Jobs that did not end as planned, with the end of their output."""
    return [f"job {j.index} ({j.plan}): exit codes {j.codes}, expected {j.expected}: "
            f"{''.join(j.lines[-5:]).strip()}" for j in jobs if not j.ok]  # fmt: skip


def audit_jobs(jobs: list[Job], epochs: int, bucket: Bucket | None) -> Audit:
    """The audit of the jobs' runs (each job's local checkpoints beside it)."""
    runs = {j.run_id: j.cwd / "checkpoints" / j.run_id for j in jobs if j.run_id}
    audit = audit_runs(runs, epochs, bucket)
    audit.problems.extend(job_problems(jobs))
    return audit


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def ddp_figures(work: Path) -> dict[str, Any]:
    """``benchmarks/ddp.py``'s comparison (one process against two); None when missing."""
    try:
        from benchmarks.ddp import measure
    except ImportError as exc:
        print(f"note: no data-parallel comparison ({exc})")
        return {"ddp_processes": None, "ddp_max_abs_diff": None}
    figures = measure(work / "ddp")
    return {k: v for k, v in figures.items() if isinstance(v, int | float | str | None)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale",
                                     description=__doc__.splitlines()[0].strip("`"))  # fmt: skip
    parser.add_argument("--runs", type=int, default=16, help="concurrent jobs (default 16)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "scale.json")
    parser.add_argument("--work", type=Path, default=None, help="scratch (default: temp)")
    parser.add_argument("--no-ddp", action="store_true", help="skip the DDP comparison")
    return parser.parse_args(argv)


@dataclasses.dataclass
class Stack:
    """The running cluster server, the jobs' user's login, direct access to its bucket."""

    cluster: Any
    login: dict[str, str]
    bucket: Bucket


def start_stack(root: Path, workers: int = 2) -> Stack:
    """The cluster server with basic-auth under ``root`` (free ports), and a user ``jobs``
    with a random password. ``InputError`` (PostgreSQL not installed...) passes through."""
    import secrets

    import requests

    from recseg.tracking.cluster import Cluster
    from recseg.tracking.store_checks import s3_client

    cluster = Cluster(root, port=free_port(), db_port=free_port(), s3_port=free_port(),
                      auth=True, workers=workers)  # fmt: skip
    try:
        cluster.start()
        password = secrets.token_urlsafe(16)
        made = requests.post(f"{cluster.tracking_uri}/api/2.0/mlflow/users/create",
                             json={"username": "jobs", "password": password},
                             auth=("admin", cluster.admin_password), timeout=30)  # fmt: skip
        made.raise_for_status()
    except BaseException:
        cluster.stop()
        raise
    login = {"MLFLOW_TRACKING_URI": cluster.tracking_uri, "MLFLOW_TRACKING_USERNAME": "jobs",
             "MLFLOW_TRACKING_PASSWORD": password}  # fmt: skip
    bucket = Bucket(s3_client(cluster.endpoint, cluster.s3_keys), cluster.bucket, cluster.prefix)
    return Stack(cluster, login, bucket)


def make_experiment(login: dict[str, str], name: str = EXPERIMENT) -> str:
    """The jobs' experiment, made once by their user (so they do not race to create it)."""
    import requests

    auth = (login["MLFLOW_TRACKING_USERNAME"], login["MLFLOW_TRACKING_PASSWORD"])
    made = requests.post(f"{login['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/experiments/create",
                         json={"name": name}, auth=auth, timeout=30)  # fmt: skip
    made.raise_for_status()
    return made.json()["experiment_id"]


def results(jobs: list[Job], audit: Audit, stack: Stack, wall: float) -> dict[str, Any]:
    return {
        "concurrent_runs": len(jobs),
        "interrupted_and_resumed": sum(j.plan != "none" for j in jobs),
        "finished_runs": audit.finished,
        "metric_steps_checked": audit.metric_steps,
        "lost_metric_steps": audit.lost_metric_steps,
        "duplicate_metric_steps": audit.duplicate_metric_steps,
        "artifacts_checked": audit.artifacts,
        "lost_artifacts": audit.lost_artifacts,
        "models_loaded": audit.models_loaded,
        "backend_store": stack.cluster.backend_store,
        "artifact_store": stack.cluster.artifact_store,
        "log_latency_p50_ms": percentile(audit.latencies_ms, 50),
        "log_latency_p99_ms": percentile(audit.latencies_ms, 99),
        "log_latency_samples": len(audit.latencies_ms),
        "jobs_wall_s": round(wall, 1),
        "problems": audit.problems[:50],
    }


def table(data: dict[str, Any]) -> str:
    rows = [(k, v) for k, v in data.items() if k != "problems"]
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'figure':<{width}} | value |", f"|{'-' * (width + 2)}|------:|"]
    return "\n".join([*lines, *(f"| {k:<{width}} | {v} |" for k, v in rows)])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from recseg.data.tiny_store import make_store
    from recseg.tracking.runs import quiet_mlflow

    quiet_mlflow()  # no progress bars while the audit downloads

    with tempfile.TemporaryDirectory(prefix="recseg-scale-") as tmp:
        work = args.work or Path(tmp)
        store = make_store(work / "store")
        stack = start_stack(work / "server")
        try:
            make_experiment(stack.login)
            os.environ.update({**stack.login, **HTTP_DEFAULTS})  # the audit reads as the jobs do
            start = time.monotonic()
            plans = [plan_of(i) for i in range(args.runs)]
            jobs = run_jobs(store, work / "jobs", plans, args.epochs, stack.login)
            wall = time.monotonic() - start
            audit = audit_jobs(jobs, args.epochs, stack.bucket)
        finally:
            stack.cluster.stop()
        data = results(jobs, audit, stack, wall)
        data.update({"ddp_processes": None, "ddp_max_abs_diff": None})
        if not args.no_ddp:
            data.update(ddp_figures(work))
    print(table(data))
    for problem in data["problems"]:
        print(f"problem: {problem}")
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}")
    diff = data.get("ddp_max_abs_diff")
    bad = not audit.ok or data["lost_metric_steps"] or data["lost_artifacts"]
    return 1 if bad or (diff is not None and diff > DDP_BOUND) else 0


if __name__ == "__main__":
    sys.exit(main())
