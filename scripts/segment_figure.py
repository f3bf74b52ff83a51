"""Make the README's segmentation figure: frames of a real video | mask | composite.

    .venv/bin/python scripts/segment_figure.py VIDEO MODEL_URI OUT.png [--frames 10,30,50]
        [--background COLOUR_OR_IMAGE]

Runs ``recseg segment`` (the Python API) on VIDEO with the model, then picks the frames.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
import cv2
import numpy as np

from recseg.data.video import decode
from recseg.evaluation.samples import encode_png


def _frames(path: Path, picks: list[int]) -> list[np.ndarray]:
    out = [frame for i, (_, frame) in enumerate(decode(path)) if i in picks]
    if len(out) != len(picks):
        raise click.ClickException(f"{path} has fewer than {max(picks) + 1} frames")
    return out


@click.command()
@click.argument("video", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("model")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--frames", default="10,30,50", help="Frame indices, comma separated.")
@click.option("--background", default="#3c78d8", help="Colour or image for the composite.")
def main(video: Path, model: str, out: Path, frames: str, background: str) -> None:
    from recseg.inference.segment import segment_video
    from recseg.tracking.model_uri import load_network

    picks = [int(i) for i in frames.split(",")]
    loaded = load_network(model)
    with tempfile.TemporaryDirectory() as tmp:
        mask_video, comp_video = Path(tmp, "mask.mp4"), Path(tmp, "comp.mp4")
        stats = segment_video(video, comp_video, loaded, background=background, masks=mask_video)
        rows = zip(
            _frames(video, picks),
            _frames(mask_video, picks),
            _frames(comp_video, picks),
            strict=True,
        )
        grid = np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)
    scale = max(1, 480 // grid.shape[1])
    grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    out.write_bytes(encode_png(np.ascontiguousarray(grid)))
    click.echo(f"{out}: frames {picks} of {video.name} ({stats.fps:.1f} fps, {loaded.name})")


if __name__ == "__main__":
    main()
