"""``recseg job TASK``: a command with its options from environment variables (grid jobs)."""

from __future__ import annotations

import os
import signal
import sys

import click

from recseg.grid.job import DEFAULT_MAX_RESTARTS, TASKS


@click.command("job")
@click.argument("task", type=click.Choice(sorted(TASKS)))
def job_cmd(task: str) -> None:
    """Run TASK (train, lr-find or evaluate) with its options from environment variables, as
    the grid job scripts do (`qsub -v NAME=value,...`).

    \b
    Each option's variable is its name in upper case: --batch-size -> BATCH_SIZE (see
    `recseg train --help`); an empty value keeps the default; write a comma in a value as %2C.
    Inside a Grid Engine job, a train job that stops with exit code 99 (soft time limit, a
    signal) resubmits a copy of itself with RUN_ID set to continue the same run and exits 0,
    at most MAX_RESTARTS times (default DEFAULT); then the run is marked FAILED and the job
    exits 1. A job being deleted with qdel is not resubmitted.
    """
    from recseg.grid.job import run_job

    for sig in (signal.SIGUSR1, signal.SIGUSR2):  # Grid Engine's warnings never kill the job
        signal.signal(sig, signal.SIG_IGN)  # by default action; the work installs handlers
    code = run_job(task, os.environ, echo=lambda line: click.echo(line))
    sys.stdout.flush()
    if code:
        sys.exit(code)


job_cmd.help = (job_cmd.help or "").replace("DEFAULT", str(DEFAULT_MAX_RESTARTS))
