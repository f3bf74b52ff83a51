"""``recseg train``: train a model on a clip store, tracked as an MLflow run."""

from __future__ import annotations

import sys

import click

from recseg.config import build, click_options
from recseg.errors import EXIT_FAILURE
from recseg.training.config import TrainConfig
from recseg.training.launch import launch, needs_launch
from recseg.training.stopping import StopRequest


def train_and_exit(values: dict) -> None:
    """Validate options, train (or continue) the run, exit 0 (finished) or 99 (requeue);
    with ``--nproc N`` through N worker processes (``recseg.training.launch``)."""
    cfg = build(TrainConfig, values)
    if needs_launch(cfg):
        code = launch(cfg).code
    else:
        with StopRequest() as stop:  # before the slow imports: an early signal is kept
            from recseg.tracking.train_job import train  # torch, MLflow load once options are OK
            from recseg.training.distributed import LeaderFailed

            try:
                code = train(cfg, echo=lambda line: click.echo(line), stop=stop)
            except LeaderFailed:  # rank 0 said why; this worker of the job just ends
                code = EXIT_FAILURE
    sys.stdout.flush()
    if code:
        sys.exit(code)


@click.command("train")
@click_options(TrainConfig)
def train_cmd(**values: object) -> None:
    """Train a model on a clip store; everything about the run lands in MLflow.

    SIGUSR1, SIGUSR2, SIGTERM (and a first Ctrl-C) or --time-limit save a checkpoint and exit
    with code 99; --run-id RID then continues the same run from its latest checkpoint.
    --nproc N trains data-parallel with N processes on this node (or start it with torchrun).
    """
    train_and_exit(values)
