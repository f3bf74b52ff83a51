"""``recseg preprocess``: greenscreen videos -> keyed, composited clips in a clip store.

First the train backgrounds are copied into the store (fitted; see ``recseg.data.backgrounds``).
Per video: decode with PyAV, resample to ``--fps``, cut into clips of ``--clip-seconds``
(a tail shorter than a clip is dropped), crop/resize to ``--size``, key each frame (soft alpha,
despill), composite it over a moving background from the video's split (the fixed composite),
and write the clip file atomically with the keyed layers (foreground colour, alpha). A re-run
on the same ``--out`` keeps the split plan and every finished clip, and continues where it
stopped; ``store.json`` appears only when every usable video is done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recseg.config import accepts, at_least, one_of, option, parse_size, size_check
from recseg.data import pipeline
from recseg.data.paths import WriteFailure, check_target, writing
from recseg.data.sources import (
    Source,
    check_video,
    discover_videos,
    split_backgrounds,
    split_videos,
    test_only,
)
from recseg.data.store import ClipRecord, atomic_write_json, write_manifest
from recseg.data.video import VideoError
from recseg.errors import InputError

PIPELINE_VERSION = 2  # 2: foreground layers, backgrounds (and background videos) in the store


def _fps_check(value: float) -> str | None:
    return None if 1 <= value <= 120 else f"must be between 1 and 120, got {value}"


def _out_ok(value: str) -> None:
    path = Path(value)
    if not str(value).strip():
        raise InputError("must name a folder")
    if path.exists() and not path.is_dir():
        raise InputError(f"{value} exists and is not a folder")
    check_target("", path)


@dataclasses.dataclass
class PreprocessConfig:
    """Options of ``recseg preprocess`` and the MLproject ``preprocess`` entry point."""

    videos: str = dataclasses.field(
        metadata=option(
            "Folder of greenscreen videos: flat (split by video) or with train/ val/ test/.",
            mltype="path",
        )
    )
    backgrounds: str = dataclasses.field(
        metadata=option(
            "Folder of background images and videos (split: train vs val/test; the train ones "
            "are copied into the store).",
            mltype="path",
        )
    )
    out: str = dataclasses.field(
        metadata=option("Store folder to write (re-run to resume).", check=accepts(_out_ok))
    )
    clip_seconds: float = dataclasses.field(
        default=4.0, metadata=option("Length of a clip in seconds.", check=at_least(0.25))
    )
    size: str = dataclasses.field(
        default="270x512", metadata=option("Frame size HxW of the store.", check=size_check)
    )
    fps: float = dataclasses.field(
        default=15.0, metadata=option("Frame rate of the clips (resampled).", check=_fps_check)
    )
    seed: int = dataclasses.field(
        default=0,
        metadata=option("Seed of the splits, backgrounds and camera moves.", check=at_least(0)),
    )
    truth: str = dataclasses.field(
        default="",
        metadata=option(
            "Folder of true masks <video>.npz to score the key against; default: "
            "<videos>/../truth when present; 'none' to skip."
        ),
    )
    labels: str = dataclasses.field(
        default="key",
        metadata=option(
            "Where labels come from: the chroma 'key', or the 'truth' masks (footage made "
            "with --hard hides people on purpose; its true masks say where they are).",
            check=one_of("key", "truth"),
        ),
    )
    experiment: str = dataclasses.field(
        default="preprocess", metadata=option("MLflow experiment of the preprocess run.")
    )

    def settings(self) -> dict[str, Any]:
        """What the store's content depends on (a re-run must match it)."""
        return {
            "size": list(parse_size(self.size)),
            "fps": float(self.fps),
            "clip_seconds": float(self.clip_seconds),
            "frames_per_clip": self.frames_per_clip,
            "seed": int(self.seed),
            "labels": self.labels,
            "pipeline": PIPELINE_VERSION,
        }

    @property
    def frames_per_clip(self) -> int:
        return max(1, round(self.clip_seconds * self.fps))


@dataclasses.dataclass
class PreprocessResult:
    """What a preprocess run made: records, skipped videos, counts and key quality."""

    root: Path
    manifest: dict[str, Any]
    records: list[ClipRecord]
    skipped: dict[str, str]
    key_iou: float | None
    seconds: float
    source_seconds: float
    frames_processed: int
    stats: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def realtime_factor(self) -> float:
        """Seconds of input video handled per second of wall time."""
        return self.source_seconds / max(self.seconds, 1e-9)


def _truth_dir(cfg: PreprocessConfig) -> Path | None:
    if cfg.truth.lower() == "none":
        return None
    if cfg.truth:
        path = Path(cfg.truth)
        if not path.is_dir():
            raise InputError(f"--truth {cfg.truth}: not a folder")
        return path
    guess = Path(cfg.videos).resolve().parent / "truth"
    return guess if guess.is_dir() else None


