"""A held-out set for a workflow: people (another footage seed) the models never saw, over the
backgrounds that no model trained on (the main store's test backgrounds), as a test-only store.

``recseg evaluate --model-uri`` scores a model on it, and one of its clips, written as an mp4,
is the video the demo segments: a new person in front of a real photo, not a green screen.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from mlflow import MlflowClient

from recseg.data.footage.video import Mp4Writer
from recseg.data.store import ClipStore
from recseg.errors import InputError
from recseg.tracking import tags as T
from recseg.tracking.evaluate_config import DEFAULT_EXPERIMENT
from recseg.workflows.plan import Layout, Scale
from recseg.workflows.steps import Step

TEXTURE = "texture-"  # generated textures: not real photos
# photographs first (Debian's lomiri wallpapers and mate nature photos, scikit-image's photos),
# then other wallpapers, then generated textures
PHOTOS = ("lomiri-", "mate-nature-", "skimage-")


def photo_rank(name: str) -> int:
    """0 for a photograph, 1 for another image, 2 for a generated texture."""
    return 0 if name.startswith(PHOTOS) else 2 if name.startswith(TEXTURE) else 1


def footage_step(layout: Layout, scale: Scale) -> Step:
    """Footage of other people (seed 1): nobody in it is in the train footage."""
    args = ("footage", str(layout.heldout / "footage"), "--videos", str(scale.heldout_videos),
            "--seconds", f"{scale.seconds:g}", "--size", scale.footage_size, "--hard",
            "--seed", "1", "--backgrounds", "1")  # fmt: skip
    return Step(f"held-out footage: {scale.heldout_videos} videos of new people", args)


def link_inputs(layout: Layout) -> int:
    """``heldout/videos/test/`` (every held-out video, so every clip is a test clip) and
    ``heldout/backgrounds/`` (the main store's test backgrounds); how many backgrounds."""
    plan = json.loads((layout.store / "plan.json").read_text())
    source = Path(plan["backgrounds_dir"])
    names = plan["backgrounds"]["test"]
    videos = layout.heldout / "videos" / "test"
    backgrounds = layout.heldout / "backgrounds"
    for folder in (videos, backgrounds):
        folder.mkdir(parents=True, exist_ok=True)
    for video in sorted((layout.heldout / "footage" / "videos").glob("*.mp4")):
        _link(video, videos / video.name)
    for name in names:
        _link(source / name, backgrounds / Path(name).name)
    return len(names)


def _link(target: Path, link: Path) -> None:
    if not link.is_symlink() and not link.exists():
        os.symlink(target.resolve(), link)


def preprocess_step(layout: Layout, scale: Scale, experiment: str) -> Step:
    """The test-only store of the held-out set (labels: the footage's true masks)."""
    args = ("preprocess", "--videos", str(layout.heldout / "videos"),
            "--backgrounds", str(layout.heldout / "backgrounds"),
            "--out", str(layout.heldout_store), "--size", scale.size,
            "--clip-seconds", f"{scale.clip_seconds:g}", "--labels", "truth",
            "--truth", str(layout.heldout / "footage" / "truth"), "--seed", "1",
            "--experiment", experiment)  # fmt: skip
    return Step("preprocess: held-out store (new people, backgrounds no model trained on)", args)


def evaluate_step(layout: Layout, model_uri: str) -> Step:
    """Score ``model_uri`` on the held-out store (a run of its own)."""
    args = ("evaluate", "--data", str(layout.heldout_store), "--model-uri", model_uri,
            "--latency-frames", "0")  # fmt: skip
    return Step(f"evaluate {model_uri} on the held-out set", args)


def write_video(layout: Layout, out: Path) -> str:
    """The held-out clips of one person over a photograph (else another image, else a texture),
    one after the other, as an mp4; the background's name."""
    store = ClipStore(layout.heldout_store)
    clips = store.clips("test")
    if not clips:
        raise InputError(f"{layout.heldout_store}: the held-out store has no test clips")
    first = min(clips, key=lambda c: photo_rank(Path(c.background).name))
    chosen = [c for c in clips if c.video == first.video and c.background == first.background]
    frames = np.concatenate([store.open(c).frames() for c in chosen])
    with Mp4Writer(out, first.fps, frames.shape[1:3], rgb=True) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(first.background).name


def heldout_fg_iou(model_uri: str, store: Path) -> float | None:
    """The foreground IoU of the newest evaluation of ``model_uri`` on ``store``."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        f"tags.`{T.KIND}` = 'evaluate' and params.model_uri = '{model_uri}' "
        f"and params.data = '{store}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].data.metrics.get("test_fg_iou") if runs else None
