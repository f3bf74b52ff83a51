"""Continue stale training runs (``recseg runs --stale --resume``): each one in its own MLflow
run, with the options it was started with (its params), either here in the foreground, one
after another (``recseg train --run-id RID ...``), or as grid jobs (``grid/train.sge`` with
``RUN_ID``, as ``recseg sweep --retry`` submits them).

Each run is checked again right before it is resumed: one whose process came back is left
alone. Job options a new job sets for itself (``--run-id``, ``--time-limit``) are not taken
from the params; relative paths (``--data``, ``--checkpoint-dir``) mean what they meant where
the run was started, so resume from that folder.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import click
from mlflow.tracking import MlflowClient

from recseg.config import fields, flag
from recseg.errors import EXIT_FAILURE, EXIT_OK, EXIT_REQUEUE, InputError
from recseg.grid.envvars import option_args, options
from recseg.grid.sge import GridError, check_client, qsub
from recseg.grid.sweep import (
    Grid,
    default_environment,
    default_script,
    qsub_options,
    train_config,
    variables,
)
from recseg.tracking import tags as T
from recseg.tracking.listing import RunRow, current_row
from recseg.training.config import TrainConfig, parse_param

Echo = Callable[[str], None]
NOT_RESUMED = ("run_id", "time_limit")  # options of the job that ran, not of the run
REQUIRED = ("data", "model", "loss")
FORWARDED = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def train_args(train_cmd: click.Command, run_id: str, params: Mapping[str, str]) -> list[str]:
    """The ``recseg train`` arguments that give a run's logged params back (``InputError``
    when the run never logged the options it needs: it died while starting)."""
    missing = [name for name in REQUIRED if name not in params]
    if missing:
        raise InputError(
            f"run {run_id} has no {missing[0]} param (it died before logging its options): "
            "it cannot be resumed; end it with --mark-killed"
        )
    kinds = {f.name: kind for f, kind in fields(TrainConfig)}
    args: list[str] = []
    for opt in options(train_cmd):
        name = str(opt.name)
        if name in NOT_RESUMED or name not in params or name not in kinds:
            continue
        args += option_args(opt, _text(name, params[name], kinds[name]), flag(name))
    return args


def _text(name: str, logged: str, kind: type) -> str:
    """A logged param (maybe quoted by ``mlflow run``) as the option's command-line text."""
    value = parse_param(name, logged)
    if kind is bool:
        return "true" if value else "false"
    if kind is int and isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _still_stale(
    client: MlflowClient, row: RunRow, stale_after: float, echo: Echo
) -> RunRow | None:
    """The run as it is now, when it is still stale (else None, saying so)."""
    now = current_row(client, row.run_id, stale_after)
    if not now.stale:
        echo(f"run {row.run_id}: left alone, no longer stale ({now.status}, process "
             f"{now.process})")  # fmt: skip
        return None
    return now


def _error(message: str) -> int:
    click.echo(f"recseg: error: {message}", err=True)
    return EXIT_FAILURE


def overall_code(codes: Sequence[int]) -> int:
    """0 when every run finished, 99 when one was stopped again, else the first failure."""
    if all(code == EXIT_OK for code in codes):
        return EXIT_OK
    if EXIT_REQUEUE in codes:
        return EXIT_REQUEUE
    return next(code for code in codes if code not in (EXIT_OK, EXIT_REQUEUE))


def resume_here(
    client: MlflowClient, rows: Sequence[RunRow], stale_after: float, echo: Echo
) -> int:
    """Continue each stale run in the foreground, one after another; the exit code (see
    :func:`overall_code`). A run stopped on request (exit 99) ends the loop: the rest wait."""
    from recseg.cli.train import train_cmd

    codes: list[int] = []
    for done, row in enumerate(rows, start=1):
        if not _still_stale(client, row, stale_after, echo):
            continue
        try:
            args = train_args(train_cmd, row.run_id, client.get_run(row.run_id).data.params)
        except InputError as exc:
            codes.append(_error(str(exc)))
            continue
        argv = [*args, "--run-id", row.run_id]
        echo(f"resuming run {row.run_id} ({row.run_name or '-'}, checkpoint {row.progress}): "
             f"recseg train {shlex.join(argv)}")  # fmt: skip
        code, stopped = run_train(argv)
        codes.append(code)
        echo(f"run {row.run_id}: " + _outcome(code, row.run_id))
        if code == EXIT_REQUEUE or stopped:
            if done < len(rows):  # the others wait for the next call: requeue me
                echo(f"stopped on request: {len(rows) - done} stale run(s) not resumed")
                codes.append(EXIT_REQUEUE)
            break
    return overall_code(codes) if codes else EXIT_OK


def _outcome(code: int, run_id: str) -> str:
    if code == EXIT_OK:
        return "finished"
    if code == EXIT_REQUEUE:
        return f"stopped again after a checkpoint; continue it with recseg train --run-id {run_id}"
    return f"failed (exit code {code})"


def run_train(argv: list[str]) -> tuple[int, bool]:
    """``recseg train ARGV`` in a child process sharing this terminal; (its exit code, whether
    this process was asked to stop meanwhile). SIGTERM, SIGUSR1 and SIGUSR2 are passed on to
    it (it checkpoints and exits 99); Ctrl-C reaches it from the terminal, as the shell's."""
    proc = subprocess.Popen([sys.executable, "-m", "recseg", "train", *argv])
    with forwarding(proc) as asked:
        code = proc.wait()
    return (code if code >= 0 else 128 - code), bool(asked)  # killed by signal N: 128 + N


@contextlib.contextmanager
def forwarding(proc: subprocess.Popen) -> Iterator[list[int]]:
    """Pass stop signals on to ``proc`` while it runs; yields the signals that came."""
    asked: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield asked
        return

    def forward(signum: int, frame: object) -> None:
        asked.append(signum)
        if signum != signal.SIGINT:  # the terminal sends Ctrl-C to the child itself
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (*FORWARDED, signal.SIGINT)}
    try:
        yield asked
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def submit_jobs(
    client: MlflowClient,
    rows: Sequence[RunRow],
    stale_after: float,
    qsub_args: tuple[str, ...],
    echo: Echo,
) -> int:
    """Submit one ``grid/train.sge`` job per stale run to continue it (``RUN_ID``); the run
    becomes SCHEDULED until its job starts, so a second call does not submit it again."""
    from recseg.cli.train import train_cmd

    check_client()
    grid = Grid({}, default_script(), default_environment(), qsub_args, log_dir="logs/grid")
    Path(grid.log_dir).mkdir(parents=True, exist_ok=True)
    codes: list[int] = []
    for listed in rows:
        row = _still_stale(client, listed, stale_after, echo)
        if row is None:
            continue
        try:
            args = train_args(train_cmd, row.run_id, client.get_run(row.run_id).data.params)
            cfg = train_config(train_cmd, args)
            env = variables(grid, cfg, row.run_id, train_cmd)
            job = qsub(str(grid.script), env, qsub_options(grid, f"{cfg.model}-{cfg.loss}"))
        except (InputError, GridError) as exc:
            codes.append(_error(f"run {row.run_id}: {exc}"))
            continue
        reason = row.stale_reason(time.time()).replace("; marked by", f"; job {job} submitted by")
        client.set_tag(row.run_id, T.JOB, job)
        client.set_tag(row.run_id, T.STOPPED, reason)
        client.update_run(row.run_id, status="SCHEDULED")
        echo(f"submitted job {job}: continues run {row.run_id} ({row.run_name or '-'})")
        codes.append(EXIT_OK)
    return overall_code(codes) if codes else EXIT_OK
