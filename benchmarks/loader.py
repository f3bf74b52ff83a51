"""Part "loader": does the temporal loader keep up with training a MobileNetV2 model?

Builds a synthetic clip store (version 2) under ``args.work`` (photo content from scikit-image
panning per frame under a moving elliptical foreground, so the JPEGs are realistic; the
foreground's layers and the photos as train backgrounds, so training composites on the fly),
or takes ``--loader-store`` (e.g. one ``recseg preprocess`` made), times the training loader
(``train=True``: augmentation on) with 0, 1 and 2 workers, and the frames/s one Deep+_mobile
training step (forward, backward through time, SGD) consumes at the same size.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from skimage import data as skdata

from benchmarks.common import TARGETS, Part, median, note, ratio
from benchmarks.training import train_step_rate
from recseg.data.backgrounds import encode_jpeg
from recseg.data.loader import make_loader
from recseg.data.store import ClipRecord, ClipStore, atomic_write_bytes, write_clip, write_manifest

NAME = "loader"
SIZE = (270, 512)  # H x W
BATCH, SEQ_LEN = 2, 4
TARGET_FPS = TARGETS["loader_frames_per_s"][1]  # with augmentation on 2 cores
TARGET_RATIO = TARGETS["loader_over_train_step"][1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--loader-*`` options."""
    g = parser.add_argument_group("loader part")
    g.add_argument(
        "--loader-workers", default="0,1,2", help="worker counts, comma-separated (default 0,1,2)"
    )
    g.add_argument("--loader-clips", type=int, default=None, help="default 12 (quick: 6)")
    g.add_argument(
        "--loader-frames", type=int, default=None, help="per clip; default 60 (quick: 30)"
    )
    g.add_argument(
        "--loader-epochs",
        type=int,
        default=None,
        help="timed epochs per worker count; default 3 (quick: 1)",
    )
    g.add_argument("--loader-model", default="Deep+_mobile", help="model of the training step")
    g.add_argument(
        "--loader-store",
        type=Path,
        default=None,
        help="time this clip store (its train split, at its size) instead of a synthetic one",
    )
    g.add_argument(
        "--loader-train-steps",
        type=int,
        default=None,
        help="timed steps after a warm-up; default 3 (quick: 1)",
    )


