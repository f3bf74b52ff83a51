"""``recseg promote``: register the best evaluated run's model and set an alias on it."""

from __future__ import annotations

import dataclasses

import click

from recseg.config import build, click_options, option


@dataclasses.dataclass(frozen=True)
class PromoteConfig:
    """Options of ``recseg promote``."""

    experiment: str = dataclasses.field(
        metadata=option("Experiment whose finished, evaluated training runs compete.")
    )
    metric: str = dataclasses.field(
        default="test_fg_iou",
        metadata=option(
            "test_* metric that decides (higher is better; lower for loss, flicker, latency)."
        ),
    )
    name: str = dataclasses.field(
        default="", metadata=option("Registered model name; default: recseg-<experiment>.")
    )
    alias: str = dataclasses.field(
        default="champion",
        metadata=option(
            "Alias set on the new version (models:/NAME@ALIAS).",
            check=lambda v: (
                None
                if v and v.replace("_", "").replace("-", "").isalnum()
                else f"letters, digits, - and _ only, got '{v}'"
            ),
        ),
    )
    run_id: str = dataclasses.field(
        default="", metadata=option("Promote this run (of the experiment) instead of the best.")
    )


@click.command("promote")
@click_options(PromoteConfig)
def promote_cmd(**values: object) -> None:
    """Register the model of the experiment's best run by a test metric and point an alias
    (default: champion) at it; runs without the metric (not evaluated) never win."""
    cfg = build(PromoteConfig, values)
    from recseg.tracking.promote import promote

    done = promote(cfg.experiment, cfg.metric, cfg.name, cfg.alias, cfg.run_id)
    was = (
        f" (was version {done.previous})" if done.previous and done.previous != done.version else ""
    )
    click.echo(
        f"promoted run {done.run_id} ({done.metric} {done.value:.4f}) to {done.uri}: "
        f"version {done.version}{was}"
    )
