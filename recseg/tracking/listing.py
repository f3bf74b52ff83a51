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

# Seconds without a heartbeat after which a run on another host is "gone?": three missed
# heartbeats (a training process sets one every 300 s; it gives up on an unreachable tracking
# server after --tracking-timeout, 900 s by default, so it cannot be silently alive for longer).
STALE_AFTER = 900.0
STALE = ("gone", "gone?")  # process states of a RUNNING run whose process is not there
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
    def stale(self) -> bool:
        """RUNNING, and its process is gone (this host) or silent too long (another host)."""
        return self.status == "RUNNING" and self.process in STALE

    def stale_reason(self, now: float) -> str:
        """Why the run counts as stale, for its ``recseg.stopped`` tag."""
        who = f"process {self.pid if self.pid is not None else '?'} on host {self.host or '?'}"
        if self.process == "gone":
            return f"stale: {who} gone; marked by recseg runs"
        last = self.heartbeat_age
        if last is None and self.start_time is not None:
            last = now - self.start_time
        silent = f"no heartbeat for {last:.0f} s" if last is not None else "no heartbeat"
        return f"stale: {who} gone ({silent}); marked by recseg runs"

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


def current_row(client: MlflowClient, run_id: str, stale_after: float = STALE_AFTER) -> RunRow:
    """The :class:`RunRow` of one run as it is now (to check a run again right before acting
    on it: its process may have come back since it was listed)."""
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id).name
    return to_row(run, experiment, time.time(), stale_after)


def mark_killed(client: MlflowClient, row: RunRow, stale_after: float = STALE_AFTER) -> str | None:
    """End a stale run KILLED with the reason in its ``recseg.stopped`` tag; the reason, or
    None when the run is no longer stale (it ended, or its process is there again)."""
    now = current_row(client, row.run_id, stale_after)
    if not now.stale:
        return None
    reason = now.stale_reason(time.time())
    client.set_tag(row.run_id, tags.STOPPED, reason)
    client.set_terminated(row.run_id, "KILLED")
    return reason
