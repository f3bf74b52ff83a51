"""The ``recseg`` command: every sub-command, with one-line errors and fixed exit codes."""

from __future__ import annotations

import os
import sys

import click

from recseg.cli.models import describe_cmd, models_cmd
from recseg.errors import EXIT_USAGE, InputError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="recseg")
def cli() -> None:
    """recseg: MLflow-tracked experiments for video segmentation with recurrent DeepLabV3+.

    Exit codes: 0 done; 2 bad usage or input (one line on stderr); 99 training stopped on
    request after a checkpoint (requeue); anything else a failure the user did not cause.
    """


cli.add_command(models_cmd)
cli.add_command(describe_cmd)


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    line = " ".join(str(message).split())
    click.echo(f"recseg: error: {line}", err=True)
    sys.exit(code)


def run(command: click.Command, argv: list[str] | None = None, prog_name: str = "recseg") -> None:
    """Run a click command; user errors become one line on stderr and exit code 2."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
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
    sys.exit(result if isinstance(result, int) else 0)


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``recseg``."""
    run(cli, argv)
