"""One training job (``recseg train``): set up, continue the MLflow run from its latest
checkpoint, train, and end with 0 (the run is FINISHED) or 99 (stopped on request after a
checkpoint: requeue me).

In data-parallel training (``recseg.training.distributed``) rank 0 does all of that; it hands
the other processes the config and the checkpoint to start from (:class:`Handoff`), they train
their lanes without ever talking to MLflow, and end with rank 0's exit code."""

from __future__ import annotations

import dataclasses
import itertools
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from recseg.errors import EXIT_OK, EXIT_REQUEUE, InputError
from recseg.machine import pick_device
from recseg.models.norms import LEGACY_NORM
from recseg.tracking import HTTP_DEFAULTS
from recseg.tracking import tags as T
from recseg.tracking.model_uri import load_network
from recseg.tracking.runs import is_outage
from recseg.tracking.train import RETRY_EVERY, find_run
from recseg.tracking.train_finish import already_done, finish, start_tracking
from recseg.tracking.train_hooks import Echo, Job
from recseg.training import checkpoint as ckpt
from recseg.training.config import TrainConfig
from recseg.training.distributed import Dist, Handoff
from recseg.training.launch import JOB_START, write_outcome
from recseg.training.setup import Setup, build_setup
from recseg.training.stopping import StopRequest, TimeBudget
from recseg.training.trainer import Trainer
from recseg.training.warm_start import warm_start


def _newest_checkpoint(
    cfg: TrainConfig, run_id: str, tag_step: int, warn: Echo
) -> dict[str, Any] | None:
    """The newest good checkpoint of the run: the local ``latest.pt`` (``previous.pt`` when
    it is damaged), or the run's artifact when that is newer. A damaged file is reported and
    skipped, never loaded; ``CorruptCheckpoint`` when every one there is damaged."""
    folder = Path(cfg.checkpoint_dir) / run_id
    damaged: list[str] = []
    payload = _first_good([folder / ckpt.LATEST, folder / ckpt.PREVIOUS], damaged, warn)
    if tag_step >= 0 and (payload is None or payload["progress"]["step"] < tag_step):
        remote = _artifact_checkpoint(run_id, damaged, warn)
        if remote is not None and (payload is None or _step(remote) > _step(payload)):
            payload = remote
    if payload is None and damaged:
        raise ckpt.CorruptCheckpoint(f"no usable checkpoint for run {run_id}: {damaged[0]}")
    if payload is not None:
        _check_belongs(payload, cfg, run_id)
        if damaged:
            warn(f"resuming from the checkpoint of epoch {payload['progress']['epoch']}, "
                 f"step {_step(payload)}")  # fmt: skip
    return payload


def _step(payload: dict[str, Any]) -> int:
    return int(payload["progress"]["step"])


def _first_good(paths: list[Path], damaged: list[str], warn: Echo) -> dict[str, Any] | None:
    """The first of ``paths`` that exists and loads; damaged ones are reported and skipped."""
    for path in paths:
        if not path.exists():
            continue
        try:
            return ckpt.load(path)
        except ckpt.CorruptCheckpoint as exc:
            damaged.append(str(exc))
            warn(f"{exc}; not using it")
    return None


def _artifact_checkpoint(run_id: str, damaged: list[str], warn: Echo) -> dict[str, Any] | None:
    """The run's artifact ``checkpoints/latest.pt``; None when it is gone or damaged."""
    artifact = f"checkpoints/{ckpt.LATEST}"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact, dst_path=tmp
            )
        except Exception:  # the tag was set but the upload is gone: fall back to local
            return None
        try:
            return ckpt.load(path)
        except ckpt.CorruptCheckpoint as exc:
            damaged.append(f"the run's artifact {artifact}: {exc}")
            warn(f"the run's artifact {artifact} is damaged ({exc}); not using it")
            return None


def _check_belongs(payload: dict[str, Any], cfg: TrainConfig, run_id: str) -> None:
    """``InputError`` for a checkpoint of another run or another model."""
    if payload.get("run_id") != run_id:
        raise InputError(f"checkpoint of run {payload.get('run_id')} found for run {run_id}")
    if payload.get("model_name") not in (None, cfg.model):
        raise InputError(
            f"checkpoint for run {run_id} holds a {payload['model_name']} model, not {cfg.model}"
        )


def legacy_norm(cfg: TrainConfig, run: Run, state: dict[str, Any] | None) -> TrainConfig:
    """``cfg`` to continue ``run`` with. A run that a recseg before ``--norm`` started (its
    params or checkpoint name model options but no ``model_norm``) trained BatchNorm: it goes on
    with ``--norm batch`` (``auto`` means that here; another norm is refused)."""
    params = run.data.params
    saved = (state or {}).get("resolved", {})
    if "model_norm" in params or "model_norm" in saved:
        return cfg
    if state is None and "model_output_stride" not in params:
        return cfg  # nothing trained yet (a scheduled run): the norm is free
    if cfg.norm not in ("auto", LEGACY_NORM):
        raise InputError(
            f"--norm {cfg.norm}: run {run.info.run_id} was started by a recseg without --norm "
            f"and trains BatchNorm; continue it with --norm auto or {LEGACY_NORM}"
        )
    return dataclasses.replace(cfg, norm=LEGACY_NORM)


def _make_trainer(cfg: TrainConfig, setup: Setup, stop: StopRequest, dist: Dist) -> Trainer:
    return Trainer(
        setup.model,
        setup.loss_fn,
        setup.optimizer,
        setup.scheduler,
        setup.train_loader,
        setup.val_loader,
        epochs=cfg.epochs,
        eval_every=cfg.eval_every,
        best_metric=cfg.best_metric,
        device=setup.device,
        amp=cfg.amp,
        stop=stop,
        budget=TimeBudget(cfg.time_limit, start=_process_start()),
        progress_bars=os.isatty(2) and dist.is_leader,
        dist=dist,
    )


