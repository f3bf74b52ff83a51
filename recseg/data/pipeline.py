"""The per-video work of ``recseg preprocess``: decode, key, composite, write clips (the fixed
composite, the labels, and the layers the training loader composites on the fly)."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from recseg.config import parse_size
from recseg.data.backdrop import (
    CameraPath,
    fit_background,
    is_video,
    load_image,
    load_video,
    render_background,
    render_video_background,
)
from recseg.data.backgrounds import VIDEO_SECONDS, store_backgrounds
from recseg.data.chroma import Key, alpha_to_u8, composite, extend_colour, key_frame
from recseg.data.sources import Source
from recseg.data.store import MANIFEST, ClipRecord, atomic_write_json, read_meta, write_clip
from recseg.data.video import VideoError, crop_box, decode, fit_size, resampled


@dataclasses.dataclass
class Work:
    """Everything a video's processing needs besides the video."""

    cfg: Any  # PreprocessConfig
    root: Path
    backgrounds_dir: Path
    backgrounds: dict[str, list[str]]
    truth_dir: Path | None
    _cache: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    _videos: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    _truth: tuple[Path, np.ndarray, np.ndarray | None] | None = None

    @functools.cached_property
    def size(self) -> tuple[int, int]:
        """The store's frame size (H, W)."""
        return parse_size(self.cfg.size)

    def truth(self, path: Path) -> np.ndarray:
        """The true masks (N, H, W) bool of one video (the last one is cached)."""
        self._load_truth(path)
        return self._truth[1]  # type: ignore[index]

    def events(self, path: Path) -> np.ndarray | None:
        """The per-frame event codes (N,) of one video's truth (``recseg footage --hard``)."""
        self._load_truth(path)
        return self._truth[2]  # type: ignore[index]

    def _load_truth(self, path: Path) -> None:
        if self._truth is None or self._truth[0] != path:
            with np.load(path) as data:
                events = data["events"] if "events" in data.files else None
                self._truth = (path, data["masks"], events)

    def background(self, name: str) -> np.ndarray:
        """A background fitted to the store size (cached): an image (H, W, 3), or a video's
        first ``VIDEO_SECONDS`` at the store's frame rate (N, H, W, 3)."""
        cache, limit = (self._videos, 2) if is_video(name) else (self._cache, 16)
        if name not in cache:
            if len(cache) >= limit:
                cache.clear()
            path = self.backgrounds_dir / name
            if is_video(name):
                cache[name] = load_video(path, self.size, self.cfg.fps, VIDEO_SECONDS)
            else:
                cache[name] = fit_background(load_image(path), self.size)
        return cache[name]

    def render(
        self, name: str, camera: CameraPath, n_frames: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, int | None]:
        """A clip's moving background and, for a video, the frame it starts at (drawn)."""
        if not is_video(name):
            return render_background(self.background(name), self.size, camera, n_frames), None
        frames = self.background(name)
        offset = int(rng.integers(len(frames)))
        return render_video_background(frames, self.size, camera, n_frames, offset), offset

    def store_backgrounds(self) -> dict[str, list[str]]:
        """Copy the train backgrounds into the store (see ``recseg.data.backgrounds``)."""
        names = self.backgrounds["train"]
        return store_backgrounds(self.root, names, self.background, float(self.cfg.fps))


@dataclasses.dataclass
class Outcome:
    """Records of all clips (new and resumed) and the counts the run reports."""

    records: list[ClipRecord] = dataclasses.field(default_factory=list)
    problems: dict[str, str] = dataclasses.field(default_factory=dict)
    source_seconds: float = 0.0
    frames_processed: int = 0
    intersection: int = 0
    union: int = 0
    uncertain: float = 0.0  # sum over frames of the share of pixels with 0.05 < alpha < 0.95
    uncertain_frames: int = 0

    def key_iou(self) -> float | None:
        """Foreground IoU of the key against the true masks, pooled over all frames."""
        return self.intersection / self.union if self.union else None

    def key_summary(self) -> dict[str, Any]:
        return {"fg_iou": self.key_iou(), "intersection": self.intersection, "union": self.union}

    def stats(self) -> dict[str, float]:
        out = {}
        if self.uncertain_frames:
            out["key_soft_edge_fraction"] = self.uncertain / self.uncertain_frames
        return out

    def add(self, record: ClipRecord, meta: dict[str, Any]) -> None:
        self.records.append(record)
        self.intersection += int(meta.get("intersection", 0))
        self.union += int(meta.get("union", 0))


