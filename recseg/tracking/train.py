"""The MLflow side of a training run: find or start the run, check params, log each metric
step once (batched), upload checkpoints and artifacts, keep the liveness tags current.

The tracking server may go away mid-run (a restart, a network outage): training goes on. Metrics
wait in memory (and in every checkpoint: see ``TrainRun.pending``), pictures in a local outbox
folder, and all of them are sent once the server answers again. How long it has been away is
``TrainRun.down_for()``; the job decides when that is too long.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Run, RunTag
from mlflow.tracking import MlflowClient

from recseg.data.store import atomic_write_bytes
from recseg.errors import InputError
from recseg.faults import fail_point
from recseg.tracking import tags as T
from recseg.tracking.runs import (
    existing_run,
    is_outage,
    log_new_params,
    quiet_mlflow,
    use_experiment,
)
from recseg.training.config import TrainConfig, check_unchanged

MAX_BATCH = 200  # MLflow accepts up to 1000 metrics per log_batch call; stay well below
RETRY_EVERY = 10.0  # seconds between attempts to reach a server that did not answer


def find_run(cfg: TrainConfig, client: MlflowClient) -> Run | None:
    """The run to continue (``--run-id`` or ``MLFLOW_RUN_ID``), checked; None for a new run."""
    env_id = os.environ.get("MLFLOW_RUN_ID", "")
    if cfg.run_id and env_id and cfg.run_id != env_id:
        raise InputError(
            f"--run-id {cfg.run_id} differs from MLFLOW_RUN_ID {env_id} (the run `mlflow run` "
            f"started); resume it with `mlflow run --run-id {cfg.run_id} ...`"
        )
    run_id = cfg.run_id or env_id
    if not run_id:
        return None
    run = existing_run(client, run_id)
    kind = run.data.tags.get(T.KIND)
    if kind not in (None, "train"):
        raise InputError(f"--run-id: run {run_id} is a {kind} run, not a training run")
    if cfg.run_id:  # given by the user: it must belong to the experiment named, if one is
        name = client.get_experiment(run.info.experiment_id).name
        if cfg.experiment and name != cfg.experiment:
            raise InputError(
                f"--run-id: run {run_id} belongs to experiment '{name}', not "
                f"'{cfg.experiment}' (pass --experiment '{name}')"
            )
    check_unchanged(cfg, run.data.params)
    return run


def set_run_tags(run_id: str, tags: dict[str, Any]) -> None:
    """Set tags on a run that is not active in this process."""
    MlflowClient().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def mark_failed(run_id: str, message: str) -> None:
    """End a run FAILED, saying why in its ``recseg.stopped`` tag."""
    set_run_tags(run_id, {T.STOPPED: message})
    MlflowClient().set_terminated(run_id, "FAILED")


def logged_steps(client: MlflowClient, run: Run) -> set[tuple[str, int]]:
    """``(metric, step)`` pairs the run already has (system metrics aside)."""
    done: set[tuple[str, int]] = set()
    for key in run.data.metrics:
        if key.startswith("system/"):
            continue
        done.update((key, m.step) for m in client.get_metric_history(run.info.run_id, key))
    return done


class TrainRun:
    """An active MLflow training run (fluent ``mlflow.start_run``, so system metrics work)."""

    def __init__(self, run: mlflow.ActiveRun, done: set[tuple[str, int]]) -> None:
        self.active = run
        self.run_id = run.info.run_id
        self.client = MlflowClient()
        self.done = done  # (metric, step) logged or pending
        self.pending: list[Metric] = []  # metrics the server has not taken yet
        self.outbox: Path | None = None  # artifacts waiting for the server
        self.warn: Callable[[str], None] = lambda message: None
        self.down_since: float | None = None
        self._next_try = 0.0

    @classmethod
    def start(cls, cfg: TrainConfig, existing: Run | None) -> TrainRun:
        """Start a new run in ``cfg.experiment`` or reopen ``existing``."""
        quiet_mlflow()
        client = MlflowClient()
        if existing is None:
            use_experiment(cfg.experiment_name, client)
            run = mlflow.start_run(
                run_name=f"{cfg.model}-{cfg.loss}", log_system_metrics=cfg.system_metrics
            )
            return cls(run, set())
        done = logged_steps(client, existing)
        run = mlflow.start_run(run_id=existing.info.run_id, log_system_metrics=cfg.system_metrics)
        return cls(run, done)

    def log_params(self, params: dict[str, Any]) -> None:
        """Log the params the run does not have yet (``mlflow run`` logs its own first)."""
        log_new_params({k: str(v) for k, v in params.items()})

    # ---- the server may be away ------------------------------------------------------------
    def down_for(self) -> float:
        """Seconds since the server stopped answering (0 while it answers)."""
        return 0.0 if self.down_since is None else time.monotonic() - self.down_since

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        """``fn(...)`` unless the server is known to be away (retried every ``RETRY_EVERY``
        seconds); False when it is away. A refusal (4xx) raises."""
        now = time.monotonic()
        if self.down_since is not None and now < self._next_try:
            return False
        try:
            fn(*args, **kwargs)
        except Exception as exc:
            if not is_outage(exc):
                raise
            if self.down_since is None:
                self.down_since = now
                reason = " ".join(str(exc).split())[:200]
                self.warn(f"tracking server unreachable ({reason}); training goes on, "
                          "metrics wait here until it is back")  # fmt: skip
            self._next_try = time.monotonic() + RETRY_EVERY
            return False
        if self.down_since is not None:
            self.warn(f"tracking server back after {self.down_for():.0f} s")
            self.down_since = None
        return True

    def flush(self) -> bool:
        """Send the pending metrics and the outbox; True when nothing waits any more."""
        while self.pending:
            batch = self.pending[:MAX_BATCH]
            if not self._call(self.client.log_batch, self.run_id, metrics=batch):
                return False
            del self.pending[: len(batch)]
        if self.outbox is None or not self.outbox.is_dir():
            return True
        waiting = (p for p in self.outbox.rglob("*") if p.is_file() and p.suffix != ".tmp")
        for path in sorted(waiting):
            folder = path.parent.relative_to(self.outbox).as_posix()
            if not self._call(self.client.log_artifact, self.run_id, str(path), folder):
                return False
            path.unlink()
        return True

    def wait_until_up(self, timeout: float) -> bool:
        """Flush, retrying until the server takes everything or ``timeout`` seconds passed."""
        deadline = time.monotonic() + max(0.0, timeout)
        while not self.flush():
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(RETRY_EVERY, max(0.1, deadline - time.monotonic())))
            self._next_try = 0.0
        return self._call(self.client.get_run, self.run_id)

    # ---- logging ----------------------------------------------------------------------------
    def log_metrics(self, metrics: dict[str, float], step: int) -> int:
        """Log finite metrics at ``step`` in one batch, skipping steps already logged; while
        the server is away they wait in ``pending``. Returns how many were new."""
        now = int(time.time() * 1000)
        new = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if (k, step) not in self.done and v is not None and math.isfinite(float(v))
        ]
        self.done.update((m.key, step) for m in new)
        self.pending.extend(new)
        self.flush()
        return len(new)

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set tags now; while the server is away they are dropped (they describe the
        present, and the next call sets them afresh)."""
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        self._call(self.client.log_batch, self.run_id, tags=items)

    def alive(self, **extra: Any) -> None:
        """Tags saying which process works on the run now."""
        self.set_tags(
            {
                T.HOST: socket.gethostname(),
                T.PID: os.getpid(),
                T.HEARTBEAT: f"{time.time():.0f}",
                **({T.JOB: os.environ["JOB_ID"]} if os.environ.get("JOB_ID") else {}),
                **extra,
            }
        )

    def upload(self, path: Path, folder: str) -> None:
        """Upload one file now (raises when the server is away: the caller retries)."""
        self.client.log_artifact(self.run_id, str(path), folder)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        """Log ``data`` as the artifact ``artifact_file`` (``folder/name``); while the server
        is away it waits in the outbox (a newer file of the same name replaces it)."""
        folder, _, name = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            if self.flush() and self._call(
                self.client.log_artifact, self.run_id, str(path), folder or None
            ):
                return
        if self.outbox is None:
            raise RuntimeError(f"tracking server unreachable; {artifact_file} not logged")
        atomic_write_bytes(self.outbox / artifact_file, data)

    def log_json(self, data: Any, artifact_file: str) -> None:
        self.log_bytes(json.dumps(data, indent=2, default=str).encode(), artifact_file)

    def start_heartbeat(self, every: float = 300.0) -> None:
        """Refresh the heartbeat tag every ``every`` seconds from a daemon thread, so a long
        epoch does not look like a dead job to ``recseg runs`` on another machine."""
        self._beating = threading.Event()

        def beat() -> None:
            while not self._beating.wait(every):
                with contextlib.suppress(Exception):  # a server outage must not stop training
                    self.set_tags({T.HEARTBEAT: f"{time.time():.0f}"})

        threading.Thread(target=beat, name="recseg-heartbeat", daemon=True).start()

    def end(self, status: str) -> None:
        """End the run with ``status``; while the server is away it stays RUNNING (``recseg
        runs --stale`` finds it; resuming continues it)."""
        if getattr(self, "_beating", None) is not None:
            self._beating.set()
        try:  # always called: it also clears MLflow's active run (else its exit handler
            mlflow.end_run(status=status)  # would mark the run FINISHED)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self.warn(f"could not mark run {self.run_id} {status}: tracking server unreachable")


