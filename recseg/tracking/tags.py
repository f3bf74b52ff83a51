"""Names of the tags recseg sets on its MLflow runs (one place, so readers and writers agree)."""

from __future__ import annotations

KIND = "recseg.kind"  # "train", "preprocess", "evaluate", "lr_find"
HOST = "recseg.host"  # socket.gethostname() of the process that last worked on the run
PID = "recseg.pid"  # its process id
JOB = "recseg.job"  # the grid job id (SGE JOB_ID), when there is one
HEARTBEAT = "recseg.heartbeat"  # unix time (seconds, str(float)) of the last sign of life
CHECKPOINT_EPOCH = "recseg.checkpoint.epoch"  # epochs complete in the latest checkpoint
CHECKPOINT_STEP = "recseg.checkpoint.step"  # optimiser steps in the latest checkpoint
STOPPED = "recseg.stopped"  # why the last process stopped: "signal SIGUSR1", "time limit", ...
MODEL_LOGGED = "recseg.model_uri"  # the URI of the model a finished run logged (models:/m-ID)
FINAL_WEIGHTS = "recseg.final_weights"  # the weights logged as the model: "last: epoch 5 (last)"
BACKBONE = "backbone"
CELL = "cell"  # "lstm", "gru" or "none"
POSITION = "position"  # "output", "decoder", "branch" or "none"
MODEL = "model"  # the --model name as given
SWEEP = "recseg.sweep"  # on a sweep's training runs: the id of the sweep's parent run
SWEEP_KEY = "recseg.sweep.key"  # on a sweep's parent run: a hash of what it sweeps over
NEXT_JOB = "recseg.grid.next_job"  # the job a grid job resubmitted to continue the run
RESTARTS = "recseg.grid.restarts"  # how many times the grid resubmitted the run's job
EXPERIMENT_KIND = "mlflow.experimentKind"  # on experiments: the UI's view (ML or GenAI)
ML_EXPERIMENT = "custom_model_development"  # the model-training view
