"""The hooks of a tracked training job: ``Job`` glues the trainer, its checkpoints and the MLflow
run together (what each epoch logs and saves, what a stop leaves behind)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recseg.config import as_params
from recseg.errors import EXIT_REQUEUE
from recseg.faults import fail_point
from recseg.tracking import tags as T
from recseg.tracking.train import TrainRun, Uploader
from recseg.training import checkpoint as ckpt
from recseg.training.config import TrainConfig
from recseg.training.setup import Setup
from recseg.training.trainer import EpochRecord, Trainer

Echo = Callable[[str], None]


class Job:
    """Glue between the trainer, checkpoints and the MLflow run (the trainer's hooks)."""

    def __init__(self, cfg: TrainConfig, setup: Setup, trainer: Trainer, echo: Echo) -> None:
        self.cfg, self.setup, self.trainer, self.echo = cfg, setup, trainer, echo
        self.run: TrainRun | None = None
        self.uploads: Uploader | None = None
        self.folder = Path(cfg.checkpoint_dir)

    def attach(self, run: TrainRun) -> None:
        """Use ``run`` from now on (uploads go through a background thread; artifacts wait in
        ``<checkpoint dir>/<run id>/outbox/`` while the server is away)."""
        self.run = run
        run.warn = self.warn
        run.outbox = self.folder / run.run_id / "outbox"
        self.uploads = Uploader(run, warn=self.warn)

    def warn(self, message: str) -> None:
        self.echo(f"warning: {message}")

    @property
    def run_id(self) -> str:
        assert self.run is not None
        return self.run.run_id

    def payload(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "model_name": self.cfg.model,
            "config": as_params(self.cfg),
            "resolved": self.setup.resolved,
            "rng": ckpt.rng_state(),
            **self.trainer.state_dict(),
            # metrics the server has not taken yet: a resumed job sends them
            "pending": [[m.key, m.value, m.timestamp, m.step] for m in self.run.pending],
        }

    def clean_temp_files(self) -> None:
        """Remove temp files a killed job left beside the checkpoints (never a checkpoint)."""
        for stale in (self.folder / self.run_id).rglob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def save_latest(self) -> Path:
        path = self.folder / self.run_id / ckpt.LATEST
        ckpt.save(path, self.payload(), keep_previous=True)
        return path

    def save_best(self, record: EpochRecord) -> Path:
        path = self.folder / self.run_id / ckpt.BEST
        ckpt.save(
            path,
            {
                "run_id": self.run_id,
                "model_name": self.cfg.model,
                "model_options": self.setup.model.options.to_dict(),
                "epoch": record.epoch,
                "metric": self.cfg.best_metric,
                "value": record.metrics.get(self.cfg.best_metric),
                "model": self.setup.model.state_dict(),
            },
        )
        return path

    def checkpoint_tags(self) -> dict[str, Any]:
        p = self.trainer.progress
        return {T.CHECKPOINT_EPOCH: p.epoch, T.CHECKPOINT_STEP: p.step}

    def on_epoch_end(self, record: EpochRecord) -> None:
        """Log the epoch's metrics (``log_latency_ms``: how long that call took) and pictures,
        then checkpoint locally (a job killed between the two redoes the epoch and skips what
        was logged), then upload the checkpoints in the background (the next epoch does not
        wait for the network)."""
        start = time.perf_counter()
        run, uploads = self.run, self.uploads
        assert run is not None and uploads is not None
        uploads.wait()  # the files it reads are about to be replaced
        sent = time.perf_counter()
        run.log_metrics(record.metrics, step=record.epoch)
        latency_ms = (time.perf_counter() - sent) * 1000  # what logging costs the job
        self.log_pictures(record)
        fail_point("log-metrics")
        overhead = time.perf_counter() - start
        timing = {"overhead_seconds": overhead, "log_latency_ms": latency_ms}
        run.log_metrics(timing, step=record.epoch)
        paths = [self.save_latest()]
        if record.improved:
            paths.append(self.save_best(record))
        uploads.submit(paths, self.checkpoint_tags())
        self.trainer.budget.checkpoint_seconds = time.perf_counter() - start + uploads.seconds
        run.alive()
        self.echo(_epoch_line(record, self.cfg.epochs, overhead))
        if run.down_for() > self.cfg.tracking_timeout:
            self.trainer.stop.request(self.server_gone())

    def server_gone(self) -> str:
        assert self.run is not None
        return f"tracking server unreachable for {self.run.down_for():.0f} s"

    def log_pictures(self, record: EpochRecord) -> None:
        from recseg.evaluation.samples import encode_png, prediction_panel
        from recseg.tracking.plots import history_plots

        run = self.run
        assert run is not None
        for name, data in history_plots(self.trainer.progress.history).items():
            run.log_bytes(data, f"plots/{name}")
        if record.samples is not None:
            s = record.samples
            panel = prediction_panel(s.frames, s.labels, s.probs)
            run.log_bytes(encode_png(panel), f"predictions/epoch_{record.epoch:03d}.png")

    def on_stop(self, reason: str) -> None:
        """Checkpoint where the loop stands and mark the run as stopped."""
        assert self.run is not None and self.uploads is not None
        self.uploads.wait()
        self.run.flush()
        self.uploads.submit([self.save_latest()], self.checkpoint_tags())
        self.uploads.close()
        p = self.trainer.progress
        where = f"epoch {p.epoch + 1}, step {self.trainer.train_loader.step}"
        self.run.alive(**self.checkpoint_tags(), **{T.STOPPED: f"{reason} ({where})"})
        self.echo(
            f"stopped: {reason} in {where}; checkpoint saved. Continue with "
            f"--run-id {self.run_id} (exit code {EXIT_REQUEUE})"
        )


def _epoch_line(record: EpochRecord, epochs: int, overhead: float) -> str:
    m = record.metrics
    parts = [f"epoch {record.epoch + 1}/{epochs}", f"train_loss {m['train_loss']:.4f}"]
    for key in ("val_loss", "val_miou", "val_fg_iou", "val_flicker"):
        if key in m:
            parts.append(f"{key} {m[key]:.4f}")
    parts.append(f"lr {m['lr']:.2e}")
    parts.append(f"{m['epoch_seconds']:.1f} s (+{overhead:.1f} s logging)")
    return "  ".join(parts) + ("  *best*" if record.improved else "")
