"""MLproject entry point ``train`` (``recseg train`` with MLproject parameters)."""

import click

from recseg.cli import run
from recseg.cli.train import train_and_exit
from recseg.config import click_options
from recseg.training.config import TrainConfig


@click.command()
@click_options(TrainConfig, mlproject=True)
def main(**values: object) -> None:
    """Train a model on a clip store, logged as an MLflow run (exit 99: requeue)."""
    train_and_exit(values)


if __name__ == "__main__":
    run(main, prog_name="entrypoints/train.py")
