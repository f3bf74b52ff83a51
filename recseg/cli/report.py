"""``recseg report``: the thesis table of an experiment (markdown + figures, summary run)."""

from __future__ import annotations

import dataclasses

import click

from recseg.config import build, click_options, option


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """Options of ``recseg report``."""

    experiment: str = dataclasses.field(
        metadata=option("Experiment whose evaluated training runs (`recseg evaluate`) to report.")
    )
    out: str = dataclasses.field(
        default="",
        metadata=option(
            "Also write report.md, the CSVs and the figures into this folder.", mltype="path"
        ),
    )
    title: str = dataclasses.field(
        default="", metadata=option("Title of the report; default: recseg report: <experiment>.")
    )


@click.command("report")
@click_options(ReportConfig)
def report_cmd(**values: object) -> None:
    """The thesis table of an experiment: every variant x loss with mean ± std over seeds of
    test mIoU, foreground IoU, Dice, flicker and latency, and whether a recurrent variant
    flickers less than the base model by more than the seed-to-seed spread.

    Printed as markdown and logged to a summary run (report.md, CSVs, figures; the table is
    the run's description in the MLflow UI). Needs runs scored by `recseg evaluate`.
    """
    cfg = build(ReportConfig, values)
    from recseg.tracking.report_run import run_report

    run_report(cfg, echo=click.echo)
