"""Small real clip stores for tests and benchmarks, written straight through the store API.

Each clip shows a bright ellipse (the person, label 1) moving over a textured background, so a
model can learn something in a few steps and every frame differs from the last. A store of
version 2 (the default) also holds each clip's layers (the ellipse's colour, extended over the
frame, and a soft alpha whose >= 128 part is the label) and a few train background images, so
that training composites on the fly; ``version=1`` writes the older, layer-less form.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from recseg.data.backgrounds import encode_jpeg
from recseg.data.store import MANIFEST, ClipRecord, atomic_write_bytes, write_clip, write_manifest

_SPLIT_SEED = {"train": 0, "val": 300, "test": 600}


def moving_clip(n: int, size: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` RGB frames ``(n, H, W, 3)`` uint8 and labels ``(n, H, W)`` of a moving ellipse."""
    frames, labels, _, _ = moving_layers(n, size, seed)
    return frames, labels


def moving_layers(
    n: int, size: tuple[int, int], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(frames, labels, fg, alpha)`` of a moving ellipse: the composite over a texture, the
    labels, the foreground colour (the ellipse's, everywhere) and a soft alpha (0..255, blurred
    at the edge; ``alpha >= 128`` exactly where the label is 1)."""
    rng = np.random.default_rng(seed)
    h, w = size
    texture = cv2.resize(rng.integers(0, 120, (6, 8, 3), dtype=np.uint8), (w, h))
    colour = rng.integers(150, 255, 3).tolist()
    x0, dx = rng.uniform(0.25, 0.5) * w, rng.uniform(-1.5, 1.5)
    frames = np.empty((n, h, w, 3), np.uint8)
    labels = np.zeros((n, h, w), np.uint8)
    alpha = np.empty_like(labels)
    for i in range(n):
        frames[i] = texture
        centre = (int(x0 + dx * i) % w, h // 2)
        axes = (max(2, w // 8), max(2, h // 3))
        cv2.ellipse(labels[i], centre, axes, 0, 0, 360, 1, -1)
        frames[i][labels[i] > 0] = colour
        soft = cv2.GaussianBlur(labels[i] * 255, (3, 3), 0)  # a soft edge on both sides
        alpha[i] = np.where(labels[i] > 0, np.maximum(soft, 128), np.minimum(soft, 127))
    fg = np.empty_like(frames)
    fg[:] = np.array(colour, np.uint8)
    return frames, labels, fg, alpha


def background_images(count: int, size: tuple[int, int], seed: int = 7) -> list[np.ndarray]:
    """``count`` textured RGB images of ``size`` (H, W), each a different colour scheme."""
    rng = np.random.default_rng(seed)
    h, w = size
    return [
        cv2.resize(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8), (w, h)) for _ in range(count)
    ]


def make_store(
    root: Path,
    train: Sequence[int] = (12, 12, 12, 12),
    val: Sequence[int] = (10, 7),
    test: Sequence[int] = (),
    size: tuple[int, int] = (32, 48),
    seed: int = 0,
    version: int = 2,
    backgrounds: int = 3,
) -> Path:
    """A finished store at ``root`` with clips of the given frame counts per split; version 2
    with layers and ``backgrounds`` train background images, version 1 without either."""
    h, w = size
    layered = version >= 2
    records = []
    for split, lengths in (("train", train), ("val", val), ("test", test)):
        for i, n in enumerate(lengths):
            frames, labels, fg, alpha = moving_layers(n, size, seed * 1000 + _SPLIT_SEED[split] + i)
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
                layers=layered,
            )
            layers = (fg, alpha) if layered else None
            write_clip(root / rec.path, frames, labels, {"id": rec.id}, layers=layers)
            records.append(rec)
    stored: dict[str, list[str]] = {"images": [], "videos": []}
    for k, image in enumerate(background_images(backgrounds if layered else 0, size, seed + 7)):
        stored["images"].append(f"backgrounds/bg{k}.jpg")
        atomic_write_bytes(root / stored["images"][-1], encode_jpeg(image))
    settings = {"size": [h, w], "fps": 15.0, "frames_per_clip": max(train)}
    write_manifest(root, settings, records, backgrounds=stored)
    if not layered:
        as_v1(root)
    return root


def as_v1(root: Path) -> None:
    """Rewrite ``root``'s manifest as a version-1 store writes it (no backgrounds, records
    without ``layers``)."""
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["version"] = 1
    manifest.pop("backgrounds", None)
    for clips in manifest["splits"].values():
        for clip in clips:
            clip.pop("layers", None)
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
