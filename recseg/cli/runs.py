"""``recseg runs``."""

from __future__ import annotations

import dataclasses
import json

import click

from recseg.tracking.listing import RunRow, list_training_runs

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


@click.command("runs")
@click.option("--experiment", metavar="NAME", help="Only the runs of this experiment.")
@click.option(
    "--status",
    type=click.Choice(STATUSES, case_sensitive=False),
    help="Only runs with this MLflow status.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the runs as a JSON list.")
def runs_cmd(experiment: str | None, status: str | None, as_json: bool) -> None:
    """List training runs with their status, last checkpointed epoch and whether their
    process is gone."""
    rows = list_training_runs(experiment)
    if status is not None:
        rows = [row for row in rows if row.status == status.upper()]
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(row) for row in rows], indent=2))
    elif not rows:
        click.echo("no training runs")
    else:
        for line in table_lines(rows):
            click.echo(line)