def _process_start() -> float:
    """``time.monotonic()`` at which this process (or the launcher that started it, which
    says when in ``RECSEG_JOB_START``) started: the job's clock."""
    import psutil

    started = float(os.environ.get(JOB_START) or psutil.Process().create_time())
    return time.monotonic() - max(0.0, time.time() - started)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a training job ended: the exit code (0 or 99) and the run."""

    code: int
    run_id: str


def train(cfg: TrainConfig, echo: Echo = print, stop: StopRequest | None = None) -> int:
    """Run (or continue) a training run; returns the exit code (0 or 99)."""
    return train_run(cfg, echo, stop).code


def train_run(cfg: TrainConfig, echo: Echo = print, stop: StopRequest | None = None) -> Outcome:
    """Run (or continue) a training run; see :class:`Outcome`.

    ``stop`` is an installed :class:`StopRequest` (the command installs one before the heavy
    imports, so a signal that comes early is not lost); by default one is made here. Started
    as one of several processes (``recseg.training.distributed``), this process trains its
    share of the lanes; rank 0 alone tracks the run."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    own = stop is None
    stop = stop or StopRequest()
    if own:
        stop.install()
    dist = Dist.from_env(pick_device(cfg.device))
    try:
        if not dist.is_leader:
            return _follow(cfg, stop, dist)
        outcome = _lead(cfg, echo, stop, dist)
        write_outcome(outcome.code, outcome.run_id)
        return outcome
    finally:
        dist.close()
        if own:
            stop.restore()


def _lead(cfg: TrainConfig, echo: Echo, stop: StopRequest, dist: Dist) -> Outcome:
    """Rank 0 (or the only process): find the run, train it and track everything."""
    warn = lambda m: echo(f"warning: {m}")  # noqa: E731
    with Handoff(dist) as handoff:
        existing = _find_run(cfg, warn)
        if existing is not None and already_done(existing, echo):
            handoff.send(Outcome(EXIT_OK, existing.info.run_id))
            return Outcome(EXIT_OK, existing.info.run_id)
        state = None
        if existing is not None:
            tag = int(existing.data.tags.get(T.CHECKPOINT_STEP, -1))
            state = _newest_checkpoint(cfg, existing.info.run_id, tag, warn)
            cfg = legacy_norm(cfg, existing, state)
        setup = build_setup(cfg, warn=warn, device=dist.device, shard=dist.shard)
        if state is None and cfg.init_from:  # a resumed run's weights come from its checkpoint
            setup.resolved["init_tensors"] = warm_start(setup.model, cfg.init_from, load_network)
        trainer = _make_trainer(cfg, setup, stop, dist)
        if state is not None:  # before the run is touched: a mismatch is the user's to fix
            trainer.load_state_dict(state)
        job = Job(cfg, setup, trainer, echo)
        code = _run(job, existing, state, handoff)
    outcome = Outcome(code, job.run_id)
    dist.broadcast_object(outcome)  # the others end with the same code
    return outcome


def _follow(cfg: TrainConfig, stop: StopRequest, dist: Dist) -> Outcome:
    """Another process than rank 0: train this process's lanes from where rank 0 says, with
    no MLflow; end with rank 0's outcome (``LeaderFailed`` when it failed before training)."""
    start = Handoff.receive(dist)
    if isinstance(start, Outcome):  # finished already: nothing to do
        return start
    cfg, state = start
    quiet = lambda m: None  # noqa: E731  (rank 0 says everything once)
    setup = build_setup(cfg, warn=quiet, device=dist.device, shard=dist.shard)
    trainer = _make_trainer(cfg, setup, stop, dist)
    if state is not None:
        trainer.load_state_dict(state)
        ckpt.set_rng_state(state["rng"])
    dist.own_random_stream(cfg.seed, trainer.progress.step)
    trainer.fit(lambda record: None, quiet)
    return dist.broadcast_object(None)


def _find_run(cfg: TrainConfig, warn: Echo) -> Run | None:
    """``find_run``; a job that resumes a run (a requeued grid job) waits up to
    ``--tracking-timeout`` for a tracking server that does not answer; a new run does not."""
    resuming = bool(cfg.run_id or os.environ.get("MLFLOW_RUN_ID"))
    deadline = time.monotonic() + (cfg.tracking_timeout if resuming else 0.0)
    for attempt in itertools.count():
        try:
            return find_run(cfg, MlflowClient())
        except Exception as exc:
            if not is_outage(exc) or time.monotonic() + RETRY_EVERY > deadline:
                raise
            if attempt == 0:
                warn(f"tracking server unreachable; retrying for {cfg.tracking_timeout:.0f} s")
            time.sleep(RETRY_EVERY)
    return None


def _run(job: Job, existing: Run | None, state: dict[str, Any] | None, handoff: Handoff) -> int:
    """Track, train and finish; a crash ends the run FAILED (KILLED for Ctrl-C), not FINISHED
    as MLflow's exit handler would. The other processes start once the run is tracked."""
    try:
        start_tracking(job, existing, state)
        job.clean_temp_files()
        handoff.send((job.cfg, state))
        if state is not None:
            ckpt.set_rng_state(state["rng"])
        if not job.trainer.fit(job.on_epoch_end, job.on_stop):
            job.run.end("KILLED")
            return EXIT_REQUEUE
        if not finish(job):  # the server stayed away: the checkpoint is here, requeue
            job.on_stop(job.server_gone())
            return EXIT_REQUEUE
        return EXIT_OK
    except BaseException as exc:
        if job.run is not None and mlflow.active_run() is not None:
            job.run.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
