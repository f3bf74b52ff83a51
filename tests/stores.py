"""Small real clip stores for tests, written straight through the store API (no preprocess).

Each clip shows a bright ellipse (the person, label 1) moving over a textured background, so a
model can learn something in a few steps and every frame differs from the last.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from recseg.data.store import ClipRecord, write_clip, write_manifest

_SPLIT_SEED = {"train": 0, "val": 300, "test": 600}


def moving_clip(n: int, size: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` RGB frames ``(n, H, W, 3)`` uint8 and labels ``(n, H, W)`` of a moving ellipse."""
    rng = np.random.default_rng(seed)
    h, w = size
    texture = cv2.resize(rng.integers(0, 120, (6, 8, 3), dtype=np.uint8), (w, h))
    colour = rng.integers(150, 255, 3).tolist()
    x0, dx = rng.uniform(0.25, 0.5) * w, rng.uniform(-1.5, 1.5)
    frames = np.empty((n, h, w, 3), np.uint8)
    labels = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        frames[i] = texture
        centre = (int(x0 + dx * i) % w, h // 2)
        axes = (max(2, w // 8), max(2, h // 3))
        cv2.ellipse(labels[i], centre, axes, 0, 0, 360, 1, -1)
        frames[i][labels[i] > 0] = colour
    return frames, labels


def make_store(
    root: Path,
    train: Sequence[int] = (12, 12, 12, 12),
    val: Sequence[int] = (10, 7),
    test: Sequence[int] = (),
    size: tuple[int, int] = (32, 48),
    seed: int = 0,
) -> Path:
    """A finished store at ``root`` with clips of the given frame counts per split."""
    h, w = size
    records = []
    for split, lengths in (("train", train), ("val", val), ("test", test)):
        for i, n in enumerate(lengths):
            frames, labels = moving_clip(n, size, seed * 1000 + _SPLIT_SEED[split] + i)
            rec = ClipRecord(
                id=f"{split}{i}",
                split=split,
                video=f"{split}-video{i}",
                index=0,
                frames=n,
                height=h,
                width=w,
                fps=15.0,
                background="texture",
                fg_ratio=float(labels.mean()),
                path=f"clips/{split}/{split}{i}.npz",
            )
            write_clip(root / rec.path, frames, labels, {"id": rec.id})
            records.append(rec)
    write_manifest(root, {"size": [h, w], "fps": 15.0, "frames_per_clip": max(train)}, records)
    return root
