"""MLproject entry point ``lr_find`` (``recseg lr-find`` with MLproject parameters)."""

import click

from recseg.cli import run
from recseg.cli.lr_find import lr_find_and_exit
from recseg.config import click_options
from recseg.training.lr_find import LrFindConfig


@click.command()
@click_options(LrFindConfig, mlproject=True)
def main(**values: object) -> None:
    """Learning-rate range test per weight decay, logged as (nested) MLflow runs."""
    lr_find_and_exit(values)


if __name__ == "__main__":
    run(main, prog_name="entrypoints/lr_find.py")
