"""``recseg preprocess``: greenscreen videos -> a clip store, tracked as an MLflow run."""

from __future__ import annotations

from pathlib import Path

import click

from recseg.config import as_params, build, click_options
from recseg.data.preprocess import (
    PreprocessConfig,
    PreprocessResult,
    prepare_preprocess,
    run_preprocess,
)
from recseg.data.store import SPLITS
from recseg.errors import InputError


def print_summary(result: PreprocessResult, run_id: str) -> None:
    """The store's counts, key quality and speed, on stdout."""
    click.echo(f"store      {result.root}")
    for split in SPLITS:
        n = result.manifest["totals"][split]
        click.echo(f"{split:<10} {n['videos']} videos, {n['clips']} clips, {n['frames']} frames")
    if result.key_iou is not None:
        click.echo(f"key IoU    {result.key_iou:.4f} (foreground, against the true masks)")
    if result.frames_processed:
        click.echo(
            f"speed      {result.frames_processed / result.seconds:.1f} frames/s, "
            f"{result.realtime_factor:.1f}x real time"
        )
    click.echo(f"run        {run_id}")


def preprocess_and_report(values: dict) -> None:
    """Validate options, preprocess inside an MLflow run, print the summary; skipped videos
    end the command with exit code 2 after every other video is in the store."""
    cfg = build(PreprocessConfig, values)
    job = prepare_preprocess(cfg, warn=lambda m: click.echo(f"warning: {m}"))
    from recseg.tracking.preprocess import log_preprocess  # MLflow loads only once inputs are OK
    from recseg.tracking.runs import log_new_params, tracked_run

    with tracked_run(cfg.experiment, run_name=f"preprocess-{Path(cfg.out).name}") as run:
        log_new_params(as_params(cfg))
        result = run_preprocess(job, warn=lambda m: click.echo(f"warning: {m}"))
        log_preprocess(result)
    print_summary(result, run.info.run_id)
    if result.skipped:
        names = "; ".join(result.skipped.values())
        raise InputError(
            f"skipped {len(result.skipped)} video(s), the rest are in the store: {names}"
        )


@click.command("preprocess")
@click_options(PreprocessConfig)
def preprocess_cmd(**values: object) -> None:
    """Key greenscreen videos, composite them over moving backgrounds, write a clip store.

    Accepts the layout of `recseg footage` (videos/ beside backgrounds/ and truth/) or any
    folder of videos, flat or in train/ val/ test/ subfolders. Re-run to resume.
    """
    preprocess_and_report(values)
