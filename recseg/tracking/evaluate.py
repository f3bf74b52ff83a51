"""The MLflow side of ``recseg evaluate``: which runs to score, logging ``test_*`` metrics and
visual results into them, and turning evaluated runs into report records."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Run, RunTag

from recseg.errors import InputError
from recseg.evaluation.report import RunRecord, variant_label
from recseg.models.registry import model_spec
from recseg.tracking import tags as T
from recseg.tracking.listing import TRAIN_FILTER, experiment_names, search_all
from recseg.tracking.runs import existing_run, log_files
from recseg.training.config import JOB_OPTIONS

EVAL_STORE = "recseg.eval.store"  # digest of the store the test_* metrics come from
EVAL_SIZE = "recseg.eval.size"
EVAL_DEVICE = "recseg.eval.device"
EVAL_TIME = "recseg.eval.time"
SUMMARY_METRICS = ("miou", "fg_iou", "bg_iou", "dice", "fg_dice", "pixel_accuracy",
                   "per_class_accuracy", "flicker", "loss")  # fmt: skip
MAX_BATCH = 200


def training_run(client: MlflowClient, run_id: str) -> Run:
    """The finished training run ``run_id`` with a logged model; ``InputError`` otherwise."""
    run = existing_run(client, run_id)
    kind = run.data.tags.get(T.KIND)
    if kind != "train":
        raise InputError(f"--run-id: run {run_id} is a {kind or 'non-recseg'} run, not training")
    if not run.data.tags.get(T.MODEL_LOGGED):
        raise InputError(
            f"--run-id: run {run_id} has no model (status {run.info.status}); finish its "
            f"training first (recseg train --run-id {run_id})"
        )
    return run


def finished_runs(client: MlflowClient, experiment: str) -> tuple[str, list[Run]]:
    """The experiment's id and its finished training runs that logged a model."""
    ids = experiment_names(client, experiment)
    runs = [
        r
        for r in search_all(client, list(ids), TRAIN_FILTER)
        if r.info.status == "FINISHED" and r.data.tags.get(T.MODEL_LOGGED)
    ]
    if not runs:
        raise InputError(
            f"--experiment {experiment}: no finished training runs with a model to evaluate"
        )
    return next(iter(ids)), runs


def evaluated_on(run: Run, store_digest: str) -> bool:
    """Whether the run has test metrics from the store with this digest."""
    return run.data.tags.get(EVAL_STORE) == store_digest and "test_miou" in run.data.metrics


def log_evaluation(
    client: MlflowClient,
    run_id: str,
    metrics: dict[str, float],
    tags: dict[str, Any],
    artifacts: dict[str, bytes],
) -> None:
    """Metrics (step 0), tags and artifacts into a run, finished or not (it stays as it is)."""
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, 0) for k, v in metrics.items() if math.isfinite(float(v))]
    for i in range(0, len(items), MAX_BATCH):
        client.log_batch(run_id, metrics=items[i : i + MAX_BATCH])
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    log_files(artifacts, client=client, run_id=run_id)


def eval_tags(info: dict[str, Any], store_digest: str) -> dict[str, Any]:
    return {
        EVAL_STORE: store_digest,
        EVAL_SIZE: info["size"],
        EVAL_DEVICE: info["device"],
        EVAL_TIME: time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# params a run derives from its options and its seed (how the lanes pack the clips differs by a
# few steps from seed to seed; --init-from's count of tensors): not part of a configuration
DERIVED = ("steps_per_epoch", "total_steps", "cycle_steps", "init_tensors")


def _group(params: dict[str, str]) -> str:
    """Runs that differ only by seed (and job options) form one configuration."""
    skip = {"seed", *JOB_OPTIONS, *DERIVED}
    keep = {k: v for k, v in params.items() if k not in skip and not k.startswith("resolved_")}
    return json.dumps(keep, sort_keys=True)


def _split(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {k: metrics[prefix + k] for k in SUMMARY_METRICS if prefix + k in metrics}


def to_record(run: Run) -> RunRecord:
    """A report record of an evaluated training run (or evaluate run of a bare model)."""
    m, params, tags = run.data.metrics, run.data.params, run.data.tags
    name = tags.get(T.MODEL) or params.get("model", "")
    spec = model_spec(name)
    train = _split(m, "eval_train_") or _split(m, "train_")  # else the last training epoch's
    return RunRecord(
        run_id=run.info.run_id,
        run_name=run.info.run_name or run.info.run_id,
        model=name,
        label=variant_label(spec),
        backbone=spec.backbone,
        loss=params.get("loss", tags.get("loss", "")),
        seed=int(float(params.get("seed", 0))),
        group=_group(params) if params.get("model") else run.info.run_id,
        test=_split(m, "test_"),
        train=train,
        latency_ms=m.get("test_latency_ms"),
        latency_p90_ms=m.get("test_latency_p90_ms"),
        fps=m.get("test_fps"),
        params=int(m.get("params_total", float(params.get("params_total", 0)))),
        gflops=m.get("gflops"),
        device=tags.get(EVAL_DEVICE, ""),
    )


def evaluated_runs(client: MlflowClient, experiment_id: str) -> list[Run]:
    """Finished training runs of the experiment that have test metrics."""
    runs = search_all(client, [experiment_id], TRAIN_FILTER)
    return [r for r in runs if r.info.status == "FINISHED" and "test_miou" in r.data.metrics]
