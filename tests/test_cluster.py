"""The cluster tracking server (grid/tracking-server.sh): a real PostgreSQL cluster, a real S3
server (moto_server, credentials checked) and ``mlflow server`` with basic-auth, started once
for the module. ``make scale``'s small version: concurrent jobs, one stopped and one killed and
resumed, audited by the benchmark's own audit; then bad input (a wrong database URI, an
unreachable or unauthorised object store, direct or behind the server: one line, exit 2, no
run; the server script refusing bad stores) and no secret anywhere.
Skipped only where PostgreSQL or moto_server is not installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from benchmarks.audit import audit_runs
from benchmarks.scale import Stack, audit_jobs, free_port, make_experiment, run_jobs, start_stack
from recseg.data.tiny_store import make_store
from recseg.tracking import HTTP_DEFAULTS, postgres

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 2
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    if postgres.bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql; make "
                    "installs it when run as root)")  # fmt: skip
    if not Path(sys.executable).with_name("moto_server").exists():
        pytest.skip("moto_server is not installed (pip install -e '.[dev]')")
    # not under pytest's temp folder: a pytest starting meanwhile makes its root 0700 again,
    # and the postgres user (as root) must reach the data folder all along
    root = Path(tempfile.mkdtemp(prefix="recseg-cluster-"))
    started = start_stack(root / "server", workers=1)
    yield started
    started.cluster.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("store") / "store", train=(8, 8, 8), val=(6,))


def recseg(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recseg", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def train_args(store: Path, experiment: str) -> list[str]:
    return ["train", "--data", str(store), "--model", "Deep_mobile_gruV1", "--loss", "CrossDice",
            "--epochs", "1",
            "--batch-size", "2", "--seq-len", "2", "--num-workers", "0",
            "--no-system-metrics", "--experiment", experiment]  # fmt: skip


def one_line_exit_2(done: subprocess.CompletedProcess, *words: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("recseg: error: "), lines
    for word in words:
        assert word in lines[0], lines[0]


def test_concurrent_jobs_killed_and_resumed_lose_nothing(
    stack: Stack, store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_experiment(stack.login)
    jobs = run_jobs(store, tmp_path, ["term", "kill"], EPOCHS, stack.login, kill_at=1)
    for name, value in {**stack.login, **HTTP_DEFAULTS}.items():
        monkeypatch.setenv(name, value)
    audit = audit_jobs(jobs, EPOCHS, stack.bucket)
    assert audit.ok, audit.problems
    assert (audit.runs, audit.finished, audit.models_loaded) == (2, 2, 2)
    assert audit.lost_metric_steps == audit.lost_artifacts == audit.duplicate_metric_steps == 0
    assert audit.metric_steps >= 2 * EPOCHS * 9 and audit.artifacts >= 2 * 2
    assert len(audit.latencies_ms) == 2 * EPOCHS
    # the audit finds what is missing: a checkpoint that differs from the job's local file
    job = jobs[0]
    local = tmp_path / "tampered"
    local.mkdir()
    (local / "latest.pt").write_bytes(b"not the checkpoint")
    (local / "best.pt").write_bytes((job.cwd / "checkpoints" / job.run_id / "best.pt").read_bytes())
    found = audit_runs({job.run_id: local}, EPOCHS + 1, stack.bucket)
    assert found.lost_artifacts == 1 and found.lost_metric_steps == 9, found.problems


def db_env(stack: Stack, **extra: str) -> dict[str, str]:
    """The environment of a job that writes straight to the database (no server)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    pgpass = stack.cluster.pg.passfile(stack.cluster.secrets, stack.cluster.secret("db-password"))
    return {**env, "PGPASSFILE": str(pgpass), "MLFLOW_TRACKING_URI": stack.cluster.backend_store,
            "MLFLOW_DISABLE_TELEMETRY": "true", **extra}  # fmt: skip