def _load_plan(root: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    plan_path = root / "plan.json"
    if not plan_path.is_file():
        return None
    try:
        plan = json.loads(plan_path.read_text())
    except ValueError:
        raise InputError(f"--out {root}: plan.json is unreadable; use a new --out") from None
    made_with = plan.get("settings", {})
    if made_with != settings:
        diff = [
            f"{k} {made_with.get(k)} -> {v}" for k, v in settings.items() if made_with.get(k) != v
        ]
        raise InputError(
            f"--out {root}: holds a store made with other settings ({'; '.join(diff)}); "
            "use a new --out"
        )
    return plan


def check_sources(
    cfg: PreprocessConfig, warn: Callable[[str], None]
) -> tuple[list[Source], dict[str, str]]:
    """Probe every video; returns usable sources and ``{file: reason}`` of skipped ones."""
    usable, skipped = [], {}
    for source in discover_videos(cfg.videos):
        try:
            check_video(source, cfg.clip_seconds)
        except VideoError as exc:
            skipped[str(source.path)] = str(exc)
            warn(f"skipping {exc}")
            continue
        usable.append(source)
    if not usable:
        first = next(iter(skipped.values()))
        raise InputError(f"--videos {cfg.videos}: no usable video ({first})")
    return usable, skipped


@dataclasses.dataclass
class Prepared:
    """A checked preprocess job: usable sources, splits, backgrounds and the plan to write."""

    cfg: PreprocessConfig
    sources: list[Source]
    skipped: dict[str, str]
    splits: dict[str, str]
    truth: Path | None
    plan: dict[str, Any]  # what plan.json records, backgrounds per split included
    changed: list[str]  # videos whose file changed since their clips were made


def fingerprint(path: Path, chunk: int = 1 << 16) -> str:
    """A cheap identity of a file: its size and a hash of its first and last 64 KiB."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as fh:
        digest.update(fh.read(chunk))
        fh.seek(max(0, size - chunk))
        digest.update(fh.read(chunk))
    return f"{size}:{digest.hexdigest()[:16]}"


def prepare_preprocess(cfg: PreprocessConfig, warn: Callable[[str], None]) -> Prepared:
    """Check every input before anything is written (``InputError`` names the problem)."""
    settings = cfg.settings()
    old = _load_plan(Path(cfg.out), settings) or {}
    # decodes every image: fail early; a test-only store uses every background for its test clips
    fresh = split_backgrounds(cfg.backgrounds, cfg.seed, test_only(cfg.videos))
    backgrounds = old.get("backgrounds") or fresh  # a resumed store keeps its split
    truth = _truth_dir(cfg)
    if cfg.labels == "truth" and truth is None:
        raise InputError("--labels truth: no truth folder (give --truth DIR)")
    sources, skipped = check_sources(cfg, warn)
    previous = {n: v["split"] for n, v in old.get("videos", {}).items()}
    splits = split_videos(sources, cfg.seed, previous)
    plan = {
        "settings": settings,
        "backgrounds_dir": str(Path(cfg.backgrounds).resolve()),
        "backgrounds": backgrounds,
        "videos": {
            s.name: {
                "split": splits[s.name],
                "path": str(s.path.resolve()),
                "fps": s.info.fps if s.info else None,
                "duration": s.info.duration if s.info else None,
                "key": s.key.to_dict() if s.key else None,
                "fingerprint": fingerprint(s.path),
            }
            for s in sources
        },
    }
    changed = [
        name
        for name, video in plan["videos"].items()
        if name in old.get("videos", {})
        and old["videos"][name].get("fingerprint") != video["fingerprint"]
    ]
    return Prepared(cfg, sources, skipped, splits, truth, plan, changed)


def run_preprocess(
    job: Prepared, warn: Callable[[str], None] = lambda m: None, progress: bool = True
) -> PreprocessResult:
    """Write the store of a prepared job (resuming what is there). A full disk raises a
    ``WriteFailure`` naming ``--out``, after removing the store if this call created it (a
    store that was there before keeps its finished clips, to resume)."""
    root = Path(job.cfg.out)
    created = [p for p in (*reversed(root.parents), root) if not p.exists()]
    try:
        with writing(root):
            return _write_store(job, warn, progress)
    except WriteFailure:
        if created:
            shutil.rmtree(created[0], ignore_errors=True)
        raise


def _write_store(job: Prepared, warn: Callable[[str], None], progress: bool) -> PreprocessResult:
    start = time.monotonic()
    cfg, root = job.cfg, Path(job.cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    for name in job.changed:
        warn(f"{name} changed since its clips were made: making them again")
        pipeline.forget_video(root, name)
    atomic_write_json(root / "plan.json", job.plan)
    pipeline.remove_stale_temp_files(root)
    work = pipeline.Work(cfg, root, Path(cfg.backgrounds), job.plan["backgrounds"], job.truth)
    stored = work.store_backgrounds()
    outcome = pipeline.process_all(work, job.sources, job.splits, progress=progress, warn=warn)
    skipped = {**job.skipped, **outcome.problems}
    extra = {"skipped": skipped, "key": outcome.key_summary()}
    manifest = write_manifest(root, cfg.settings(), outcome.records, extra, stored)
    return PreprocessResult(
        root=root,
        manifest=manifest,
        records=outcome.records,
        skipped=skipped,
        key_iou=outcome.key_iou(),
        seconds=time.monotonic() - start,
        source_seconds=outcome.source_seconds,
        frames_processed=outcome.frames_processed,
        stats=outcome.stats(),
    )
