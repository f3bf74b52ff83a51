"""``recseg segment``: segment any video with a logged model (mask video or new background)."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from recseg.config import build, click_options, parse_size
from recseg.inference import SegmentConfig, check_paths


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt meanwhile, so half-written outputs are removed."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command("segment")
@click.argument("input_video", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(path_type=Path),
    help="Output video (.mp4; its folder is created): the composite, or the mask video.",
)
@click_options(SegmentConfig)
def segment_cmd(input_video: Path, output: Path, **values: object) -> None:
    """Segment INPUT_VIDEO with a logged model into OUTPUT_VIDEO (same size, frame count and
    frame rate): the person composited onto --background, or else the mask video (white person
    on black). The video streams through the recurrent network in constant memory.

    The output is H.264 yuv420p in mp4; a video with an odd width or height (which H.264 4:2:0
    cannot code) is written as VP9 yuv420p in mp4 instead, at exactly its size.
    """
    from recseg.data.video import probe
    from recseg.inference.background import open_background

    cfg = build(SegmentConfig, values)
    masks = Path(cfg.masks) if cfg.masks else None
    check_paths(input_video, output, masks)
    background = open_background(cfg.background) if cfg.background else None
    size = parse_size(cfg.size) if cfg.size else None
    probe(input_video)  # a file that is no video fails here, before the model is fetched
    from recseg.inference.segment import segment_video
    from recseg.machine import pick_device  # torch: once checked
    from recseg.tracking.model_uri import load_network

    device = pick_device(cfg.device)
    loaded = load_network(cfg.model, device)
    with _sigterm_interrupts():
        stats = segment_video(
            input_video,
            output,
            loaded,
            background=background,
            masks=masks,
            size=size,
            threshold=cfg.threshold,
            device=device,
            progress=sys.stderr.isatty(),
            chunk=cfg.chunk,
            precision=cfg.precision,
            compile=cfg.compile,
        )
    h, w = stats.size
    click.echo(
        f"segmented {stats.frames} frames ({w}x{h}) in {stats.seconds:.1f} s: "
        f"{stats.fps:.1f} fps (model {loaded.name} on {device}); wrote {output}"
    )