class Uploader:
    """Uploads checkpoint files from a background thread, so the next epoch does not wait for
    the network; the tags saying which checkpoint the artifacts hold are set after the files
    arrived. One upload at a time: ``submit`` and ``wait`` first finish the previous one. Files
    that did not arrive (the server was away) are ``owed`` and go with the next upload."""

    def __init__(self, run: TrainRun, warn: Callable[[str], None]) -> None:
        self.run, self.warn = run, warn
        self.seconds = 0.0  # how long the last upload took
        self.owed: dict[Path, None] = {}  # files to upload, in order
        self.tags: dict[str, Any] = {}  # the tags that go with them
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recseg-upload")
        self._pending: Future | None = None

    def submit(self, paths: list[Path], tags: dict[str, Any]) -> None:
        self.wait()
        self.owed.update(dict.fromkeys(paths))
        self.tags = dict(tags)
        self._pending = self._pool.submit(self._upload, list(self.owed), self.tags)

    def _upload(self, paths: list[Path], tags: dict[str, Any]) -> None:
        if self.run.down_since is not None:  # not now: the next submit or finish() tries
            return
        start = time.perf_counter()
        for path in paths:
            self.run.upload(path, "checkpoints")
            fail_point("upload")
        self.run.client.log_batch(
            self.run.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]
        )
        self.owed.clear()
        self.seconds = time.perf_counter() - start

    def wait(self) -> None:
        """Finish the running upload; a failure is reported, the local checkpoint stays."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            pending.result()
        except Exception as exc:
            self.warn(f"could not upload the checkpoint to the run's artifacts: {exc}")

    def close(self) -> None:
        self.wait()
        self._pool.shutdown()

    def drain(self) -> None:
        """Close, uploading in this thread whatever is still owed (the server is back)."""
        self.close()
        if self.owed:
            self._upload(list(self.owed), self.tags)
