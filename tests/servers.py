"""Real ``mlflow server`` processes for tests: start one on 127.0.0.1, wait until it answers,
stop it (and start it again on the same port and store, as after an outage)."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import requests

# no telemetry; no background job runner (8 huey processes per server that tests never use)
SERVER_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """An ``mlflow server`` with its sqlite store and artifacts under ``root``."""

    def __init__(
        self,
        root: Path,
        port: int | None = None,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.root, self.port = root, port or free_port()
        self.args, self.env = args, env or {}
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> Server:
        """Start the server and wait until ``/health`` answers."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "1",
                 "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                 "--artifacts-destination", str(self.root / "artifacts"), *self.args],
                stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **SERVER_ENV, **self.env},
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log_text = (self.root / "server.log").read_text()[-2000:]
                raise RuntimeError(f"mlflow server did not start: {log_text}")
            time.sleep(0.3)
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server (its gunicorn/uvicorn workers too)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


AUTH_INI = """[mlflow]
default_permission = READ
database_uri = sqlite:///{db}
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# each request's password check costs ~0.3 s of PBKDF2 without this cache
auth_cache_ttl_seconds = 60
"""


class LockedServer(Server):
    """``mlflow server --app-name basic-auth`` (users log in; READ on what is not theirs), its
    auth database and ini under ``root``; ``passwords`` holds admin's and each added user's."""

    def __init__(self, root: Path, port: int | None = None, args: tuple[str, ...] = ()) -> None:
        self.passwords = {"admin": secrets.token_urlsafe(16)}
        env = {
            "MLFLOW_AUTH_CONFIG_PATH": str(root / "basic_auth.ini"),
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.passwords["admin"],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
        }
        super().__init__(root, port, ("--app-name", "basic-auth", *args), env)

    def start(self, timeout: float = 120.0) -> LockedServer:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "basic_auth.ini").write_text(AUTH_INI.format(db=self.root / "basic_auth.db"))
        super().start(timeout)
        return self

    def add_user(self, name: str) -> str:
        """Create user ``name`` (as admin) with a fresh random password; returns it."""
        self.passwords[name] = secrets.token_urlsafe(16)
        made = self.rest("admin", "2.0/mlflow/users/create", username=name,
                         password=self.passwords[name])  # fmt: skip
        made.raise_for_status()
        return self.passwords[name]

    def login(self, user: str, password: str | None = None) -> dict[str, str]:
        """The environment a recseg command of ``user`` runs with."""
        return {"MLFLOW_TRACKING_URI": self.uri, "MLFLOW_TRACKING_USERNAME": user,
                "MLFLOW_TRACKING_PASSWORD": password or self.passwords[user]}  # fmt: skip

    def rest(self, user: str, endpoint: str, **body: object) -> requests.Response:
        """POST ``body`` as JSON to ``/api/<endpoint>`` as ``user``."""
        auth = (user, self.passwords[user])
        return requests.post(f"{self.uri}/api/{endpoint}", json=body, auth=auth, timeout=30)
