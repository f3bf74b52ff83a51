"""The MLflow side of a training run: find or start the run, check params, log each metric
step once (batched), upload checkpoints and artifacts, keep the liveness tags current."""

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

from recseg.errors import InputError
from recseg.tracking import tags as T
from recseg.tracking.runs import existing_run, log_new_params, quiet_mlflow
from recseg.training.config import TrainConfig, check_unchanged

MAX_BATCH = 200  # MLflow accepts up to 1000 metrics per log_batch call; stay well below


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
        self.done = done

    @classmethod
    def start(cls, cfg: TrainConfig, existing: Run | None) -> TrainRun:
        """Start a new run in ``cfg.experiment`` or reopen ``existing``."""
        quiet_mlflow()
        client = MlflowClient()
        if existing is None:
            mlflow.set_experiment(cfg.experiment_name)
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

    def log_metrics(self, metrics: dict[str, float], step: int) -> int:
        """Log finite metrics at ``step`` in one batch, skipping steps already logged."""
        now = int(time.time() * 1000)
        new = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if (k, step) not in self.done and v is not None and math.isfinite(float(v))
        ]
        for i in range(0, len(new), MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=new[i : i + MAX_BATCH])
        self.done.update((m.key, step) for m in new)
        return len(new)

    def set_tags(self, tags: dict[str, Any]) -> None:
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        self.client.log_batch(self.run_id, tags=items)

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
        self.client.log_artifact(self.run_id, str(path), folder)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        """Log ``data`` as the artifact ``artifact_file`` (``folder/name``)."""
        folder, _, name = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            self.client.log_artifact(self.run_id, str(path), folder or None)

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
        if getattr(self, "_beating", None) is not None:
            self._beating.set()
        mlflow.end_run(status=status)


class Uploader:
    """Uploads checkpoint files from a background thread, so the next epoch does not wait for
    the network; the tags saying which checkpoint the artifacts hold are set after the files
    arrived. One upload at a time: ``submit`` and ``wait`` first finish the previous one."""

    def __init__(self, run: TrainRun, warn: Callable[[str], None]) -> None:
        self.run, self.warn = run, warn
        self.seconds = 0.0  # how long the last upload took
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recseg-upload")
        self._pending: Future | None = None

    def submit(self, paths: list[Path], tags: dict[str, Any]) -> None:
        self.wait()
        self._pending = self._pool.submit(self._upload, list(paths), dict(tags))

    def _upload(self, paths: list[Path], tags: dict[str, Any]) -> None:
        start = time.perf_counter()
        for path in paths:
            self.run.upload(path, "checkpoints")
        self.run.set_tags(tags)
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
