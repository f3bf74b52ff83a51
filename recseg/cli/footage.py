"""``recseg footage``: write synthetic green screen demo footage (no download needed)."""

from __future__ import annotations

from pathlib import Path

import click

from recseg.config import build, click_options
from recseg.data.footage import FootageConfig, make_footage


@click.command("footage")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click_options(FootageConfig)
def footage_cmd(out_dir: Path, **values: object) -> None:
    """Write deterministic green screen videos of walking, waving and turning people into
    OUT_DIR: videos/*.mp4 (H.264), truth/*.npz (per-frame person masks and event codes),
    backgrounds/ (real photos and textures) and footage.json. Same seed, same footage."""
    cfg = build(FootageConfig, values)
    summary = make_footage(cfg, out_dir)
    click.echo(
        f"wrote {summary['videos']} videos ({summary['frames']} frames), "
        f"{summary['backgrounds']} backgrounds and footage.json to {summary['out_dir']} "
        f"in {summary['seconds']:.1f} s"
    )