def s3_env(stack: Stack, key_id: str | None = None, secret: str | None = None) -> dict[str, str]:
    """S3 settings of a job that writes artifacts straight to the store: moto's keys, or
    others."""
    keys = stack.cluster.s3_keys
    return {"MLFLOW_S3_ENDPOINT_URL": stack.cluster.endpoint,
            "AWS_ACCESS_KEY_ID": key_id or keys["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": secret or keys["aws_secret_access_key"]}  # fmt: skip


def test_wrong_database_uri_is_one_line_and_exit_2(stack: Stack, store: Path, tmp_path: Path):
    port = stack.cluster.db_port
    cases = {
        f"postgresql://recseg:not-the-password@127.0.0.1:{port}/mlflow": "password",
        f"postgresql://recseg@127.0.0.1:{free_port()}/mlflow": "Connection refused",
        f"postgresql://recseg@127.0.0.1:{port}/no_such_db": "no_such_db",
    }
    for uri, word in cases.items():
        env = {**db_env(stack), "MLFLOW_TRACKING_URI": uri}
        done = recseg(train_args(store, "wrong-db"), env, tmp_path)
        one_line_exit_2(done, "MLFLOW_TRACKING_URI", word)
        assert "not-the-password" not in done.stderr


def test_unreachable_or_unauthorised_object_store_creates_no_run(
    stack: Stack, store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**db_env(stack), "AWS_MAX_ATTEMPTS": "1"}  # boto3: no retries of a dead endpoint
    monkeypatch.setenv("PGPASSFILE", env["PGPASSFILE"])
    client = MlflowClient(stack.cluster.backend_store)
    exp = client.create_experiment("direct-s3", artifact_location="s3://mlflow/direct")
    cases = [
        ({**s3_env(stack), "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"},
         "cannot write"),
        (s3_env(stack, secret="wrong"), "SignatureDoesNotMatch"),
    ]  # fmt: skip
    for extra, word in cases:
        done = recseg(train_args(store, "direct-s3"), {**env, **extra}, tmp_path)
        one_line_exit_2(done, "s3://mlflow/direct", word)
    assert client.search_runs([exp]) == []


def test_the_script_refuses_bad_stores_before_starting_a_server(stack: Stack, tmp_path: Path):
    script, env = ROOT / "grid" / "tracking-server.sh", db_env(stack)
    env["RECSEG_ENV"] = str(Path(sys.executable).parents[1])
    wrong = f"postgresql://recseg:nope@127.0.0.1:{stack.cluster.db_port}/mlflow"
    db = ["--database-uri", stack.cluster.backend_store]
    cases = [
        (["--database-uri", wrong], {}, "password"),
        (db, s3_env(stack, "nobody", "wrong"), "refused the S3 credentials"),
        ([*db, "--bucket", "missing"], s3_env(stack), "no bucket 'missing'"),
    ]
    for i, (args, extra, word) in enumerate(cases):
        root = tmp_path / f"server{i}"
        cmd = [str(script), "start", "--root", str(root), "--port", str(free_port()), *args]
        done = subprocess.run(cmd, env={**env, **extra}, capture_output=True, text=True,
                              timeout=120, cwd=ROOT)  # fmt: skip
        one_line_exit_2(done, word)
        assert "nope" not in done.stderr and not (root / "mlflow.pid").exists()
        assert not (root / "logs" / "mlflow.log").exists()


def test_no_secret_in_params_tags_logs_or_command_lines(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = stack.cluster
    secrets = {cluster.secret(n) for n in ("db-password", "admin-password", "flask-secret-key")}
    secrets |= {stack.login["MLFLOW_TRACKING_PASSWORD"], cluster.s3_keys["aws_secret_access_key"]}
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", cluster.admin_password)
    client = MlflowClient(cluster.tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs
    texts = [json.dumps([r.data.params, r.data.tags]) for r in runs]
    texts += [p.read_text(errors="replace") for p in cluster.root.rglob("*.log")]
    texts += [(cluster.root / "server.json").read_text()]
    texts += [Path(f"/proc/{int((cluster.root / 'mlflow.pid').read_text())}/cmdline").read_text()]
    assert "postgresql://" in texts[-2] and "s3://" in texts[-2]
    for text in texts:
        for secret in secrets:
            assert secret not in text


def test_a_server_whose_object_store_is_gone_creates_no_run(
    stack: Stack, store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Last in the module: it stops the object store behind the server (proxied artifacts)."""
    make_experiment(stack.login, "store-gone")
    stack.cluster.stop_process("moto")
    env = {**os.environ, **stack.login, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    done = recseg(train_args(store, "store-gone"), env, tmp_path)
    one_line_exit_2(done, "cannot write artifacts to mlflow-artifacts:")
    for name, value in stack.login.items():
        monkeypatch.setenv(name, value)
    client = MlflowClient()
    exp = client.get_experiment_by_name("store-gone")
    assert client.search_runs([exp.experiment_id]) == []
