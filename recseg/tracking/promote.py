"""``recseg promote``: register the best evaluated run's model and point an alias at it.

Aliases (``models:/NAME@champion``), not stages: MLflow deprecated stages. The model version
carries the metric, its value and the run id as tags and in its description.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from recseg.errors import InputError
from recseg.tracking import tags as T
from recseg.tracking.evaluate import EVAL_STORE, finished_runs, training_run
from recseg.tracking.runs import quiet_mlflow

LOWER_IS_BETTER = ("test_loss", "test_flicker", "test_latency_ms", "test_latency_p90_ms", "gflops")


@dataclasses.dataclass(frozen=True)
class Promotion:
    name: str
    alias: str
    version: str
    run_id: str
    metric: str
    value: float
    previous: str | None  # the version the alias pointed at before, if any

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"


def registered_name(experiment: str) -> str:
    """A registry name from an experiment name: ``demo`` -> ``recseg-demo``."""
    return "recseg-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", experiment).strip("-") or "model")


def check_metric(metric: str) -> None:
    if not metric.startswith("test_"):
        raise InputError(f"--metric must be a test_* metric (from recseg evaluate), got {metric}")


def best_run(runs: list[Run], metric: str) -> Run:
    """The run with the best finite ``metric``; ties go to the newest run."""
    scored = [r for r in runs if math.isfinite(r.data.metrics.get(metric, math.nan))]
    if not scored:
        raise InputError(
            f"no run has {metric}: evaluate them first (recseg evaluate --experiment ...)"
        )
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    return max(scored, key=lambda r: (sign * r.data.metrics[metric], r.info.start_time))


def _version_of(client: MlflowClient, name: str, run: Run) -> str | None:
    """An existing version of ``name`` made from this run's model (promote twice = one version)."""
    try:
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{run.info.run_id}'")
    except MlflowException:
        return None
    return max((v.version for v in versions), key=int, default=None)


def _previous(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return client.get_model_version_by_alias(name, alias).version
    except MlflowException:
        return None


def promote(
    experiment: str, metric: str, name: str = "", alias: str = "champion", run_id: str = ""
) -> Promotion:
    """Register the best run's model under ``name`` (when needed) and move ``alias`` to it."""
    quiet_mlflow()
    check_metric(metric)
    client = MlflowClient()
    if run_id:
        run = training_run(client, run_id)
        found = client.get_experiment(run.info.experiment_id).name
        if experiment and found != experiment:
            raise InputError(
                f"--run-id {run_id} belongs to experiment '{found}', not '{experiment}'"
            )
        if not math.isfinite(run.data.metrics.get(metric, math.nan)):
            raise InputError(f"--run-id {run_id}: the run has no {metric}; evaluate it first")
    else:
        _, runs = finished_runs(client, experiment)
        run = best_run(runs, metric)
    name = name or registered_name(experiment or client.get_experiment(run.info.experiment_id).name)
    value = run.data.metrics[metric]
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="recseg segmentation models")
    previous = _previous(client, name, alias)
    version = _version_of(client, name, run)
    if version is None:
        source = run.data.tags[T.MODEL_LOGGED]  # models:/m-ID, the run's logged model
        mv = client.create_model_version(
            name,
            source,
            run_id=run.info.run_id,
            tags={T.MODEL: run.data.tags.get(T.MODEL, "")},
            model_id=source.rsplit("/", 1)[-1] if source.startswith("models:/m-") else None,
        )
        version = mv.version
    client.update_model_version(
        name,
        version,
        description=f"{metric} = {value:.6g} (run {run.info.run_id}, model "
        f"{run.data.tags.get(T.MODEL, '')}, test store {run.data.tags.get(EVAL_STORE, '?')})",
    )
    for key, val in {
        metric: f"{value:.6g}",
        "metric": metric,
        "run_id": run.info.run_id,
        "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }.items():
        client.set_model_version_tag(name, version, key, val)
    try:
        client.set_registered_model_alias(name, alias, version)
    except MlflowException as exc:
        raise InputError(f"--alias {alias}: {exc.message}") from None
    return Promotion(name, alias, str(version), run.info.run_id, metric, value, previous)
