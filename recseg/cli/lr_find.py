"""``recseg lr-find``: the learning-rate range test, one MLflow run per weight decay."""

from __future__ import annotations

import sys

import click

from recseg.config import build, click_options
from recseg.training.lr_find import LrFindConfig


def lr_find_and_exit(values: dict) -> None:
    """Validate options, run one range test per weight decay (tracked in MLflow), print one
    line per weight decay and the top-level run id; exit 0."""
    cfg = build(LrFindConfig, values)
    from recseg.tracking.lr_find import run_lr_find  # torch and MLflow load once options are OK

    result = run_lr_find(cfg, echo=lambda line: click.echo(line))
    kind = "parent run" if len(result.sweeps) > 1 else "run"
    click.echo(f"{kind} {result.run_id} (experiment {result.experiment})")
    sys.stdout.flush()


@click.command("lr-find")
@click_options(LrFindConfig)
def lr_find_cmd(**values: object) -> None:
    """Learning-rate range test: the loss while the lr rises exponentially, per weight decay.

    Each weight decay of --weight-decays sweeps from the same weights over the same shuffled
    batches (B lanes x T frames, recurrent state carried per lane) and is logged as an MLflow
    run, nested under one parent run when there are several.
    """
    lr_find_and_exit(values)
