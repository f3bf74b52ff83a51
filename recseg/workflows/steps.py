"""Run a list of ``recseg`` commands in order, each as its own process, showing what runs.

Every step prints ``[i/n] title`` and the exact command (so a user can run it again by hand);
its own progress bars and output go straight to the terminal. The first failing step stops the
workflow with one line naming it, and its exit code.
"""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from recseg.errors import EXIT_FAILURE, EXIT_USAGE

Echo = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Step:
    """One command of a workflow: a title and the ``recseg`` arguments."""

    title: str
    args: tuple[str, ...]

    def command(self) -> str:
        """The command line as a user would type it."""
        return shlex.join(("recseg", *self.args))


class StepFailed(Exception):
    """A step exited non-zero; ``code`` is the exit code the workflow passes on."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def run_step(step: Step, index: int, total: int, prefix: str, echo: Echo) -> float:
    """Run one step; its duration in seconds. ``StepFailed`` when it exits non-zero."""
    echo(f"{prefix} [{index}/{total}] {step.title}")
    echo(f"  $ {step.command()}")
    start = time.monotonic()
    # the caller's environment: each step is a recseg command, whose CLI turns MLflow telemetry off
    done = subprocess.run([sys.executable, "-m", "recseg", *step.args])
    seconds = time.monotonic() - start
    if done.returncode != 0:
        code = EXIT_USAGE if done.returncode == EXIT_USAGE else EXIT_FAILURE
        raise StepFailed(
            f"{prefix} step {index}/{total} ({step.title}) failed with exit code "
            f"{done.returncode}: {step.command()}",
            code,
        )
    echo(f"  done in {duration(seconds)}")
    return seconds


def run_steps(steps: Sequence[Step], prefix: str, echo: Echo, start_at: int = 1,
              total: int | None = None) -> float:  # fmt: skip
    """Run ``steps`` in order, numbered from ``start_at`` of ``total``; total seconds."""
    total = total or start_at - 1 + len(steps)
    return sum(run_step(step, start_at + i, total, prefix, echo) for i, step in enumerate(steps))


def duration(seconds: float) -> str:
    """``42 s`` / ``3.5 min``."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