def remove_stale_temp_files(root: Path) -> None:
    """Delete temp files that a killed run left behind (never a finished file)."""
    for tmp in root.rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def done_path(root: Path, name: str) -> Path:
    """The marker listing a finished video's clips."""
    return root / "done" / f"{name}.json"


def forget_video(root: Path, name: str) -> None:
    """Delete a video's finished clips and its done marker (its file changed). The manifest
    goes first: a reader never finds it listing a clip that is gone (the run writes a new one)."""
    (root / MANIFEST).unlink(missing_ok=True)
    done_path(root, name).unlink(missing_ok=True)
    for path in root.glob(f"clips/*/{name}-[0-9][0-9][0-9].npz"):
        path.unlink()


def process_all(
    work: Work,
    sources: list[Source],
    splits: dict[str, str],
    progress: bool = True,
    warn: Callable[[str], None] = lambda m: None,
) -> Outcome:
    """Process every source (skipping finished ones); problems do not stop other videos."""
    outcome = Outcome()
    n_clip = work.cfg.frames_per_clip
    total = sum(_expected_clips(s, work.cfg) * n_clip for s in sources)
    with tqdm(total=total, unit="frame", disable=None if progress else True) as bar:
        for source in sources:
            bar.set_description(source.name[:24])
            try:
                _process_video(work, source, splits[source.name], outcome, bar)
            except VideoError as exc:
                outcome.problems[str(source.path)] = str(exc)
                warn(f"partly skipped {exc}")
    outcome.records.sort(key=lambda r: (r.split, r.video, r.index))
    return outcome


def _expected_clips(source: Source, cfg: Any) -> int:
    if not source.info or not source.info.duration:
        return 0
    return math.floor(source.info.duration * cfg.fps + 1e-6) // cfg.frames_per_clip


def _process_video(work: Work, source: Source, split: str, outcome: Outcome, bar: tqdm) -> None:
    done = done_path(work.root, source.name)
    finished = json.loads(done.read_text()) if done.is_file() else []
    if finished and all((work.root / m["record"]["path"]).is_file() for m in finished):
        for meta in finished:
            outcome.add(ClipRecord.from_dict(meta["record"]), meta)
            bar.update(work.cfg.frames_per_clip)
        return
    metas = []
    for index, frames, src_idx in _clips(work, source):
        path = work.root / "clips" / split / f"{source.name}-{index:03d}.npz"
        meta = _existing_meta(path)
        if meta is None:
            meta = _make_clip(work, source, split, index, frames, src_idx, path, outcome)
            outcome.source_seconds += len(frames) / work.cfg.fps
            outcome.frames_processed += len(frames)
        outcome.add(ClipRecord.from_dict(meta["record"]), meta)
        metas.append(meta)
        bar.update(len(src_idx))
    if not metas:
        raise VideoError(f"{source.path.name}: no complete clip decoded")
    atomic_write_json(done, metas)


def _clips(work: Work, source: Source) -> Iterator[tuple[int, list[np.ndarray], list[int]]]:
    """``(clip index, frames, source frame indices)`` of each complete clip."""
    assert source.info is not None
    n = work.cfg.frames_per_clip
    frames: list[np.ndarray] = []
    src_idx: list[int] = []
    index = 0
    box: tuple[int, int, int, int] | None = None
    for _, src, frame in resampled(decode(source.path), work.cfg.fps, source.info.fps):
        box = box or crop_box(frame.shape[:2], work.size)
        frames.append(frame[box[0] : box[1], box[2] : box[3]])
        src_idx.append(src)
        if len(frames) == n:
            yield index, frames, src_idx
            frames, src_idx, index = [], [], index + 1


