"""MLproject entry point ``describe`` (``recseg describe`` with MLproject parameters)."""

import click

from recseg.cli import run
from recseg.cli.models import describe_and_print
from recseg.config import click_options
from recseg.training.summary import DescribeConfig


@click.command()
@click_options(DescribeConfig, mlproject=True)
def main(**values: object) -> None:
    """Build a model, run a random clip through it and report."""
    describe_and_print(values, as_json=False)


if __name__ == "__main__":
    run(main, prog_name="entrypoints/describe.py")
