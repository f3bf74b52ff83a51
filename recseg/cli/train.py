"""``recseg train``: train a model on a clip store, tracked as an MLflow run."""

from __future__ import annotations

import sys

import click

from recseg.config import build, click_options
from recseg.training.config import TrainConfig
from recseg.training.stopping import StopRequest


def train_and_exit(values: dict) -> None:
    """Validate options, train (or continue) the run, exit 0 (finished) or 99 (requeue)."""
    cfg = build(TrainConfig, values)
    with StopRequest() as stop:  # before the slow imports: an early signal is kept
        from recseg.tracking.train_job import train  # torch and MLflow load once options are OK

        code = train(cfg, echo=lambda line: click.echo(line), stop=stop)
    sys.stdout.flush()
    if code:
        sys.exit(code)


@click.command("train")
@click_options(TrainConfig)
def train_cmd(**values: object) -> None:
    """Train a model on a clip store; everything about the run lands in MLflow.

    SIGUSR1, SIGUSR2, SIGTERM (and a first Ctrl-C) or --time-limit save a checkpoint and exit
    with code 99; --run-id RID then continues the same run from its latest checkpoint.
    """
    train_and_exit(values)
