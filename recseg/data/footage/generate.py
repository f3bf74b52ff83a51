"""``make_footage``: write the demo footage (videos, truth masks, backgrounds, footage.json)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np

from recseg.data.footage import events as ev
from recseg.data.footage.backgrounds import LICENCES, write_backgrounds
from recseg.data.footage.config import GENERATOR_VERSION, FootageConfig, check_footage_config
from recseg.data.footage.programs import PROGRAMS
from recseg.data.footage.render import VideoPlan, make_plan, render_frame
from recseg.data.footage.scene import SensorNoise
from recseg.data.footage.video import Mp4Writer, write_json, write_npz
from recseg.data.paths import check_target, writing
from recseg.errors import InputError

MANIFEST = "footage.json"
_OWN_FILE = re.compile(r"^(videos/person-\d+\.mp4|truth/person-\d+\.npz|backgrounds/[\w.-]+)$")


def video_name(index: int) -> str:
    """File stem of video ``index``: ``person-00``, ``person-01``, ..."""
    return f"person-{index:02d}"


def program_for(seed: int, index: int) -> str:
    """The program of video ``index``: the cycle ``PROGRAMS`` from a seed-chosen start, so
    any three consecutive videos include one that a figure enters and leaves."""
    offset = int(np.random.default_rng(np.random.SeedSequence([seed, 7_777_777])).integers(5))
    return PROGRAMS[(index + offset) % len(PROGRAMS)]


def _video_info(name: str, vp: VideoPlan, masks: np.ndarray, crf: int) -> dict:
    """footage.json's record of one video."""
    codes = vp.codes()
    figures = [
        {
            "height_px": round(a.height, 1),
            "motions": sorted(a.kinds),
            "lower": a.look.lower,
            "hair": a.look.hair_style,
            "long_sleeves": a.look.long_sleeves,
        }
        for a in vp.actors
    ]
    screen = vp.screen
    return {
        "name": name,
        "video": f"videos/{name}.mp4",
        "truth": f"truth/{name}.npz",
        "frames": vp.frames,
        "fps": vp.fps,
        "size": list(vp.shape),
        "program": vp.program,
        "motions": sorted(set().union(*(a.kinds for a in vp.actors))),
        "figures": len(vp.actors),
        "figure_details": figures,
        "empty_frames": int((~masks.any(axis=(1, 2))).sum()),
        "mean_coverage": round(float(masks.mean()), 4),
        "hard_events": [e.summary() for e in vp.events],
        "event_counts": {ev.EVENT_NAMES[k]: int((codes == k).sum()) for k in ev.EVENT_NAMES},
        "screen": {
            "hue": round(screen.hue, 2),
            "noise_sigma": round(screen.noise, 2),
            "spill": round(screen.spill, 3),
            "shadow": round(screen.shadow_strength, 3),
        },
        "crf": crf,
    }


def make_video(cfg: FootageConfig, index: int, out: Path) -> dict:
    """Render, encode and save video ``index`` with its truth; returns its footage.json record."""
    plan_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([cfg.seed, index]).spawn(2)
    )
    name = video_name(index)
    vp = make_plan(plan_rng, program_for(cfg.seed, index), cfg.shape, cfg.fps, cfg.frames, cfg.hard)
    crf = int(plan_rng.integers(20, 24))
    masks = np.zeros((vp.frames, *vp.shape), bool)
    noise = SensorNoise(noise_rng, vp.shape, vp.screen.noise)
    previous = None
    with Mp4Writer(out / "videos" / f"{name}.mp4", cfg.fps, vp.shape, crf) as writer:
        for i in range(vp.frames):
            previous, masks[i] = render_frame(vp, i, noise, previous)
            writer.write(previous)
    write_npz(
        out / "truth" / f"{name}.npz", masks=masks, fps=np.float64(cfg.fps), events=vp.codes()
    )
    return _video_info(name, vp, masks, crf)


def _previous_files(out: Path) -> set[str]:
    """Files a previous run listed in its footage.json (only names this generator writes)."""
    try:
        old = json.loads((out / MANIFEST).read_text())
        listed = [v.get(k) for v in old.get("videos", []) for k in ("video", "truth")]
        listed += [b.get("file") for b in old.get("backgrounds", [])]
    except (OSError, ValueError, AttributeError, TypeError):
        return set()
    return {p for p in listed if isinstance(p, str) and _OWN_FILE.match(p)}


def _manifest(cfg: FootageConfig, videos: list[dict], backgrounds: list[dict]) -> dict:
    """footage.json: options, per-video records and backgrounds (no timestamps: reproducible)."""
    return {
        "generator": "recseg footage",
        "version": GENERATOR_VERSION,
        "seed": cfg.seed,
        "options": dataclasses.asdict(cfg),
        "size": list(cfg.shape),
        "fps": cfg.fps,
        "frames_per_video": cfg.frames,
        "event_codes": {str(k): v for k, v in ev.EVENT_NAMES.items()},
        "mask": "True = person (coverage > 0.5 of the pixel); amodal: kept under occlusion",
        "videos": videos,
        "backgrounds": backgrounds,
        "licences": LICENCES,
    }


def make_footage(cfg: FootageConfig, out_dir: str | Path) -> dict:
    """Write ``cfg.videos`` videos with truth, the backgrounds and footage.json into
    ``out_dir`` (other files there are left alone; files a previous run listed and this one
    did not write are removed); returns a summary (counts and seconds taken). A failure
    removes the folders this call created; a full disk raises a ``WriteFailure`` naming
    ``out_dir``."""
    check_footage_config(cfg)
    start = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"OUT_DIR: not a folder: {out}")
    check_target("OUT_DIR", out)
    created = [d for d in (*reversed(out.parents), out) if not d.exists()]
    created += [out / sub for sub in ("videos", "truth", "backgrounds") if not (out / sub).exists()]
    try:
        with writing(out):
            return _write_footage(cfg, out, start)
    except BaseException:
        for folder in created:  # outermost first: what this call made, whole
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _write_footage(cfg: FootageConfig, out: Path, start: float) -> dict:
    try:
        for sub in ("videos", "truth", "backgrounds"):
            (out / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"OUT_DIR: cannot create {out}: {exc.strerror or exc}") from None
    stale = _previous_files(out)
    videos = [make_video(cfg, index, out) for index in range(cfg.videos)]
    backgrounds = write_backgrounds(out / "backgrounds", cfg.seed, cfg.backgrounds)
    written = {v[k] for v in videos for k in ("video", "truth")} | {b["file"] for b in backgrounds}
    for rel in sorted(stale - written):
        (out / rel).unlink(missing_ok=True)
    write_json(out / MANIFEST, _manifest(cfg, videos, backgrounds))
    return {
        "out_dir": str(out),
        "videos": len(videos),
        "frames": sum(v["frames"] for v in videos),
        "backgrounds": len(backgrounds),
        "seconds": round(time.perf_counter() - start, 2),
    }
