"""``recseg preprocess`` writes store version 2: clip layers, the train backgrounds (images and
videos) inside the store, reproducible fixed composites; and refuses bad backgrounds folders."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from recseg.data.clipfile import FrameFile
from recseg.data.composite import CompositeParams
from recseg.data.loader import make_loader
from recseg.data.sources import split_backgrounds
from recseg.data.store import SPLITS, VERSION, ClipStore
from tests.media import one_error_line, run_recseg, write_backgrounds, write_video

SIZE = ("--size", "72x128", "--clip-seconds", "1")


def recseg(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_recseg(*args, cwd=cwd, env={"MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow.db"})


def digests(root: Path, pattern: str) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.glob(pattern))
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Demo footage, preprocessed twice with the same seed into two stores."""
    root = tmp_path_factory.mktemp("demo")
    made = recseg("footage", str(root / "f"), "--videos", "3", "--seconds", "2", "--size",
                  "72x128", cwd=root)  # fmt: skip
    assert made.returncode == 0, made.stderr
    for out in ("s1", "s2"):
        result = recseg(
            "preprocess", "--videos", str(root / "f" / "videos"), "--backgrounds",
            str(root / "f" / "backgrounds"), "--out", str(root / out), *SIZE, cwd=root,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    return {"root": root, "f": root / "f", "s1": root / "s1", "s2": root / "s2"}


def test_demo_store_has_layers_and_its_train_backgrounds(demo: dict[str, Path]) -> None:
    store = ClipStore(demo["s1"])
    assert store.version == VERSION == 2 and store.settings["pipeline"] == 2
    plan = json.loads((store.root / "plan.json").read_text())
    images = store.backgrounds("images")
    assert len(images) == len(plan["backgrounds"]["train"]) >= 2
    assert store.backgrounds("videos") == []
    assert sorted(p.name for p in (store.root / "backgrounds").iterdir()) == sorted(
        p.name for p in images
    )
    for path in images:
        h, w = cv2.imread(str(path)).shape[:2]
        assert min(h / 72, w / 128) == pytest.approx(1.0, abs=0.02)  # fitted: no zoom-out
    for split in SPLITS:
        for rec in store.clips(split):
            clip = store.open(rec)
            assert rec.layers and clip.has_layers
            fg, alpha = clip.layers()
            assert fg.shape == (15, 72, 128, 3) and alpha.shape == (15, 72, 128)
            assert np.array_equal(clip.labels(), (alpha >= 128).astype(np.uint8))  # the key's
            assert 0 < (alpha > 0).mean() < 0.6 and ((alpha > 0) & (alpha < 255)).any()
    loader = make_loader(store.root, "train", batch_size=1, seq_len=5)
    assert loader.composites_on_the_fly
    assert isinstance(loader.sampler.params(0, 0), CompositeParams)
    assert len(list(loader)) > 0


def test_same_inputs_and_seed_give_byte_identical_stores(demo: dict[str, Path]) -> None:
    for pattern in ("clips/val/*.npz", "clips/test/*.npz", "clips/train/*.npz", "backgrounds/*"):
        first, second = digests(demo["s1"], pattern), digests(demo["s2"], pattern)
        assert first and first == second, pattern
    one, two = (json.loads((demo[s] / "store.json").read_text()) for s in ("s1", "s2"))
    assert one["splits"] == two["splits"] and one["backgrounds"] == two["backgrounds"]


def _background_video(path: Path, seconds: float = 1.5, fps: float = 10.0) -> None:
    """A moving colour gradient, written with PyAV (H.264 in mp4)."""
    from recseg.data.footage.video import Mp4Writer

    h, w = 60, 100
    ys, xs = np.mgrid[0:h, 0:w]
    with Mp4Writer(path, fps, (h, w), rgb=True) as writer:
        for k in range(round(seconds * fps)):
            frame = np.stack([(xs * 2 + 9 * k) % 256, (ys * 3) % 256, 255 - (xs + 5 * k) % 256])
            writer.write(np.ascontiguousarray(frame.transpose(1, 2, 0)).astype(np.uint8))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three greenscreen videos; backgrounds: three images and one video."""
    root = tmp_path_factory.mktemp("mixed")
    (root / "videos").mkdir()
    for i in range(3):
        write_video(root / "videos" / f"v{i}.mp4", seed=i)
    write_backgrounds(root / "bgs", count=3)
    _background_video(root / "bgs" / "street.mp4")
    return root


def _seed_where(folder: Path, train: bool) -> int:
    """A seed that puts the background video into train (or alone into val/test)."""
    for seed in range(50):
        split = split_backgrounds(folder, seed)
        if ("street.mp4" in split["train"]) == train and (train or split["val"] == ["street.mp4"]):
            return seed
    raise AssertionError("no such seed")


def test_a_train_background_video_is_stored_and_composited(mixed: Path) -> None:
    seed = _seed_where(mixed / "bgs", train=True)
    out = mixed / "train-video"
    result = recseg("preprocess", "--videos", str(mixed / "videos"), "--backgrounds",
                    str(mixed / "bgs"), "--out", str(out), *SIZE, "--fps", "10",
                    "--seed", str(seed), cwd=mixed)  # fmt: skip
    assert result.returncode == 0, result.stderr
    store = ClipStore(out)
    (video,) = store.backgrounds("videos")
    assert video.name == "street.npz" and len(store.backgrounds("images")) == 2
    frames = FrameFile(video)
    assert len(frames) == 15 and frames.meta == {"source": "street.mp4", "fps": 10.0}
    first, last = frames.frames([0, 14])
    assert first.shape == (77, 128, 3)  # 60x100 fitted to 72x128: the height has room to pan
    assert np.abs(first.astype(int) - last).mean() > 5  # it moves
    loader = make_loader(out, "train", batch_size=1, seq_len=5, seed=0)
    sampler = loader.sampler
    drawn = [sampler.params(e, c) for e in range(80) for c in range(len(sampler.lengths))]
    videos = [p for p in drawn if p.source == "video"]
    assert videos and all(p.index == 0 for p in videos)
    params = videos[0]
    clip = store.open(store.clips("train")[params.key[2]])
    window, _ = loader.dataset.compositor.window(params, clip, 0, 5)
    assert window.shape == (5, 72, 128, 3) and not np.array_equal(window[0], window[4])


def test_val_and_test_clips_composite_onto_a_background_video(mixed: Path) -> None:
    seed = _seed_where(mixed / "bgs", train=False)
    out = mixed / "heldout-video"
    args = ("preprocess", "--videos", str(mixed / "videos"), "--backgrounds", str(mixed / "bgs"),
            "--out", str(out), *SIZE, "--fps", "10", "--seed", str(seed))  # fmt: skip
    assert recseg(*args, cwd=mixed).returncode == 0
    store = ClipStore(out)
    assert store.backgrounds("videos") == [] and len(store.backgrounds("images")) == 3
    for split in ("val", "test"):
        for rec in store.clips(split):
            assert rec.background == "street.mp4"
            clip = store.open(rec)
            assert "background_offset" in clip.meta
            frames, alpha = clip.frames(), clip.layers()[1]
            still = (alpha[0] == 0) & (alpha[-1] == 0)
            assert np.abs(frames[0][still].astype(int) - frames[-1][still]).mean() > 5  # moving
    before = digests(out, "clips/*/*.npz")
    again = mixed / "heldout-again"
    assert recseg(*args[:6], str(again), *args[7:], cwd=mixed).returncode == 0
    assert digests(again, "clips/*/*.npz") == before


@pytest.mark.parametrize("junk", ["text", "brokenvideo"])
def test_a_backgrounds_folder_without_usable_backgrounds_is_refused(
    mixed: Path, tmp_path: Path, junk: str
) -> None:
    bgs = tmp_path / "bgs"
    bgs.mkdir()
    if junk == "text":
        (bgs / "notes.txt").write_text("not an image\n")
        (bgs / "data.bin").write_bytes(b"\x00" * 64)
    else:
        write_backgrounds(bgs, count=2)
        (bgs / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    out = tmp_path / "store"
    result = recseg("preprocess", "--videos", str(mixed / "videos"), "--backgrounds", str(bgs),
                    "--out", str(out), *SIZE, cwd=tmp_path)  # fmt: skip
    if junk == "text":
        one_error_line(result, "--backgrounds", str(bgs), "no images", "or videos")
    else:
        one_error_line(result, "--backgrounds", "broken.mp4", "not a readable video")
    assert not out.exists()


def test_a_test_only_folder_makes_a_held_out_store(mixed: Path) -> None:
    """Videos only under test/ (held-out footage): every clip is a test clip, every background
    a test background, nothing is copied into the store for training."""
    held = mixed / "held"
    (held / "test").mkdir(parents=True)
    for video in sorted((mixed / "videos").glob("*.mp4"))[:2]:
        (held / "test" / video.name).symlink_to(video)
    out = mixed / "held-store"
    result = recseg("preprocess", "--videos", str(held), "--backgrounds", str(mixed / "bgs"),
                    "--out", str(out), *SIZE, "--fps", "10", cwd=mixed)  # fmt: skip
    assert result.returncode == 0, result.stderr
    store = ClipStore(out)
    assert not store.clips("train") and not store.clips("val") and len(store.clips("test")) >= 2
    assert not store.backgrounds("images") and not store.backgrounds("videos")
    plan = json.loads((out / "plan.json").read_text())
    assert plan["backgrounds"]["test"] == sorted(p.name for p in (mixed / "bgs").iterdir())
    assert {r.background for r in store.clips("test")} <= set(plan["backgrounds"]["test"])
