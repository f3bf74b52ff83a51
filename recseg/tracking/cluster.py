"""A tracking server for a cluster on one host: ``mlflow server`` with its runs in PostgreSQL
and its artifacts in an S3 bucket that the server proxies (jobs need no S3 credentials), and
optionally MLflow's basic-auth login (its users in PostgreSQL too).

PostgreSQL is a cluster of its own in ``<root>/postgres`` (Debian's ``postgresql`` binaries,
``initdb`` on the first start, reused afterwards, listening on 127.0.0.1 only), or an existing
database (``--database-uri``). The object store is an existing S3 endpoint
(``MLFLOW_S3_ENDPOINT_URL`` and the ``AWS_*`` credentials: MinIO, Ceph RGW, AWS S3) or, for
development, a local ``moto_server`` (S3 over HTTP on loopback, in memory, with checked
credentials). Every password is generated into ``<root>/secrets`` (mode 0600) or read from
the environment; none is put on a command line, in a URI that is printed, or in a log.

``grid/tracking-server.sh`` runs ``python -m recseg.tracking.cluster``; tests and
``benchmarks/scale.py`` use :class:`Cluster` directly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from recseg.errors import EXIT_USAGE, InputError
from recseg.tracking import postgres
from recseg.tracking.store_checks import check_bucket, check_database, s3_client

SERVER_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
AUTH_INI = """[mlflow]
default_permission = READ
database_uri = {db}
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
"""
S3_POLICY = {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}  # fmt: skip


@dataclasses.dataclass
class Cluster:
    """The server's settings; ``start``/``stop`` run it with all state under ``root``."""

    root: Path
    host: str = "127.0.0.1"
    port: int = 5000
    db_port: int = 5432
    s3_port: int = 9000
    bucket: str = "mlflow"
    prefix: str = "artifacts"
    auth: bool = False
    workers: int = 2
    database_uri: str | None = None  # an existing database, else a cluster under root
    s3_endpoint: str | None = None  # an S3 endpoint URL or "aws"; else moto_server here

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.secrets = self.root / "secrets"
        self.pg = postgres.Postgres(self.root / "postgres", self.db_port)
        self.s3_keys: dict[str, str] | None = None  # moto's keys (for its own use only)

    # ---- what jobs and users see -------------------------------------------------------
    @property
    def tracking_uri(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def backend_store(self) -> str:
        """The database URI (no password: it is in the password file)."""
        return self.database_uri or self.pg.uri("mlflow")

    @property
    def artifact_store(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def endpoint(self) -> str | None:
        """The S3 endpoint URL (None: AWS S3's own)."""
        if self.s3_endpoint == "aws":
            return None
        return self.s3_endpoint or f"http://127.0.0.1:{self.s3_port}"

    def secret(self, name: str, make: bool = True) -> str:
        """The secret ``name`` from ``<root>/secrets`` (generated on first use)."""
        path = self.secrets / name
        if not path.exists() and make:
            self.secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(24))
        return path.read_text().strip()

    @property
    def admin_password(self) -> str:
        return os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD") or self.secret("admin-password")

    # ---- start and stop ----------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> Cluster:
        """Start (or reuse) the database, the object store and the server; ``InputError``
        before the server starts when a store does not answer or refuses."""
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        if self.database_uri is None:
            password = self.secret("db-password")
            self.pg.start(password)
            for name in ("mlflow", "mlflow_auth") if self.auth else ("mlflow",):
                self.pg.create_database(name, password)
            check_database(self.backend_store, password)
        else:
            check_database(self.database_uri)
        if self.s3_endpoint is None:
            self.start_moto()
        check_bucket(f"{self.artifact_store}/", self.endpoint, self.s3_keys)
        self.start_mlflow(timeout)
        self.write_info()
        return self

    def spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Start ``cmd`` in a session of its own, its output in ``logs/<name>.log`` and its
        process id in ``<name>.pid``."""
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        with open(self.root / "logs" / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        (self.root / f"{name}.pid").write_text(f"{proc.pid}\n")
        return proc

    def start_moto(self) -> None:
        """``moto_server`` on loopback, in memory: an IAM user whose keys the server uses,
        then the bucket; every later request must be signed with those keys."""
        moto = Path(sys.executable).with_name("moto_server")
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}  # the three IAM calls below
        self.stop_process("moto")
        proc = self.spawn("moto", [str(moto), "-H", "127.0.0.1", "-p", str(self.s3_port)], env)
        url = f"http://127.0.0.1:{self.s3_port}"
        wait_http(f"{url}/moto-api/data.json", proc, self.root / "logs" / "moto.log")
        import boto3

        anonymous = {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1",
                           **anonymous)  # fmt: skip
        iam.create_user(UserName="mlflow")
        key = iam.create_access_key(UserName="mlflow")["AccessKey"]
        iam.put_user_policy(UserName="mlflow", PolicyName="s3",
                            PolicyDocument=json.dumps(S3_POLICY))  # fmt: skip
        self.s3_keys = {"aws_access_key_id": key["AccessKeyId"],
                        "aws_secret_access_key": key["SecretAccessKey"]}  # fmt: skip
        s3_client(url, self.s3_keys).create_bucket(Bucket=self.bucket)

    def server_env(self) -> dict[str, str]:
        """The environment of ``mlflow server``: where the stores are and their secrets."""
        env = {**os.environ, **SERVER_ENV, "MLFLOW_BACKEND_STORE_URI": self.backend_store}
        env.pop("MLFLOW_S3_ENDPOINT_URL", None)
        if self.endpoint is not None:
            env["MLFLOW_S3_ENDPOINT_URL"] = self.endpoint
        if self.database_uri is None:
            env["PGPASSFILE"] = str(self.pg.passfile(self.secrets, self.secret("db-password")))
        if self.s3_keys is not None:
            env["AWS_ACCESS_KEY_ID"] = self.s3_keys["aws_access_key_id"]
            env["AWS_SECRET_ACCESS_KEY"] = self.s3_keys["aws_secret_access_key"]
        if self.auth:
            auth_db = self.database_uri or self.pg.uri("mlflow_auth")  # beside MLflow's tables
            (self.root / "basic_auth.ini").write_text(AUTH_INI.format(db=auth_db))
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(self.root / "basic_auth.ini")
            env["MLFLOW_AUTH_ADMIN_PASSWORD"] = self.admin_password
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = self.secret("flask-secret-key")
        return env

    def start_mlflow(self, timeout: float) -> None:
        self.stop_process("mlflow")
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", self.host,
               "--port", str(self.port), "--workers", str(self.workers),
               "--artifacts-destination", self.artifact_store]  # fmt: skip
        if self.auth:
            cmd += ["--app-name", "basic-auth"]
        proc = self.spawn("mlflow", cmd, self.server_env())
        wait_http(f"{self.tracking_uri}/health", proc, self.root / "logs" / "mlflow.log", timeout)

    def write_info(self) -> None:
        """``<root>/server.json``: the URIs, never a secret."""
        info = {"tracking_uri": self.tracking_uri, "backend_store": self.backend_store,
                "artifact_store": self.artifact_store, "s3_endpoint": self.endpoint,
                "auth": self.auth}  # fmt: skip
        (self.root / "server.json").write_text(json.dumps(info, indent=1) + "\n")

    def stop_process(self, name: str) -> None:
        """Stop the process (and its session: gunicorn's workers) that ``<name>.pid`` names."""
        pidfile = self.root / f"{name}.pid"
        if not pidfile.exists():
            return
        pid = int(pidfile.read_text())
        for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not alive(pid):
                break
        pidfile.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop the server, the object store and the database (their data stays)."""
        self.stop_process("mlflow")
        self.stop_process("moto")
        if self.database_uri is None:
            self.pg.stop()

    def status(self) -> dict[str, bool]:
        """Which of its processes run (the ones this folder starts)."""

        def running(name: str) -> bool:
            path = self.root / f"{name}.pid"
            return path.exists() and alive(int(path.read_text()))

        found = {"mlflow": running("mlflow")}
        if self.s3_endpoint is None:
            found["moto"] = running("moto")
        if self.database_uri is None:
            found["postgres"] = self.pg.running()
        return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie child is reaped and counts as gone)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    """Wait until ``url`` answers 200; ``RuntimeError`` with the log's end if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise RuntimeError(f"{url} did not answer; the end of {log}:\n{tail}")
        time.sleep(0.3)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="grid/tracking-server.sh",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--root", type=Path, default=Path("tracking-server"),
                        help="the folder of all state (default ./tracking-server)")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--db-port", type=int, default=5432, help="own PostgreSQL's port")
    parser.add_argument("--s3-port", type=int, default=9000, help="moto_server's port")
    parser.add_argument("--bucket", default="mlflow")
    parser.add_argument("--prefix", default="artifacts", help="key prefix in the bucket")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--auth", action="store_true", help="MLflow's basic-auth login")
    parser.add_argument("--s3-endpoint", default=os.environ.get("MLFLOW_S3_ENDPOINT_URL"),
                        help="an S3 store's URL, or 'aws' (default: MLFLOW_S3_ENDPOINT_URL, "
                        "else a local moto_server)")  # fmt: skip
    parser.add_argument("--database-uri", default=None,
                        help="an existing database (password in PGPASSFILE)")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """``start``, ``stop`` or ``status`` the server; one line and exit 2 for bad input."""
    args = parse_args(argv)
    cluster = Cluster(args.root, args.host, args.port, args.db_port, args.s3_port, args.bucket,
                      args.prefix, args.auth, args.workers, args.database_uri,
                      args.s3_endpoint or None)  # fmt: skip
    try:
        if args.action == "stop":
            cluster.stop()
        elif args.action == "status":
            running = cluster.status()
            print(json.dumps(running))
            return 0 if all(running.values()) else 1
        else:
            cluster.start()
            where = cluster.endpoint or "AWS S3"
            print(
                f"recseg: tracking server up: backend {cluster.backend_store}, artifacts "
                f"{cluster.artifact_store} at {where}; logs in {args.root}/logs"
            )
            print(f"export MLFLOW_TRACKING_URI={cluster.tracking_uri}")
            if args.auth:
                print(f"# admin's password: {cluster.secrets}/admin-password (unless "
                      "MLFLOW_AUTH_ADMIN_PASSWORD was set)")  # fmt: skip
    except InputError as exc:
        if args.action == "start":  # nothing half-started stays behind
            cluster.stop()
        print(f"recseg: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
