"""The ``recseg`` command: every sub-command, with one-line errors and fixed exit codes."""

from __future__ import annotations

import importlib
import os
import sys

import click

from recseg.errors import EXIT_FAILURE, EXIT_USAGE, InputError
from recseg.tracking import HTTP_DEFAULTS

# sub-command -> "module:attribute", imported only when that command runs (or for --help),
# so `recseg preprocess` does not pay for importing the models.
COMMANDS = {
    "models": "recseg.cli.models:models_cmd",
    "describe": "recseg.cli.models:describe_cmd",
    "footage": "recseg.cli.footage:footage_cmd",
    "preprocess": "recseg.cli.preprocess:preprocess_cmd",
    "train": "recseg.cli.train:train_cmd",
    "runs": "recseg.cli.runs:runs_cmd",
    "lr-find": "recseg.cli.lr_find:lr_find_cmd",
    "evaluate": "recseg.cli.evaluate:evaluate_cmd",
    "promote": "recseg.cli.promote:promote_cmd",
    "segment": "recseg.cli.segment:segment_cmd",
    "export": "recseg.cli.export:export_cmd",
    "job": "recseg.cli.job:job_cmd",
    "sweep": "recseg.cli.sweep:sweep_cmd",
    "report": "recseg.cli.report:report_cmd",
    "demo": "recseg.cli.demo:demo_cmd",
    "thesis": "recseg.cli.demo:thesis_cmd",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            module, attr = COMMANDS[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="recseg")
def cli() -> None:
    """recseg: MLflow-tracked experiments for video segmentation with recurrent DeepLabV3+.

    Exit codes: 0 done; 2 bad usage or input (one line on stderr); 99 training stopped on
    request after a checkpoint (requeue); anything else a failure the user did not cause.
    """


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    line = " ".join(str(message).split())
    click.echo(f"recseg: error: {line}", err=True)
    sys.exit(code)


def _refusal_types() -> tuple[type[BaseException], ...]:
    """MLflow's and requests' errors, once MLflow is loaded (nothing to catch before that)."""
    if "mlflow" not in sys.modules:
        return ()
    from mlflow.exceptions import MlflowException
    from requests import HTTPError

    return (MlflowException, HTTPError)


def run(command: click.Command, argv: list[str] | None = None, prog_name: str = "recseg") -> None:
    """Run a click command; user errors become one line on stderr and exit code 2."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    try:
        result = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(EXIT_USAGE)
    except click.Abort:
        _fail("aborted", 130)
    except click.ClickException as exc:
        _fail(exc.format_message())
    except InputError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except _refusal_types() as exc:  # a tracking server refused the login or the permission
        from recseg.tracking.runs import refused_message, unreachable_message

        if (line := refused_message(exc)) is not None:
            _fail(line)
        if (line := unreachable_message(exc)) is not None:
            _fail(line, EXIT_FAILURE)  # not the user's doing
        raise
    except OSError as exc:  # disk full, read-only or forbidden: the place the user named
        from recseg.data.paths import WRITE_ERRNOS, message

        if exc.errno not in WRITE_ERRNOS:
            raise
        _fail(message(exc))
    sys.exit(result if isinstance(result, int) else 0)


# commands that never touch MLflow: a tracking database is not checked for them
UNTRACKED = frozenset({"models", "describe", "footage"})


def check_tracking_database(argv: list[str]) -> None:
    """One line and exit 2 when ``MLFLOW_TRACKING_URI`` is a database (``postgresql://...``)
    that does not take a connection: MLflow itself would retry for minutes, then fail with a
    traceback. Nothing is checked for ``--help``, ``--version`` or an untracked command."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not argv or argv[0] in UNTRACKED or {"-h", "--help", "--version"} & set(argv):
        return
    from recseg.tracking.store_checks import check_database, is_database_uri

    if is_database_uri(uri):
        try:
            check_database(uri)
        except InputError as exc:
            _fail(f"MLFLOW_TRACKING_URI: {exc}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``recseg``."""
    check_tracking_database(sys.argv[1:] if argv is None else argv)
    run(cli, argv)
