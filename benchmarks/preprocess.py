"""Part "preprocess": ``recseg preprocess`` speed against real time, pinned to one CPU core.

Makes demo footage (30 fps, 360x640 by default), preprocesses it with the default settings
(270x512, 15 fps, 4 s clips) into a temporary store under ``args.work``, with this process
pinned to one core (``sched_setaffinity``) and OpenCV on one thread; both are restored after.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cv2

from benchmarks.common import TARGETS, Part, note

if TYPE_CHECKING:
    from recseg.data.footage import FootageConfig
    from recseg.data.preprocess import PreprocessConfig, PreprocessResult

NAME = "preprocess"
TARGET = TARGETS["preprocess_realtime_x"][1]  # x real time per core


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--preprocess-*`` options."""
    g = parser.add_argument_group("preprocess part")
    g.add_argument(
        "--preprocess-videos",
        type=int,
        default=None,
        help="default 4 (quick: 3, the fewest a split takes)",
    )
    g.add_argument(
        "--preprocess-seconds", type=float, default=None, help="per video; default 8 (quick: 4)"
    )
    g.add_argument("--preprocess-fps", type=float, default=30.0, help="frame rate of the input")
    g.add_argument("--preprocess-size", default="360x640", help="input frame size HxW")


@contextlib.contextmanager
def one_core() -> Iterator[int | None]:
    """Pin this process to its first allowed core and OpenCV to one thread; yields the core
    (None where affinity cannot be set). Restores both afterwards."""
    threads = cv2.getNumThreads()
    before = os.sched_getaffinity(0) if hasattr(os, "sched_setaffinity") else None
    core = min(before) if before else None
    try:
        if before:
            os.sched_setaffinity(0, {core})
        cv2.setNumThreads(1)
        yield core
    finally:
        cv2.setNumThreads(threads)
        if before:
            os.sched_setaffinity(0, before)


COLUMNS = [
    "input -> store",
    "source s",
    "wall s",
    "input frames/s",
    "output frames/s",
    "x real time",
    "target",
    "met",
]


def preprocess_once(
    root: Path, footage: FootageConfig
) -> tuple[PreprocessResult, PreprocessConfig, float, int | None, list[str]]:
    """Make ``footage`` under ``root`` and preprocess it with the default
    settings on one core: ``(result, config, wall seconds, core, warnings)``."""
    from recseg.data.footage import make_footage
    from recseg.data.preprocess import PreprocessConfig, prepare_preprocess, run_preprocess

    note(f"making footage: {footage.videos} videos x {footage.seconds:g} s at {footage.size} ...")
    make_footage(footage, root / "footage")
    cfg = PreprocessConfig(
        videos=str(root / "footage" / "videos"),
        backgrounds=str(root / "footage" / "backgrounds"),
        out=str(root / "store"),
    )
    warnings: list[str] = []
    note("recseg preprocess on one core ...")
    with one_core() as core:
        start = time.perf_counter()
        result = run_preprocess(prepare_preprocess(cfg, warn=warnings.append), progress=False)
        wall = time.perf_counter() - start
    return result, cfg, wall, core, warnings


def run(args: argparse.Namespace) -> Part:
    """Preprocess fresh demo footage on one core; ``preprocess_realtime_x`` = source seconds /
    wall seconds."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from recseg.data.footage import FootageConfig

    videos = args.preprocess_videos or (3 if args.quick else 4)
    seconds = args.preprocess_seconds or (4.0 if args.quick else 8.0)
    fps, size = args.preprocess_fps, args.preprocess_size
    footage = FootageConfig(videos=videos, seconds=seconds, fps=fps, size=size)
    root = args.work / NAME
    shutil.rmtree(root, ignore_errors=True)
    try:
        result, cfg, wall, core, warnings = preprocess_once(root, footage)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    realtime = result.source_seconds / wall
    row = [
        f"{videos} x {seconds:g} s, {size} @ {fps:g} fps -> {cfg.size} @ {cfg.fps:g} fps",
        result.source_seconds,
        wall,
        result.source_seconds * fps / wall,
        result.frames_processed / wall,
        realtime,
        f">= {TARGET:g}",
        "yes" if realtime >= TARGET else "NO",
    ]
    return Part(
        name=NAME,
        columns=COLUMNS,
        rows=[row],
        figures={"preprocess_realtime_x": realtime},
        method=(
            f"`recseg preprocess` with default settings ({cfg.size}, {cfg.fps:g} fps, "
            f"{cfg.clip_seconds:g} s clips) on fresh demo footage, pinned to one CPU core "
            "(sched_setaffinity, OpenCV 1 thread); x real time = source seconds / wall seconds "
            f"of decode, keying, compositing and store writing. Target >= {TARGET:g}x per core."
        ),
        details={
            "core": core,
            "clips": len(result.records),
            "key_iou": result.key_iou,
            "skipped": result.skipped,
            "warnings": warnings,
        },
    )
