"""``recseg runs``."""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import click

from recseg.errors import InputError
from recseg.tracking.listing import STALE_AFTER, RunRow, list_training_runs

STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED")
HEADER = ("run id", "name", "experiment", "status", "epoch", "process", "heartbeat", "host")


def format_age(seconds: float | None) -> str:
    """A short age: "42s ago", "5m ago", "3h ago", "2d ago"; "-" when unknown."""
    if seconds is None:
        return "-"
    for unit, size, limit in (("s", 1, 120), ("m", 60, 120 * 60), ("h", 3600, 48 * 3600)):
        if seconds < limit:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds // 86400)}d ago"


def table_lines(rows: list[RunRow]) -> list[str]:
    """The aligned table (header first) of ``rows``."""
    cells = [HEADER] + [
        (
            row.run_id,
            row.run_name or "-",
            row.experiment,
            row.status,
            row.progress,
            row.process,
            format_age(row.heartbeat_age),
            row.host or "-",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    ]


def _positive_seconds(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"must be a number of seconds above 0, got {value}")
    return value


def check_actions(
    stale: bool, mark_killed: bool, resume: bool, grid: bool, as_json: bool, qsub_args: str
) -> None:
    """``InputError`` for options that do not go together."""
    if mark_killed and resume:
        raise InputError("--mark-killed and --resume do not go together: choose one")
    for given, name in ((mark_killed, "--mark-killed"), (resume, "--resume")):
        if given and not stale:
            raise InputError(f"{name} acts on stale runs only: add --stale")
        if given and as_json:
            raise InputError(f"--json lists runs; it does not go with {name}")
    if grid and not resume:
        raise InputError("--grid says where --resume continues runs: add --stale --resume")
    if qsub_args and not grid:
        raise InputError("--qsub-args goes with --grid")


@click.command("runs")
@click.option("--experiment", metavar="NAME", help="Only the runs of this experiment.")
@click.option(
    "--status",
    type=click.Choice(STATUSES, case_sensitive=False),
    help="Only runs with this MLflow status.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the runs as a JSON list.")
@click.option(
    "--stale",
    is_flag=True,
    help="Only RUNNING runs whose process is gone: on this host, the process is not there; on "
    "another host, no heartbeat for --stale-after seconds. Runs whose process is alive are "
    "never listed nor touched.",
)
@click.option(
    "--stale-after",
    type=float,
    default=STALE_AFTER,
    show_default=True,
    metavar="SECONDS",
    callback=_positive_seconds,
    help="Seconds without a heartbeat after which a run on another host counts as gone "
    "(training sets one every 300 s: the default is three missed).",
)
@click.option(
    "--mark-killed",
    is_flag=True,
    help="With --stale: end those runs KILLED, saying why in their recseg.stopped tag.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="With --stale: continue each run into the same run id with the options it was started "
    "with (recseg train --run-id RID ...), here in the foreground, one after another; run it "
    "in the folder the runs were started from (relative --data and --checkpoint-dir). Exit "
    "code 0 when all finished, 99 when one was stopped again, else the first failure's.",
)
@click.option(
    "--grid",
    is_flag=True,
    help="With --resume: submit one grid/train.sge job per run (RUN_ID) instead.",
)
@click.option(
    "--qsub-args",
    default="",
    help='With --grid: extra qsub options, e.g. "-l s_rt=03:50:00,h_rt=04:00:00 -q gpu.q".',
)
def runs_cmd(
    experiment: str | None,
    status: str | None,
    as_json: bool,
    stale: bool,
    stale_after: float,
    mark_killed: bool,
    resume: bool,
    grid: bool,
    qsub_args: str,
) -> None:
    """List training runs with their status, last checkpointed epoch and whether their
    process is gone; with --stale, find the RUNNING runs whose process is gone and mark them
    KILLED or resume them."""
    check_actions(stale, mark_killed, resume, grid, as_json, qsub_args)
    rows = list_training_runs(experiment, stale_after=stale_after)
    if status is not None:
        rows = [row for row in rows if row.status == status.upper()]
    if stale:
        rows = [row for row in rows if row.stale]
    if mark_killed or resume:
        sys.exit(act(rows, stale_after, mark_killed, grid, qsub_args))
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(row) for row in rows], indent=2))
    elif not rows:
        click.echo("no stale training runs" if stale else "no training runs")
    else:
        for line in table_lines(rows):
            click.echo(line)


def act(rows: list[RunRow], stale_after: float, mark_killed: bool, grid: bool, qsub: str) -> int:
    """Mark the stale ``rows`` KILLED or resume them; the exit code."""
    from mlflow import MlflowClient

    from recseg.grid import resume as R
    from recseg.grid.sweep import split_qsub_args
    from recseg.tracking.listing import mark_killed as mark

    if not rows:
        click.echo("no stale training runs")
        return 0
    client = MlflowClient()
    if grid:
        return R.submit_jobs(client, rows, stale_after, split_qsub_args(qsub), click.echo)
    if not mark_killed:
        return R.resume_here(client, rows, stale_after, click.echo)
    for row in rows:
        reason = mark(client, row, stale_after)
        if reason is None:
            click.echo(f"run {row.run_id}: left alone, no longer stale")
        else:
            click.echo(f"marked KILLED: run {row.run_id} ({row.run_name or '-'}): {reason}")
    return 0
