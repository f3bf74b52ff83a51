"""``recseg sweep``: one grid job per configuration of a product of training options."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from recseg.config import flag
from recseg.training.config import TrainConfig


def _train_options(func: Callable) -> Callable:
    """One option per ``recseg train`` option; each takes a comma-separated list to sweep."""
    from recseg.config import fields
    from recseg.grid.sweep import NOT_SWEPT, SINGLE

    for f, kind in reversed(fields(TrainConfig)):
        if f.name in NOT_SWEPT:
            continue
        note = "" if f.name in SINGLE else " A comma-separated list sweeps over its values."
        if kind is bool:
            note = f" true or false, or both: true,false (--no-{flag(f.name)[2:]}: false)."
            func = click.option(f"--no-{flag(f.name)[2:]}", f"no_{f.name}", is_flag=True,
                                hidden=True)(func)  # fmt: skip
        func = click.option(
            flag(f.name),
            f.name,
            type=str,
            default=None,
            required=f.name in ("data", "model", "loss"),
            help=f.metadata["help"] + note,
        )(func)
    return func


@click.command("sweep")
@_train_options
@click.option(
    "--script",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The training job script [default: grid/train.sge of this checkout].",
)
@click.option(
    "--env",
    "environment",
    default=None,
    help="RECSEG_ENV of the jobs: a venv or conda prefix path, or a conda env name "
    "[default: the Python environment running this command].",
)
@click.option(
    "--qsub-args",
    default="",
    help='Extra qsub options for every job, e.g. "-l s_rt=03:50:00,h_rt=04:00:00 -q gpu.q".',
)
@click.option(
    "--log-dir",
    default="logs/grid",
    show_default=True,
    help="Folder of the job logs (made if missing); '' keeps the script's own.",
)
@click.option(
    "--max-restarts",
    type=click.IntRange(min=0),
    default=None,
    help="How often each job may resubmit itself [default: the script's, 20].",
)
@click.option(
    "--retry",
    is_flag=True,
    help="Resubmit configurations whose run FAILED, was KILLED, or is SCHEDULED but its job "
    "is gone from Grid Engine (continuing the same run).",
)
@click.option(
    "--evaluate",
    is_flag=True,
    help="Also submit one evaluation job, held until the training jobs end.",
)
@click.option("--dry-run", is_flag=True, help="Show the configurations; create and submit nothing.")
def sweep_cmd(**options: Any) -> None:
    """Submit one Grid Engine training job per configuration: the product of the
    comma-separated values given to the training options (e.g. --model A,B --loss X,Y).

    Each configuration gets an MLflow run (SCHEDULED until its job starts) under one parent
    sweep run, and its job gets that RUN_ID, so a job that resubmits itself continues the
    same run. A configuration that already has a training run in the experiment is not
    submitted again: calling the same sweep twice submits nothing new.
    """
    from recseg.grid.sweep import run_sweep

    run_sweep(options, echo=lambda line: click.echo(line))
