"""The beginning and the end of a training run in MLflow: params, tags, data and system
information when a job starts; the best weights as a pyfunc model when the run ends."""

from __future__ import annotations

import importlib.metadata
import platform
import random
import socket
import sys
import time
from typing import Any

import mlflow
import torch
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from recseg.config import as_params
from recseg.faults import fail_point
from recseg.tracking import tags as T
from recseg.tracking.preprocess import store_dataset
from recseg.tracking.pyfunc import log_clip_model
from recseg.tracking.train import TrainRun
from recseg.tracking.train_hooks import Echo, Job
from recseg.training import checkpoint as ckpt
from recseg.training.config import JOB_OPTIONS


def already_done(run: Run, echo: Echo) -> bool:
    """True (and says so) when the run finished and logged its model already."""
    if run.info.status == "FINISHED" and run.data.tags.get(T.MODEL_LOGGED):
        echo(f"run {run.info.run_id} is already finished: {run.data.tags[T.MODEL_LOGGED]}")
        return True
    return False


def system_info(device: torch.device) -> dict[str, Any]:
    """The machine, the accelerator and the installed packages of this job."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": sys.version,
        "cpus": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "gpu": gpu,
        "packages": sorted(
            f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()
        ),
    }


def _tags(job: Job) -> dict[str, Any]:
    spec = job.setup.model.spec
    return {
        T.KIND: "train",
        T.MODEL: job.cfg.model,
        T.BACKBONE: spec.backbone,
        T.CELL: spec.cell or "none",
        T.POSITION: spec.position or "none",
        "store_previous": spec.store_previous,
        "loss": job.cfg.loss,
        "device": str(job.setup.device),
        "processes": job.trainer.dist.world_size,  # data-parallel processes of this job
    }


def start_tracking(job: Job, existing: Run | None, state: dict[str, Any] | None) -> None:
    """Start or reopen the run; log what a new run needs and what an interrupted job missed."""
    cfg = job.cfg
    job.attach(TrainRun.start(cfg, existing))
    run = job.run
    assert run is not None
    params = {**as_params(cfg), "experiment": cfg.experiment_name}
    if existing is not None:
        params = {k: v for k, v in params.items() if k not in JOB_OPTIONS}
    run.log_params({**params, **job.setup.resolved})
    run.set_tags(_tags(job))
    run.alive()
    run.start_heartbeat()
    info = system_info(job.setup.device)
    run.log_json(info, f"system/{info['hostname']}-{int(time.time())}.json")
    if existing is None or not existing.inputs.dataset_inputs:  # new, or scheduled by a sweep
        _log_dataset(store_dataset(job.setup.store))
    if state is not None:
        _catch_up(job, state)
    run.flush()  # pictures an earlier job kept while the server was away


def _log_dataset(dataset: Any, tries: int = 3) -> None:
    """``mlflow.log_input``; jobs starting together race to create the experiment's dataset
    record (a unique-constraint error for the losers): the next try finds it made."""
    for attempt in range(tries):
        try:
            mlflow.log_input(dataset, context="train")
            return
        except MlflowException as exc:
            if attempt == tries - 1 or "UNIQUE" not in str(exc).upper():
                raise
            time.sleep(0.5 + random.random())


def _catch_up(job: Job, state: dict[str, Any]) -> None:
    """Log epochs the checkpoint has but MLflow lacks (a job killed between the two)."""
    run = job.run
    assert run is not None
    by_epoch: dict[int, dict[str, float]] = {}
    for key, points in state["progress"]["history"].items():
        for epoch, value in points:
            by_epoch.setdefault(int(epoch), {})[key] = value
    for epoch, metrics in sorted(by_epoch.items()):
        run.log_metrics(metrics, step=epoch)
    for key, value, _, step in state.get("pending", []):  # waited for a server that was away
        run.log_metrics({key: value}, step=int(step))
    tag = int(run.client.get_run(run.run_id).data.tags.get(T.CHECKPOINT_STEP, -1))
    if state["progress"]["step"] > tag:  # the local checkpoint never reached the server
        folder = job.folder / run.run_id
        for name in (ckpt.LATEST, ckpt.BEST):
            if (folder / name).exists():
                run.upload(folder / name, "checkpoints")
        p = state["progress"]
        run.set_tags({T.CHECKPOINT_EPOCH: p["epoch"], T.CHECKPOINT_STEP: p["step"]})


def finish(job: Job) -> bool:
    """Log the best weights as the run's pyfunc model and end the run FINISHED; False (nothing
    done) when the tracking server stays away for the rest of ``--tracking-timeout``."""
    run, uploads = job.run, job.uploads
    assert run is not None and uploads is not None
    uploads.wait()
    if not run.wait_until_up(job.cfg.tracking_timeout - run.down_for()):
        return False
    uploads.drain()
    model, p = job.setup.model, job.trainer.progress
    best = job.folder / run.run_id / ckpt.BEST
    rule = job.cfg.resolved_final_weights
    if rule == "best" and best.exists():
        model.load_state_dict(ckpt.load(best)["model"])
    model.eval()
    info = log_clip_model(model, job.cfg.model, size=job.setup.train_loader.size)
    fail_point("log-model")
    summary = f"best {job.cfg.best_metric} {p.best_value} at epoch {p.best_epoch}"
    chosen = f"epoch {p.best_epoch}" if rule == "best" else f"epoch {p.epoch - 1} (last)"
    tags = {T.MODEL_LOGGED: info.model_uri, T.STOPPED: "", "best": summary,
            T.FINAL_WEIGHTS: f"{rule}: {chosen}"}  # fmt: skip
    run.set_tags(tags)
    run.alive(**job.checkpoint_tags())
    run.end("FINISHED")
    job.echo(f"finished run {run.run_id}: {summary}; model {info.model_uri} ({rule} weights)")
    return True
