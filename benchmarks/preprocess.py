"""Benchmark: ``recseg preprocess`` speed against real time, pinned to one CPU core.

Makes demo footage (30 fps by default), preprocesses it into a temp store with the default
settings (270x512, 15 fps, 4 s clips) and prints a markdown table. Run:

    .venv/bin/python benchmarks/preprocess.py [--videos 4] [--seconds 8] [--fps 30]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of the input videos")
    parser.add_argument("--size", default="360x640", help="size of the input videos")
    parser.add_argument("--cores", type=int, default=1, help="CPU cores to pin to")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.cores]))
    cv2.setNumThreads(args.cores)

    from recseg.data.footage import FootageConfig, make_footage
    from recseg.data.preprocess import PreprocessConfig, prepare_preprocess, run_preprocess

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = FootageConfig(videos=args.videos, seconds=args.seconds, fps=args.fps, size=args.size)
        make_footage(cfg, root / "f")
        pre = PreprocessConfig(
            videos=str(root / "f" / "videos"),
            backgrounds=str(root / "f" / "backgrounds"),
            out=str(root / "s"),
        )
        start = time.perf_counter()
        job = prepare_preprocess(pre, warn=print)
        result = run_preprocess(job, progress=False)
        wall = time.perf_counter() - start
    in_frames = result.source_seconds * args.fps
    print(
        f"\ncores: {args.cores} (of {os.cpu_count()}), input {args.size} @ {args.fps:g} fps, "
        f"output {pre.size} @ {pre.fps:g} fps, key IoU {result.key_iou:.4f}\n"
    )
    print("| videos | input s | input frames/s | output frames/s | x real time |")
    print("|---|---|---|---|---|")
    print(
        f"| {args.videos} | {result.source_seconds:.0f} | {in_frames / wall:.0f} | "
        f"{result.frames_processed / wall:.0f} | {result.source_seconds / wall:.2f} |"
    )


if __name__ == "__main__":
    main()
