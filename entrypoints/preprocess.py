"""MLproject entry point ``preprocess`` (``recseg preprocess`` with MLproject parameters)."""

import click

from recseg.cli import run
from recseg.cli.preprocess import preprocess_and_report
from recseg.config import click_options
from recseg.data.preprocess import PreprocessConfig


@click.command()
@click_options(PreprocessConfig, mlproject=True)
def main(**values: object) -> None:
    """Key greenscreen videos into a clip store, logged as an MLflow run."""
    preprocess_and_report(values)


if __name__ == "__main__":
    run(main, prog_name="entrypoints/preprocess.py")
