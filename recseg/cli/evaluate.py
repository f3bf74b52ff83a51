"""``recseg evaluate``: test-split metrics, latency and visual results of trained models."""

from __future__ import annotations

import click

from recseg.config import build, click_options
from recseg.tracking.evaluate_config import EvaluateConfig


def evaluate_and_exit(values: dict) -> None:
    """Validate options, evaluate, exit 0 (errors: one line, exit 2)."""
    cfg = build(EvaluateConfig, values)
    cfg.check_target()
    from recseg.tracking.evaluate_run import (
        run_evaluation,  # torch and MLflow load once options are OK
    )

    run_evaluation(cfg, echo=lambda line: click.echo(line))


@click.command("evaluate")
@click_options(EvaluateConfig)
def evaluate_cmd(**values: object) -> None:
    """Score models on the test split: one run (--run-id), one model (--model-uri) or every
    finished training run of an experiment (--experiment).

    test_* metrics (the training code's metrics), latency (batch 1, streaming, after a
    warm-up) and GFLOPs per frame land in each training run with a prediction grid and video;
    a summary run holds the table (CSV, HTML) and the figures.
    """
    evaluate_and_exit(values)
