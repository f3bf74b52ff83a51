"""What a ``preprocess`` run logs: params, counts, key quality, sample composites, the store."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import cv2
import mlflow
import numpy as np
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset

from recseg.data.store import SPLITS, ClipRecord, ClipStore, atomic_write_bytes


def preprocess_metrics(result) -> dict[str, float]:
    """Counts per split, foreground ratio, key quality and speed of a ``PreprocessResult``."""
    metrics: dict[str, float] = {}
    for split in SPLITS:
        totals = result.manifest["totals"][split]
        metrics.update({f"{split}_{k}": v for k, v in totals.items()})
        if totals["frames"]:
            recs = [r for r in result.records if r.split == split]
            metrics[f"{split}_fg_ratio"] = (
                sum(r.fg_ratio * r.frames for r in recs) / totals["frames"]
            )
    total = sum(r.frames for r in result.records)
    if total:
        metrics["fg_ratio"] = sum(r.fg_ratio * r.frames for r in result.records) / total
    if result.key_iou is not None:
        metrics["key_fg_iou"] = result.key_iou
    stored = result.manifest.get("backgrounds", {})
    metrics["train_background_images"] = len(stored.get("images", []))
    metrics["train_background_videos"] = len(stored.get("videos", []))
    metrics["skipped_videos"] = len(result.skipped)
    metrics["seconds"] = result.seconds
    if result.frames_processed:
        metrics["frames_per_second"] = result.frames_processed / result.seconds
        metrics["realtime_factor"] = result.realtime_factor
    metrics.update(result.stats)
    return metrics


def sample_grid(store: ClipStore, per_split: int = 3, width: int = 320) -> np.ndarray:
    """RGB image: for a few clips of each split, the middle frame with the label's outline
    next to the label itself."""
    rows = []
    for split in SPLITS:
        clips = store.clips(split)
        picks = (
            [clips[i] for i in np.linspace(0, len(clips) - 1, per_split).astype(int)]
            if clips
            else []
        )
        for rec in dict.fromkeys(picks):
            rows.append(_sample_row(store, rec, width, split))
    if not rows:
        return np.zeros((8, 8, 3), np.uint8)
    return np.concatenate(rows, axis=0)


def _sample_row(store: ClipStore, rec: ClipRecord, width: int, split: str) -> np.ndarray:
    clip = store.open(rec)
    mid = len(clip) // 2
    frame = clip.frames(mid, mid + 1)[0].copy()
    label = clip.labels(mid, mid + 1)[0]
    contours, _ = cv2.findContours(label, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(frame, contours, -1, (255, 0, 255), 2)
    mask = np.repeat(label[..., None] * 255, 3, axis=2).astype(np.uint8)
    row = np.concatenate([frame, mask], axis=1)
    scale = 2 * width / row.shape[1]
    row = cv2.resize(row, (2 * width, max(1, round(row.shape[0] * scale))), cv2.INTER_AREA)
    cv2.putText(row, f"{split}: {rec.id}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1)
    return row


def write_samples(store: ClipStore) -> Path:
    """``samples.png`` in the store (atomic); returns its path."""
    grid = sample_grid(store)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    path = store.root / "samples.png"
    if ok:
        atomic_write_bytes(path, buf.tobytes())
    return path


def store_dataset(store: ClipStore) -> MetaDataset:
    """The store as an MLflow dataset: its path as source, the manifest's hash as digest."""
    digest = hashlib.sha256((store.root / "store.json").read_bytes()).hexdigest()[:16]
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are local
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(store.root.resolve()))
    return MetaDataset(source=source, name=f"clips-{store.root.name}", digest=digest)


def log_preprocess(result) -> None:
    """Log metrics, the sample grid, manifest and plan, and the store as a dataset input."""
    mlflow.log_metrics(preprocess_metrics(result))
    store = ClipStore(result.root)
    mlflow.log_artifact(str(write_samples(store)))
    mlflow.log_artifact(str(store.root / "store.json"))
    mlflow.log_artifact(str(store.root / "plan.json"))
    mlflow.log_input(store_dataset(store), context="preprocess")
    if result.skipped:
        mlflow.set_tag("skipped", "; ".join(sorted(result.skipped.values()))[:4000])
