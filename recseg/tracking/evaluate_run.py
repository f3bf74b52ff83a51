"""``recseg evaluate``: score one run, one model or every finished run of an experiment on the
test split; log ``test_*`` into the training runs and a summary run with the table and figures."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run

from recseg.config import as_params
from recseg.data.store import ClipStore
from recseg.evaluation.frames import PER_CLIP
from recseg.evaluation.report import summary_table, to_html
from recseg.machine import pick_device
from recseg.tracking import evaluate as te
from recseg.tracking import tags as T
from recseg.tracking.evaluate_config import DEFAULT_EXPERIMENT, EvaluateConfig
from recseg.tracking.evaluate_model import (
    ModelEvaluation,
    check_splits,
    evaluate_model,
    split_prefix,
)
from recseg.tracking.model_uri import load_network
from recseg.tracking.preprocess import store_dataset
from recseg.tracking.report_run import table_files
from recseg.tracking.runs import log_files, log_new_params, quiet_mlflow, tracked_run
from recseg.training.config import parse_param
from recseg.training.setup import open_store

Echo = Callable[[str], None]


@dataclasses.dataclass
class Target:
    """A model to score, and the training run it came from (None for a bare --model-uri)."""

    uri: str
    run: Run | None


def _targets(cfg: EvaluateConfig, client: MlflowClient, digest: str, echo: Echo):
    """(experiment name, experiment id or None, targets to score)."""
    if cfg.run_id:
        run = te.training_run(client, cfg.run_id)
        name = client.get_experiment(run.info.experiment_id).name
        return name, run.info.experiment_id, [Target(run.data.tags[T.MODEL_LOGGED], run)]
    if cfg.model_uri:
        return DEFAULT_EXPERIMENT, None, [Target(cfg.model_uri, None)]
    exp_id, runs = te.finished_runs(client, cfg.experiment)
    todo = [r for r in runs if cfg.force or not te.evaluated_on(r, digest)]
    if len(todo) < len(runs):
        echo(f"{len(runs) - len(todo)} run(s) already evaluated on this store (--force redoes)")
    return cfg.experiment, exp_id, [Target(r.data.tags[T.MODEL_LOGGED], r) for r in todo]


def _artifacts(result: ModelEvaluation, split: str) -> dict[str, bytes]:
    out = {
        "evaluation/evaluation.json": json.dumps(
            {
                "metrics": result.metrics,
                **result.info,
                "latency": dataclasses.asdict(result.latency) if result.latency else None,
            },
            indent=2,
        ).encode()
    }
    if result.per_clip:
        out[PER_CLIP] = json.dumps({"split": split, "clips": result.per_clip}).encode()
    if result.grid_png:
        out[f"evaluation/{split}_predictions.png"] = result.grid_png
    if result.video_mp4:
        out[f"evaluation/{split}_predictions.mp4"] = result.video_mp4
    return out


def _line(label: str, result: ModelEvaluation, split: str) -> str:
    m = result.metrics
    p = split_prefix(split)
    parts = [f"{label}: {split} mIoU {m[p + 'miou']:.4f}", f"fg IoU {m[p + 'fg_iou']:.4f}",
             f"flicker {m[p + 'flicker']:.4f}"]  # fmt: skip
    if result.latency:
        lat = result.latency
        parts.append(f"{lat.median_ms:.1f} ms/frame (p90 {lat.p90_ms:.1f}) on {lat.device}")
    parts.append(f"{m['gflops']:.2f} GFLOPs/frame")
    return ", ".join(parts)


def _score(target: Target, cfg: EvaluateConfig, store: ClipStore, device, echo: Echo):
    loaded = load_network(target.uri, device)
    params = target.run.data.params if target.run else {}
    logged = parse_param("loss", params["loss"]) if params.get("loss") else ""  # mlflow run: ''
    loss = cfg.loss or logged or "CrossDice"
    return evaluate_model(loaded, store, cfg, loss, device, progress=sys.stderr.isatty())


def _summary(client: MlflowClient, cfg: EvaluateConfig, exp_id: str | None, own: list[Run]):
    """Table and figures of every evaluated run (of the experiment, or the ones just scored)."""
    runs = te.evaluated_runs(client, exp_id) if cfg.experiment and exp_id else own
    records = [te.to_record(r) for r in runs]
    if not records:
        return
    rows = summary_table(records)
    title = f"recseg evaluation: {cfg.experiment or cfg.run_id or cfg.model_uri}"
    log_files({"summary.html": to_html(rows, title), **table_files(records, rows)}, "summary")
    mlflow.log_metric("runs_summarised", len(records))


def run_evaluation(cfg: EvaluateConfig, echo: Echo = print) -> int:
    """Evaluate what ``cfg`` names; log everything; 0 when done."""
    cfg.check_target()
    quiet_mlflow()
    store = open_store(cfg.data)
    check_splits(store, cfg.split_names)
    device = pick_device(cfg.device)
    client = MlflowClient()
    dataset = store_dataset(store)
    experiment, exp_id, targets = _targets(cfg, client, dataset.digest, echo)
    split = cfg.split_names[0]
    tags = {T.KIND: "evaluate"}
    with tracked_run(experiment, run_name=f"evaluate-{split}", tags=tags) as active:
        log_new_params(as_params(cfg))
        mlflow.log_input(dataset, context=split)
        scored: list[Run] = []
        for target in targets:
            result = _score(target, cfg, store, device, echo)
            run_id = target.run.info.run_id if target.run else active.info.run_id
            if target.run is None:
                loaded_name = result.info["model"]
                client.set_tag(run_id, T.MODEL, loaded_name)
            te.log_evaluation(
                client,
                run_id,
                result.metrics,
                te.eval_tags(result.info, dataset.digest),
                _artifacts(result, split),
            )
            label = target.run.info.run_name if target.run else target.uri
            echo(_line(label, result, split))
            scored.append(client.get_run(run_id))
        _summary(client, cfg, exp_id, scored)
        echo(f"evaluation run {active.info.run_id} in experiment {experiment}")
    return 0
