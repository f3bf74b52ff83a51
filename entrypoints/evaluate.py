"""MLproject entry point ``evaluate`` (``recseg evaluate`` with MLproject parameters)."""

import click

from recseg.cli import run
from recseg.cli.evaluate import evaluate_and_exit
from recseg.config import click_options
from recseg.tracking.evaluate_config import EvaluateConfig


@click.command()
@click_options(EvaluateConfig, mlproject=True)
def main(**values: object) -> None:
    """Evaluate trained models on the test split; log test_* metrics and a summary run."""
    evaluate_and_exit(values)


if __name__ == "__main__":
    run(main, prog_name="entrypoints/evaluate.py")