def _existing_meta(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return read_meta(path)
    except (OSError, ValueError, KeyError):
        path.unlink(missing_ok=True)  # unreadable: made again
        return None


def clip_seed(seed: int, video: str, index: int) -> np.random.Generator:
    """The RNG of one clip: a function of (seed, video, clip index) only, so a resumed run
    draws exactly what an uninterrupted one would."""
    return np.random.default_rng([seed, zlib.crc32(video.encode()), index])


def _make_clip(
    work: Work,
    source: Source,
    split: str,
    index: int,
    frames: list[np.ndarray],
    src_idx: list[int],
    path: Path,
    outcome: Outcome,
) -> dict[str, Any]:
    """Key and composite one clip, write it, return its meta (record + key counts)."""
    rng = clip_seed(work.cfg.seed, source.name, index)
    choices = work.backgrounds[split]
    bg_name = choices[int(rng.integers(len(choices)))]
    camera = CameraPath.draw(rng)
    bgs, offset = work.render(bg_name, camera, len(frames), rng)
    key: Key = source.key  # type: ignore[assignment]
    out, labels, fgs, alphas = _key_clip(work, key, frames, bgs, outcome)
    true = _true_labels(work, source, src_idx)
    inter, union = _counts(true, labels)
    if work.cfg.labels == "truth":
        if true is None:
            raise VideoError(f"{source.path.name}: --labels truth, but no {source.path.stem}.npz")
        labels = true
    h, w = work.size
    record = ClipRecord(
        id=path.stem,
        split=split,
        video=source.name,
        index=index,
        frames=len(frames),
        height=h,
        width=w,
        fps=float(work.cfg.fps),
        background=bg_name,
        fg_ratio=float(labels.mean()),
        path=str(path.relative_to(work.root)),
        key_iou=(inter / union) if union else None,
        layers=True,
    )
    meta = {
        "record": record.to_dict(),
        "source_frames": [int(i) for i in src_idx],
        "camera": dataclasses.asdict(camera),
        **({"background_offset": offset} if offset is not None else {}),
        "intersection": inter,
        "union": union,
        **_events(work, source, src_idx),
    }
    write_clip(path, out, labels, meta, layers=(fgs, alphas))
    return meta


def _key_clip(
    work: Work, key: Key, frames: list[np.ndarray], bgs: np.ndarray, outcome: Outcome
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Key each frame: ``(fixed composite over bgs, labels, foreground colour extended past
    the alpha edge, alpha uint8)``, all at the store size."""
    shape = (len(frames), *work.size)
    out, fgs = np.empty((*shape, 3), np.uint8), np.empty((*shape, 3), np.uint8)
    labels, alphas = np.empty(shape, np.uint8), np.empty(shape, np.uint8)
    for k, frame in enumerate(frames):
        fg, alpha = key_frame(frame, key, work.size)
        out[k], labels[k] = composite(fg, alpha, bgs[k])
        alphas[k] = alpha_to_u8(alpha)
        fgs[k] = extend_colour(fg, alphas[k])
        outcome.uncertain += float(((alpha > 0.05) & (alpha < 0.95)).mean())
        outcome.uncertain_frames += 1
    return out, labels, fgs, alphas


def _true_labels(work: Work, source: Source, src_idx: list[int]) -> np.ndarray | None:
    """The true masks of a clip's frames at the store size (uint8 0/1), if there are any."""
    if work.truth_dir is None:
        return None
    path = work.truth_dir / f"{source.path.stem}.npz"
    if not path.is_file():
        return None
    masks = work.truth(path)
    if max(src_idx) >= len(masks):
        raise VideoError(f"{path.name}: {len(masks)} masks, fewer than the video's frames")
    return np.stack(
        [
            fit_size(masks[i].astype(np.uint8) * 255, work.size, cv2.INTER_AREA) >= 128
            for i in src_idx
        ]
    ).astype(np.uint8)


def _events(work: Work, source: Source, src_idx: list[int]) -> dict[str, list[int]]:
    """``{"events": per-frame event codes}`` when the video's truth records events (0 normal,
    1 occluded, 2 burst, 3 dropped, 4 motion blur), else nothing."""
    if work.truth_dir is None:
        return {}
    path = work.truth_dir / f"{source.path.stem}.npz"
    codes = work.events(path) if path.is_file() else None
    if codes is None or max(src_idx) >= len(codes):
        return {}
    return {"events": [int(codes[i]) for i in src_idx]}


def _counts(true: np.ndarray | None, keyed: np.ndarray) -> tuple[int, int]:
    """Intersection and union of keyed labels with the true ones (0, 0 without truth)."""
    if true is None:
        return 0, 0
    t, k = true.astype(bool), keyed.astype(bool)
    return int(np.count_nonzero(t & k)), int(np.count_nonzero(t | k))