def _cover(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resize ``image`` to cover ``(h, w)``."""
    s = max(h / image.shape[0], w / image.shape[1])
    size = (int(np.ceil(image.shape[1] * s)), int(np.ceil(image.shape[0] * s)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _photos() -> list[np.ndarray]:
    return [skdata.coffee(), skdata.astronaut(), skdata.chelsea(), skdata.rocket()]


def _clip(clip: int, n: int, h: int, w: int) -> tuple[np.ndarray, ...]:
    """``n`` frames of a background panning under a moving foreground ellipse: the composite,
    the labels, and the layers (the foreground photo, a soft alpha)."""
    photos = _photos()
    margin = 40 + 2 * n
    bg = _cover(photos[clip % len(photos)], h + margin, w + margin)
    fg = _cover(photos[(clip + 1) % len(photos)], h, w)[:h, :w]
    frames = np.empty((n, h, w, 3), np.uint8)
    labels = np.zeros((n, h, w), np.uint8)
    alpha = np.zeros((n, h, w), np.uint8)
    for f in range(n):
        dy, dx = f % margin, (2 * f + 7 * clip) % margin
        frames[f] = bg[dy : dy + h, dx : dx + w]
        centre = (int(w * (0.3 + 0.4 * f / n)), int(h * 0.55))
        cv2.ellipse(alpha[f], centre, (w // 8, h // 3), 10.0 * clip, 0, 360, 255, -1, cv2.LINE_AA)
        labels[f] = alpha[f] >= 128
        frames[f][labels[f] == 1] = fg[labels[f] == 1]
    return frames, labels, np.repeat(fg[None], n, axis=0), alpha


def build_store(root: Path, clips: int, frames: int, size: tuple[int, int]) -> Path:
    """Write a ``train`` split of ``clips`` clips x ``frames`` frames at ``size``, with layers
    and the photos as train backgrounds."""
    h, w = size
    records = []
    for i in range(clips):
        rec = ClipRecord(
            id=f"bench{i}",
            split="train",
            video=f"video{i}",
            index=i,
            frames=frames,
            height=h,
            width=w,
            fps=15.0,
            background="synthetic",
            fg_ratio=0.1,
            path=f"clips/train/bench{i}.npz",
            layers=True,
        )
        composite, labels, fg, alpha = _clip(i, frames, h, w)
        write_clip(root / rec.path, composite, labels, {"id": rec.id}, layers=(fg, alpha))
        records.append(rec)
    images = []
    for k, photo in enumerate(_photos()):
        images.append(f"backgrounds/photo{k}.jpg")
        atomic_write_bytes(root / images[-1], encode_jpeg(_cover(photo, h, w)))
    backgrounds = {"images": images, "videos": []}
    write_manifest(root, {"size": [h, w], "fps": 15}, records, backgrounds=backgrounds)
    return root


def time_loader(root: Path, workers: int, epochs: int) -> dict[str, Any]:
    """Frames/s of ``epochs`` training epochs (augmentation on), each not counting its first
    batch (worker start-up, timed apart). Workers restart each epoch, as in training."""
    loader = make_loader(
        root, "train", batch_size=BATCH, seq_len=SEQ_LEN, train=True, num_workers=workers
    )
    rates, firsts = [], []
    for _ in range(epochs):
        start = time.perf_counter()
        frames = 0
        for k, batch in enumerate(loader):
            if k == 0:
                firsts.append(time.perf_counter() - start)
                start = time.perf_counter()
            else:
                frames += int(batch["valid"].sum())
        rates.append(frames / max(time.perf_counter() - start, 1e-9))
    return {
        "batches": len(loader),
        "fps": median(rates),
        "epochs_fps": rates,
        "first": firsts,
        "on_the_fly": loader.composites_on_the_fly,
    }


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    return {
        "workers": [int(w) for w in str(args.loader_workers).split(",") if w.strip()],
        "clips": args.loader_clips or (6 if quick else 12),
        "frames": args.loader_frames or (30 if quick else 60),
        "epochs": args.loader_epochs or (1 if quick else 3),
        "steps": args.loader_train_steps or (1 if quick else 3),
    }


def _timed(args: argparse.Namespace, s: dict[str, Any]) -> tuple[dict[int, Any], str, float]:
    """Loader timings per worker count, what was timed, and the store build seconds."""
    if args.loader_store is not None:
        store = ClipStore(args.loader_store)
        h, w = store.size
        timed = {n: _time_workers(store.root, n, s["epochs"]) for n in s["workers"]}
        return (
            timed,
            f"the train split of {store.root} (store version {store.version}) at {h}x{w}",
            0.0,
        )
    root = args.work / NAME
    shutil.rmtree(root, ignore_errors=True)
    try:
        t0 = time.perf_counter()
        note(f"building a synthetic store: {s['clips']} clips x {s['frames']} frames ...")
        build_store(root / "store", s["clips"], s["frames"], SIZE)
        built = time.perf_counter() - t0
        timed = {n: _time_workers(root / "store", n, s["epochs"]) for n in s["workers"]}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    what = f"{s['clips']} synthetic clips x {s['frames']} frames at {SIZE[0]}x{SIZE[1]}"
    return timed, what, built


def _time_workers(root: Path, workers: int, epochs: int) -> dict[str, Any]:
    note(f"loader, {workers} worker(s): {epochs} epoch(s) ...")
    timed = time_loader(root, workers, epochs)
    note(f"loader, {workers} worker(s): {timed['fps']:.0f} frames/s")
    return timed


def run(args: argparse.Namespace) -> Part:
    """Loader frames/s per worker count and the training step's frames/s; figures
    ``loader_frames_per_s`` (best worker count) and ``loader_over_train_step``."""
    s = _settings(args)
    timed, what, built = _timed(args, s)
    size = ClipStore(args.loader_store).size if args.loader_store is not None else SIZE
    model = args.loader_model
    note(f"training step of {model}: 1 warm-up + {s['steps']} timed step(s) ...")
    step = train_step_rate(model, (BATCH, SEQ_LEN), size, args.device, s["steps"])
    train_fps, how = step["fps"], f"{s['steps']} step(s), {step['seconds']:.2f} s/step"
    best = max(timed, key=lambda w: timed[w]["fps"])
    best_fps = timed[best]["fps"]
    over = ratio(best_fps, train_fps)
    fly = "composited on the fly" if timed[best]["on_the_fly"] else "fixed composites augmented"
    return Part(
        name=NAME,
        columns=["what", "workers", "frames/s", "first batch s", "x training step", "met"],
        rows=[
            *(_loader_row(w, r, train_fps) for w, r in timed.items()),
            [f"training step {model} ({args.device.type}; {how})", "-", train_fps, None, 1.0, ""],
        ],
        figures={"loader_frames_per_s": best_fps, "loader_over_train_step": over},
        method=(
            f"Training loader (augmentation on: {fly}) over {what}, batch {BATCH} x seq-len "
            f"{SEQ_LEN}: median frames/s of {s['epochs']} epoch(s) without each epoch's first "
            f"batch (worker start-up), per worker count; training step = {model} as in the "
            f"training part (forward + backward through time + Nesterov SGD, CrossDice) at the "
            f"same size and B x T on {args.device.type}. Targets: loader >= "
            f"{TARGET_FPS:g} frames/s on 2 cores and >= {TARGET_RATIO:g}x the training step."
        ),
        details={
            "loader": {str(w): r for w, r in timed.items()},
            "best_workers": best,
            "store_build_s": built,
            "targets": {"frames_per_s": TARGET_FPS, "over_train_step": TARGET_RATIO},
            "met": best_fps >= TARGET_FPS and (over or 0) >= TARGET_RATIO,
            "torch_threads": torch.get_num_threads(),
            "opencv_threads": cv2.getNumThreads(),
        },
    )


def _loader_row(workers: int, timed: dict[str, Any], train_fps: float) -> list[Any]:
    fps = timed["fps"]
    over = ratio(fps, train_fps)
    met = fps >= TARGET_FPS and (over or 0) >= TARGET_RATIO
    what = f"loader, train + augment ({timed['batches']} batches/epoch)"
    return [what, workers, fps, median(timed["first"]), over, "yes" if met else "no"]
