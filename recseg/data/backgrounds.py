"""The train backgrounds copied into a store, so that it is self-contained and portable.

``recseg preprocess`` fits every train background to the store size (``fit_background``: a later
pan or zoom only enlarges) and writes it under ``backgrounds/``: an image as ``<name>.jpg``, a
video as ``<name>.npz`` (its first ``VIDEO_SECONDS`` at the store's frame rate, JPEG frames). The
training loader composites each clip's foreground over one of them, drawn afresh every epoch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from recseg.data.backdrop import is_video
from recseg.data.clipfile import JPEG_QUALITY
from recseg.data.store import atomic_write_bytes, encode_frames

FOLDER = "backgrounds"
VIDEO_SECONDS = 10.0  # of a background video: what preprocess keeps (train) or loops (val/test)


def safe_names(names: list[str]) -> dict[str, str]:
    """``{source name: file stem}``: letters, digits, ``._-`` only, unique (``-2``, ``-3``...)."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        flat = Path(name).with_suffix("").as_posix().replace("/", "--")
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", flat).strip("._") or "background"
        candidate, k = stem, 2
        while candidate.lower() in taken:
            candidate, k = f"{stem}-{k}", k + 1
        taken.add(candidate.lower())
        out[name] = candidate
    return out


def encode_jpeg(image: np.ndarray) -> bytes:
    """An RGB uint8 image as JPEG bytes (the store's quality)."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode a background")
    return buf.tobytes()


def store_backgrounds(
    root: Path, names: list[str], load: Callable[[str], np.ndarray], fps: float
) -> dict[str, list[str]]:
    """Write the train backgrounds ``names`` into ``root/backgrounds`` (each atomically; ones
    already there, from an interrupted run, are kept). ``load(name)`` gives a fitted image
    (H, W, 3) or a video's fitted frames (N, H, W, 3). Returns ``{"images": [...], "videos":
    [...]}``, paths relative to ``root``, for ``store.json``."""
    stems = safe_names(sorted(names))
    stored: dict[str, list[str]] = {"images": [], "videos": []}
    for name in sorted(names):
        video = is_video(name)
        rel = f"{FOLDER}/{stems[name]}{'.npz' if video else '.jpg'}"
        stored["videos" if video else "images"].append(rel)
        if (root / rel).is_file():
            continue
        data = load(name)
        payload = encode_frames(data, {"source": name, "fps": fps}) if video else encode_jpeg(data)
        atomic_write_bytes(root / rel, payload)
    return stored
