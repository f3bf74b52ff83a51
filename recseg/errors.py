"""Errors and exit codes shared by every recseg command (see docs in README "Exit codes")."""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2  # bad usage or bad input: one line on stderr, nothing half-written
EXIT_FAILURE = 1  # a failure the user did not cause
EXIT_REQUEUE = 99  # training stopped on request after a checkpoint: requeue me


class InputError(ValueError):
    """A problem with what the user gave (a file, a flag, a value): exit code 2, one line."""
