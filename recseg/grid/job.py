"""``recseg job TASK``: one recseg command with its options taken from environment variables,
as the grid job scripts run it. A ``train`` job that stops with exit code 99 inside Grid Engine
resubmits itself to continue the same MLflow run, up to ``MAX_RESTARTS`` times, and exits 0."""

from __future__ import annotations

import contextlib
import importlib
import re
import signal
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import click

from recseg.errors import EXIT_FAILURE, EXIT_OK, EXIT_REQUEUE, InputError
from recseg.grid.envvars import args_from_env, in_variables
from recseg.grid.sge import RESTARTS, GridError, SgeJob

Echo = Callable[[str], None]

# task -> "module:command" (the command whose options the variables give)
TASKS = {
    "train": "recseg.cli.train:train_cmd",
    "lr-find": "recseg.cli.lr_find:lr_find_cmd",
    "evaluate": "recseg.cli.evaluate:evaluate_cmd",
}
MAX_RESTARTS = "MAX_RESTARTS"
DEFAULT_MAX_RESTARTS = 20


def command_for(task: str) -> click.Command:
    module, attr = TASKS[task].split(":")
    return getattr(importlib.import_module(module), attr)


def parse(command: click.Command, environ: Mapping[str, str]) -> dict[str, Any]:
    """The command's option values from ``environ``, checked as the command line would be."""
    try:
        args = args_from_env(command, environ)
        with command.make_context(str(command.name), args) as ctx:
            return dict(ctx.params)
    except click.ClickException as exc:
        raise InputError(in_variables(command, exc.format_message())) from None


def max_restarts(environ: Mapping[str, str]) -> int:
    raw = environ.get(MAX_RESTARTS) or str(DEFAULT_MAX_RESTARTS)
    if not re.fullmatch(r"[0-9]+", raw):
        raise InputError(f"{MAX_RESTARTS}: expected a whole number (0 or more), got '{raw}'")
    return int(raw)


def run_job(task: str, environ: Mapping[str, str], echo: Echo) -> int:
    """Run ``task`` with options from ``environ``; the exit code (errors: ``InputError``)."""
    command = command_for(task)
    values = parse(command, environ)
    try:
        if task == "train":
            return _train_job(values, environ, echo)
        with _stoppable():
            if task == "lr-find":
                from recseg.cli.lr_find import lr_find_and_exit

                lr_find_and_exit(values)
            else:
                from recseg.cli.evaluate import evaluate_and_exit

                evaluate_and_exit(values)
    except InputError as exc:
        raise InputError(in_variables(command, str(exc))) from None
    except JobStopped as exc:
        echo(f"recseg: error: {task} stopped by {exc} (the job's hard time limit or qdel); "
             "its MLflow runs are marked FAILED")  # fmt: skip
        return EXIT_FAILURE
    return EXIT_OK


class JobStopped(Exception):
    """A job that cannot checkpoint (lr-find, evaluate) is being ended by Grid Engine."""


@contextlib.contextmanager
def _stoppable() -> Iterator[None]:
    """SIGUSR2 and SIGTERM (the warning before SIGKILL) end the work with :class:`JobStopped`,
    so the MLflow runs it has open end FAILED rather than stay RUNNING; SIGUSR1 (the warning
    before a suspension) is ignored."""

    def stop(signum: int, frame: object) -> None:
        raise JobStopped(f"signal {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGUSR2, signal.SIGTERM)}
    previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _train_job(values: dict[str, Any], environ: Mapping[str, str], echo: Echo) -> int:
    from recseg.config import build
    from recseg.training.config import TrainConfig
    from recseg.training.launch import launch, needs_launch
    from recseg.training.stopping import StopRequest

    cfg = build(TrainConfig, values)
    limit = max_restarts(environ)
    sge = SgeJob.current(environ)
    if sge is not None:
        echo(f"grid job {sge.job_id}: restart {sge.restarts} of at most {limit}")
    if needs_launch(cfg, environ):  # NPROC > 1: data-parallel worker processes
        launched = launch(cfg)
        code, run_id, signum = launched.code, launched.run_id, launched.signal
    else:
        with StopRequest() as stop:  # before the slow imports: an early signal is kept
            from recseg.tracking.train_job import train_run

            outcome = train_run(cfg, echo=echo, stop=stop)
        code, run_id, signum = outcome.code, outcome.run_id, stop.signal
    if code != EXIT_REQUEUE or sge is None or not run_id:
        return code  # outside Grid Engine, 99 goes to whoever requeues
    return _requeue(sge, run_id, signum, limit, echo)


def _requeue(sge: SgeJob, run_id: str, signum: int | None, limit: int, echo: Echo) -> int:
    """Resubmit this job to continue ``run_id``, unless a user deletes it or the limit is hit."""
    from recseg.tracking import tags as T
    from recseg.tracking.train import mark_failed, set_run_tags

    again = f"qsub -v RUN_ID={run_id},... grid/train.sge"
    if signum == signal.SIGUSR2 and sge.being_deleted():
        echo(f"job {sge.job_id} is being deleted (qdel): not resubmitted; continue the run "
             f"with {again}")  # fmt: skip
        return EXIT_OK
    if sge.restarts >= limit:
        message = (
            f"restart limit reached: the job was resubmitted {sge.restarts} times "
            f"({MAX_RESTARTS}={limit}) and run {run_id} is not finished; marked FAILED. "
            f"Continue it with a higher limit: qsub -v RUN_ID={run_id},{MAX_RESTARTS}=N,... "
            "grid/train.sge"
        )
        mark_failed(run_id, message)
        echo(f"recseg: error: {message}")
        return EXIT_FAILURE
    try:
        new = sge.requeue({"RUN_ID": run_id, RESTARTS: str(sge.restarts + 1)})
    except (GridError, InputError) as exc:
        echo(f"recseg: error: could not resubmit job {sge.job_id}: {exc}; the run keeps its "
             f"checkpoint: continue it with {again}")  # fmt: skip
        return EXIT_FAILURE
    with contextlib.suppress(Exception):  # the new job is on its way; the tags only inform
        set_run_tags(run_id, {T.NEXT_JOB: new, T.RESTARTS: sge.restarts + 1})
    echo(f"resubmitted as job {new} (restart {sge.restarts + 1} of at most {limit}) to "
         f"continue run {run_id}")  # fmt: skip
    return EXIT_OK
