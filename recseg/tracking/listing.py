"""Training runs as recorded in MLflow, with whether their process is still there.

A training process that was SIGKILLed (out of memory, grid time limit, ``kill -9``) never
tells MLflow: its run stays RUNNING. The tags in :mod:`recseg.tracking.tags` (host, pid,
heartbeat) let a reader tell such a run from one that is still working.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run

from recseg.errors import InputError
from recseg.tracking import tags
from recseg.tracking.runs import quiet_mlflow

STALE_AFTER = 2 * 3600.0  # seconds without a heartbeat after which a remote run is "gone?"
PAGE_SIZE = 1000  # runs / experiments per search request
TRAIN_FILTER = f"tags.`{tags.KIND}` = 'train'"


@dataclass(frozen=True)
class RunRow:
    """One training run, as ``recseg runs`` shows it.

    ``process`` is "alive", "gone" (same host, process not there), "unknown" (another host,
    recent heartbeat), "gone?" (another host, no heartbeat for ``stale_after`` seconds) or
    "-" (the run is not RUNNING). Times are unix seconds; ``heartbeat_age`` in seconds.
    """

    run_id: str
    run_name: str | None
    experiment: str
    status: str
    checkpoint_epoch: int | None
    epochs: int | None
    process: str
    heartbeat_age: float | None
    host: str | None
    pid: int | None
    job: str | None
    stopped: str | None
    start_time: float | None

    @property
    def progress(self) -> str:
        """Last checkpointed epoch out of the planned ones: "3/10", "3/?" or "-"."""
        if self.checkpoint_epoch is None:
            return "-"
        planned = "?" if self.epochs is None else str(self.epochs)
        return f"{self.checkpoint_epoch}/{planned}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OverflowError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (or it just went): os.kill said it was there
    # "pid (comm) state ...": comm may hold spaces and parentheses
    fields = stat.rpartition(")")[2].split()
    return not (fields and fields[0] == "Z")


def process_state(
    status: str,
    host: str | None,
    pid: int | None,
    last_sign: float | None,
    now: float,
    stale_after: float = STALE_AFTER,
) -> str:
    """What became of a run's process; ``last_sign`` is the unix time it was last seen."""
    if status != "RUNNING":
        return "-"
    if host is not None and host == socket.gethostname() and pid is not None:
        return "alive" if pid_alive(pid) else "gone"
    if last_sign is not None and now - last_sign > stale_after:
        return "gone?"
    return "unknown"


def _int(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    try:
        value = None if text is None else float(text)
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def to_row(run: Run, experiment: str, now: float, stale_after: float = STALE_AFTER) -> RunRow:
    """The :class:`RunRow` of an MLflow run."""
    run_tags = run.data.tags
    start = None if run.info.start_time is None else run.info.start_time / 1000
    heartbeat = _float(run_tags.get(tags.HEARTBEAT))
    host = run_tags.get(tags.HOST)
    pid = _int(run_tags.get(tags.PID))
    # no heartbeat yet: the start of the run is its last sign of life
    last_sign = heartbeat if heartbeat is not None else start
    return RunRow(
        run_id=run.info.run_id,
        run_name=run.info.run_name,
        experiment=experiment,
        status=run.info.status,
        checkpoint_epoch=_int(run_tags.get(tags.CHECKPOINT_EPOCH)),
        epochs=_int(run.data.params.get("epochs")),
        process=process_state(run.info.status, host, pid, last_sign, now, stale_after),
        heartbeat_age=None if heartbeat is None else round(max(0.0, now - heartbeat), 1),
        host=host,
        pid=pid,
        job=run_tags.get(tags.JOB),
        stopped=run_tags.get(tags.STOPPED),
        start_time=start,
    )


def experiment_names(client: MlflowClient, name: str | None) -> dict[str, str]:
    """Experiment id -> name: the one named ``name``, or every active experiment."""
    if name is not None:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise InputError(f"--experiment: no experiment named {name!r}")
        if found.lifecycle_stage != "active":
            raise InputError(f"--experiment: experiment {name!r} is deleted")
        return {found.experiment_id: found.name}
    names: dict[str, str] = {}
    token = None
    while True:
        page = client.search_experiments(max_results=PAGE_SIZE, page_token=token)
        names.update((e.experiment_id, e.name) for e in page)
        token = page.token
        if not token:
            return names


def list_training_runs(
    experiment: str | None = None,
    client: MlflowClient | None = None,
    now: float | None = None,
    stale_after: float = STALE_AFTER,
) -> list[RunRow]:
    """Training runs of ``experiment`` (a name), or of every experiment, newest first.

    The tracking server is ``client``'s, else MLflow's (``MLFLOW_TRACKING_URI`` or its
    default). ``now`` (unix seconds) is the time heartbeat ages are measured against.
    """
    quiet_mlflow()
    client = client or MlflowClient()
    now = time.time() if now is None else now
    names = experiment_names(client, experiment)
    if not names:
        return []
    runs = search_all(client, list(names), TRAIN_FILTER)
    return [to_row(run, names[run.info.experiment_id], now, stale_after) for run in runs]


def search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list[Run]:
    """Every run matching ``filter_string`` in the experiments, newest first (all pages)."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            experiment_ids,
            filter_string=filter_string,
            max_results=PAGE_SIZE,
            order_by=["attributes.start_time DESC", "attributes.run_id ASC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs
