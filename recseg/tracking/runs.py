"""Starting MLflow runs the same way everywhere (``recseg`` commands and ``mlflow run``)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from recseg.errors import InputError


def quiet_mlflow() -> None:
    """No telemetry, ever; called before recseg touches MLflow."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def tracked_run(
    experiment: str, run_name: str | None = None, tags: dict[str, str] | None = None
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run in ``experiment``; inside ``mlflow run`` the run it started is used.

    The tracking server is ``MLFLOW_TRACKING_URI`` when set, else MLflow's default.
    """
    quiet_mlflow()
    inside_project = bool(os.environ.get("MLFLOW_RUN_ID"))
    if not inside_project:
        mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=None if inside_project else run_name) as run:
        if tags:
            mlflow.set_tags(tags)
        yield run


def log_new_params(params: dict[str, str]) -> None:
    """Log params the active run does not have yet. ``mlflow run`` logs the values it was
    given (as typed); recseg adds the ones left at their defaults without clashing."""
    run = mlflow.active_run()
    assert run is not None, "log_new_params needs an active run"
    have = mlflow.get_run(run.info.run_id).data.params
    missing = {k: v for k, v in params.items() if k not in have}
    if missing:
        mlflow.log_params(missing)


def existing_run(client: MlflowClient, run_id: str) -> Run:
    """The run ``--run-id`` names; ``InputError`` when the server has none or it is deleted."""
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise InputError(
            f"--run-id: no run {run_id} on the tracking server {mlflow.get_tracking_uri()}"
        ) from None
    if run.info.lifecycle_stage == "deleted":
        raise InputError(f"--run-id: run {run_id} is deleted")
    return run
