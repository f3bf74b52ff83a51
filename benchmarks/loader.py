"""Benchmark: does the temporal loader keep up with CPU training of a MobileNetV2 model?

Builds a synthetic clip store in a temporary folder (photo content from scikit-image, moving
per frame, with a moving elliptical foreground so the JPEGs are realistic), then prints a
markdown table of loader frames/s (training with augmentation and evaluation, 0 and N workers)
and the frames/s one training step of two MobileNetV2 models consumes on this machine.

    .venv/bin/python benchmarks/loader.py [--workers 2] [--size 270x512] [--seq-len 4]
        [--batch-size 2] [--clips 12] [--frames 60] [--steps 3] [--train-seconds 20]

On a small CPU one training step of 2 x 4 frames at 270x512 takes 10 s (Deep+_mobile) to over a
minute (Deep_mobile_gruV3), so timed steps stop after ``--train-seconds`` per model.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage import data as skdata

from recseg.data.loader import make_loader
from recseg.data.store import ClipRecord, write_clip, write_manifest
from recseg.models import build_model
from recseg.models.state import detach_state
from recseg.training.losses import build_loss

MODELS = ("Deep_mobile_gruV3", "Deep+_mobile")


def _cover(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resize ``image`` to cover ``(h, w)``."""
    s = max(h / image.shape[0], w / image.shape[1])
    size = (int(np.ceil(image.shape[1] * s)), int(np.ceil(image.shape[0] * s)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _clip(clip: int, n: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` frames of a background panning under a moving foreground ellipse."""
    photos = [skdata.coffee(), skdata.astronaut(), skdata.chelsea(), skdata.rocket()]
    margin = 40 + 2 * n
    bg = _cover(photos[clip % len(photos)], h + margin, w + margin)
    fg = _cover(photos[(clip + 1) % len(photos)], h, w)[:h, :w]
    frames = np.empty((n, h, w, 3), np.uint8)
    labels = np.zeros((n, h, w), np.uint8)
    for f in range(n):
        dy, dx = f % margin, (2 * f + 7 * clip) % margin
        frames[f] = bg[dy : dy + h, dx : dx + w]
        centre = (int(w * (0.3 + 0.4 * f / n)), int(h * 0.55))
        cv2.ellipse(labels[f], centre, (w // 8, h // 3), 10.0 * clip, 0, 360, 1, -1)
        frames[f][labels[f] == 1] = fg[labels[f] == 1]
    return frames, labels


def build_store(root: Path, clips: int, frames: int, size: tuple[int, int]) -> Path:
    """Write a ``train`` split of ``clips`` clips x ``frames`` frames at ``size``."""
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
        )
        write_clip(root / rec.path, *_clip(i, frames, h, w), {"id": rec.id})
        records.append(rec)
    write_manifest(root, {"size": [h, w], "fps": 15}, records)
    return root


def time_loader(root: Path, args: argparse.Namespace, train: bool, workers: int) -> dict:
    """Frames/s over one epoch, not counting the first batch (worker start-up)."""
    loader = make_loader(
        root,
        "train",
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        train=train,
        num_workers=workers,
    )
    start = time.perf_counter()
    first = frames = 0
    for k, batch in enumerate(loader):
        if k == 0:
            first = time.perf_counter() - start
            start = time.perf_counter()
        else:
            frames += int(batch["valid"].sum())
    elapsed = time.perf_counter() - start
    return {"batches": len(loader), "first": first, "fps": frames / max(elapsed, 1e-9)}


def _step(model, loss_fn, opt, batch: dict, state):
    logits, state = model(batch["frames"], state, batch["reset"])
    loss = loss_fn(logits, batch["labels"])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return detach_state(state)


def time_training(name: str, batches: list[dict], steps: int, budget: float) -> tuple[float, str]:
    """Frames/s of SGD steps of ``name`` after one warm-up step: up to ``steps`` steps, fewer
    once ``budget`` seconds are spent; none if the warm-up alone took longer (then the warm-up
    step's rate is returned, an underestimate). Returns ``(frames/s, what was timed)``."""
    model = build_model(name).train()
    loss_fn = build_loss("CrossDice")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    per_step = batches[0]["frames"].shape[0] * batches[0]["frames"].shape[1]
    t0 = time.perf_counter()
    state = _step(model, loss_fn, opt, batches[0], None)
    warmup = time.perf_counter() - t0
    if warmup > budget:
        return per_step / warmup, f"warm-up step only: {warmup:.1f} s"
    t0, done = time.perf_counter(), 0
    while done < steps and (done == 0 or time.perf_counter() - t0 < budget):
        done += 1
        state = _step(model, loss_fn, opt, batches[done % len(batches)], state)
    elapsed = time.perf_counter() - t0
    return per_step * done / elapsed, f"{done} step(s), {elapsed / done:.1f} s/step"


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2, help="workers for the parallel rows")
    p.add_argument("--size", type=_size, default=(270, 512), help="HxW (default 270x512)")
    p.add_argument("--seq-len", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--clips", type=int, default=12)
    p.add_argument("--frames", type=int, default=60, help="frames per clip")
    p.add_argument(
        "--steps", type=int, default=3, help="timed training steps per model, after a warm-up"
    )
    p.add_argument("--train-seconds", type=float, default=20.0, help="time budget per model (soft)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    h, w = args.size
    print(
        f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, OpenCV {cv2.__version__} with "
        f"{cv2.getNumThreads()} threads; {args.clips} clips x {args.frames} frames at {h}x{w}, "
        f"batch {args.batch_size} x seq-len {args.seq_len}\n"
    )
    with tempfile.TemporaryDirectory(prefix="recseg-bench-") as tmp:
        t0 = time.perf_counter()
        root = build_store(Path(tmp), args.clips, args.frames, (h, w))
        mb = sum(f.stat().st_size for f in Path(tmp).rglob("*.npz")) / 2**20
        print(f"store: {mb:.1f} MiB written in {time.perf_counter() - t0:.1f} s\n")
        rows = []
        for train in (True, False):
            for workers in sorted({0, args.workers}):
                rows.append((train, workers, time_loader(root, args, train, workers)))
        loader = make_loader(root, "train", batch_size=args.batch_size, seq_len=args.seq_len)
        batches = list(itertools.islice(loader, 4))
    consumed = {
        name: time_training(name, batches, args.steps, args.train_seconds) for name in MODELS
    }
    fastest = max(fps for fps, _ in consumed.values())
    print("| what | workers | frames/s | first batch (s) | ratio to fastest training |")
    print("|---|---:|---:|---:|---:|")
    for train, workers, r in rows:
        what = "loader, train + augment" if train else "loader, eval"
        ratio = r["fps"] / fastest
        print(f"| {what} | {workers} | {r['fps']:.0f} | {r['first']:.2f} | {ratio:.1f}x |")
    for name, (fps, note) in consumed.items():
        print(f"| training {name} (CPU, CrossDice, SGD; {note}) | - | {fps:.2f} | - | - |")
    print("\ntarget: loader >= 5x the frames/s training consumes")


if __name__ == "__main__":
    main()
