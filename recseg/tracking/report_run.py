"""``recseg report``: the thesis table of an experiment's evaluated runs, as markdown and
figures, printed, written to a folder when asked, and logged to a summary run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
from mlflow import MlflowClient

from recseg.config import as_params
from recseg.data.store import atomic_write_bytes
from recseg.errors import InputError
from recseg.evaluation import memory
from recseg.evaluation.figures import figures
from recseg.evaluation.report import RunRecord, per_run_csv, summary_table, to_csv
from recseg.evaluation.thesis import report_markdown, verdicts
from recseg.machine import made_on
from recseg.tracking import evaluate as te
from recseg.tracking import tags as T
from recseg.tracking.listing import experiment_names
from recseg.tracking.runs import log_files, log_new_params, quiet_mlflow, tracked_run

if TYPE_CHECKING:
    from recseg.cli.report import ReportConfig

Echo = Callable[[str], None]
NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI


def _records(client: MlflowClient, experiment: str) -> list[RunRecord]:
    exp_id = next(iter(experiment_names(client, experiment)))
    records = [te.to_record(r) for r in te.evaluated_runs(client, exp_id)]
    if not records:
        raise InputError(
            f"--experiment {experiment}: no evaluated training runs; run "
            f"`recseg evaluate --data STORE --experiment {experiment}` first"
        )
    return records


def table_files(records: list[RunRecord], rows: list[dict]) -> dict[str, bytes]:
    """The files of every summary of evaluated runs: the table, the per-run CSV, the figures."""
    return {"summary.csv": to_csv(rows), "runs.csv": per_run_csv(records), **figures(records)}


def report_files(
    records: list[RunRecord], rows: list[dict], title: str
) -> tuple[str, dict[str, bytes], dict[str, float]]:
    """The markdown text, every file of the report (name -> bytes) and the summary run's
    metrics of the memory section (recurrent − base with 95 % intervals)."""
    section, found, files = memory.section(records)
    text = report_markdown(rows, records, title, footer=made_on(), memory=section)
    return text, {"report.md": text.encode("utf-8"), **table_files(records, rows), **files}, found


def _write(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        atomic_write_bytes(folder / name, data)


def run_report(cfg: ReportConfig, echo: Echo = print) -> int:
    """Build the report of ``cfg.experiment``, print it, log it; 0 when done."""
    quiet_mlflow()
    records = _records(MlflowClient(), cfg.experiment)
    title = cfg.title or f"recseg report: {cfg.experiment}"
    rows = summary_table(records)
    text, files, found = report_files(records, rows, title)
    if cfg.out:
        _write(Path(cfg.out), files)
    wins = sum(v.beyond_spread for v in verdicts(rows, records))
    with tracked_run(cfg.experiment, run_name="report", tags={T.KIND: "report"}) as active:
        log_new_params(as_params(cfg))
        mlflow.set_tag(NOTE_TAG, text)
        log_files(files, "report")
        mlflow.log_metrics({"runs_reported": len(records), "flicker_wins": wins, **found})
        echo(text.rstrip("\n"))
        where = f" and {cfg.out}" if cfg.out else ""
        echo(f"\nreport run {active.info.run_id} in experiment {cfg.experiment}{where}")
    return 0
