"""Store version 2 (clip layers, stored backgrounds) and on-the-fly compositing in the training
loader, on real stores written through the store API (tests/stores.py)."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from recseg.data import composite
from recseg.data.augment import AugmentParams
from recseg.data.clipfile import ClipFile, FrameFile, encode_frames
from recseg.data.composite import Colour, CompositeParams
from recseg.data.layers import Compositor, _warp
from recseg.data.loader import make_loader
from recseg.data.store import MANIFEST, ClipStore, atomic_write_bytes, write_clip
from recseg.errors import InputError
from tests.stores import make_store, moving_layers

B, T = 2, 3


@pytest.fixture(scope="module")
def v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("v2"), train=(9, 9, 6, 9, 6), val=(7, 5))


@pytest.fixture(scope="module")
def v1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("v1"), train=(9, 9, 6, 9, 6), val=(7, 5), version=1)


def _same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x["clip"] == y["clip"]
        for k in ("frames", "labels", "reset", "valid", "index", "start"):
            assert torch.equal(x[k], y[k]), k


# ----- store version 2 ----------------------------------------------------------------------


def test_layers_round_trip(tmp_path: Path) -> None:
    frames, labels, fg, alpha = moving_layers(6, (40, 64), seed=3)
    rng = np.random.default_rng(0)
    fg = np.stack([cv2.resize(rng.integers(0, 256, (5, 8, 3), np.uint8), (64, 40)) for _ in fg])
    write_clip(tmp_path / "c.npz", frames, labels, {"id": "c"}, layers=(fg, alpha))
    clip = ClipFile(tmp_path / "c.npz")
    assert clip.has_layers and len(clip) == 6
    got_fg, got_alpha = clip.layers(2, 5)
    assert got_alpha.dtype == np.uint8 and np.array_equal(got_alpha, alpha[2:5])  # lossless
    assert got_fg.shape == (3, 40, 64, 3) and got_fg.dtype == np.uint8
    err = np.abs(got_fg.astype(int) - fg[2:5])
    assert err.mean() < 3 and err.max() < 40, (err.mean(), err.max())  # JPEG q95, 4:2:0
    assert np.array_equal(clip.labels(), labels)
    assert np.abs(clip.frames().astype(int) - frames).mean() < 4

    write_clip(tmp_path / "old.npz", frames, labels, {"id": "old"})
    old = ClipFile(tmp_path / "old.npz")
    assert not old.has_layers and np.array_equal(old.labels(), labels)
    with pytest.raises(InputError, match="has no foreground layers"):
        old.layers()


def test_background_video_file_round_trip(tmp_path: Path) -> None:
    frames = np.stack([np.full((20, 30, 3), 10 * k, np.uint8) for k in range(5)])
    atomic_write_bytes(tmp_path / "v.npz", encode_frames(frames, {"fps": 10.0}))
    video = FrameFile(tmp_path / "v.npz")
    assert len(video) == 5 and video.meta == {"fps": 10.0}
    got = video.frames([4, 0, 4])
    assert np.abs(got.astype(int) - frames[[4, 0, 4]]).max() <= 2


def test_damaged_layers_are_one_line(tmp_path: Path) -> None:
    frames, labels, fg, alpha = moving_layers(4, (24, 32), seed=1)
    path = tmp_path / "c.npz"
    write_clip(path, frames, labels, {"id": "c"}, layers=(fg, alpha))
    data = dict(np.load(path))
    data["alpha"] = data["alpha"][: len(data["alpha"]) // 2]
    np.savez(path, **data)
    with pytest.raises(InputError, match=r"c\.npz: damaged or not a recseg clip file") as info:
        ClipFile(path).layers()
    assert "\n" not in str(info.value)


def test_store_versions(tmp_path: Path, v1: Path, v2: Path) -> None:
    assert ClipStore(v1).version == 1 and ClipStore(v1).backgrounds("images") == []
    store = ClipStore(v2)
    assert store.version == 2 and len(store.backgrounds("images")) == 3
    assert all(p.is_file() for p in store.backgrounds("images"))
    assert store.backgrounds("videos") == [] and all(r.layers for r in store.clips("train"))
    manifest = json.loads((v2 / MANIFEST).read_text())
    for version, message in (
        (3, "made by a newer recseg (store version 3); this recseg reads versions 1-2"),
        (0, "unknown store version 0; this recseg reads versions 1-2"),
    ):
        root = tmp_path / f"v{version}"
        root.mkdir()
        (root / MANIFEST).write_text(json.dumps({**manifest, "version": version}))
        with pytest.raises(InputError) as info:
            ClipStore(root)
        assert str(info.value) == f"{root / MANIFEST}: {message}"


# ----- the loader -----------------------------------------------------------------------------


def test_an_older_store_still_trains_on_augmented_fixed_composites(v1: Path) -> None:
    loader = make_loader(v1, "train", batch_size=B, seq_len=T, seed=1)
    assert not loader.composites_on_the_fly and not loader.state_dict()["composite"]
    assert isinstance(loader.sampler.params(0, 0), AugmentParams)
    batches = list(loader)
    assert batches and all(b["frames"].shape == (B, T, 3, 32, 48) for b in batches)
    assert any(b["labels"].sum() > 0 for b in batches)


def test_training_composites_on_the_fly_and_evaluation_reads_the_fixed_composite(
    v2: Path,
) -> None:
    loader = make_loader(v2, "train", batch_size=B, seq_len=T, seed=1)
    assert loader.composites_on_the_fly and loader.state_dict()["composite"]
    assert isinstance(loader.sampler.params(0, 0), CompositeParams)
    for kw in ({"train": False}, {"train": True, "augment": False}):
        fixed = make_loader(v2, "val" if not kw["train"] else "train", batch_size=B, seq_len=T,
                            **kw)  # fmt: skip
        assert not fixed.composites_on_the_fly
        store = ClipStore(v2)
        clips = [store.open(r) for r in store.clips(fixed.split)]
        for batch in fixed:
            for b in range(B):
                clip, start, n = int(batch["index"][b]), int(batch["start"][b]), 0
                n = int(batch["valid"][b].sum())
                if clip < 0:
                    continue
                want = torch.from_numpy(clips[clip].frames(start, start + n)).permute(0, 3, 1, 2)
                assert torch.equal(batch["frames"][b, :n], want.float() / 255)  # byte-identical
                want_labels = torch.from_numpy(clips[clip].labels(start, start + n)).long()
                assert torch.equal(batch["labels"][b, :n], want_labels)


def test_a_clip_gets_a_fresh_composite_every_epoch(v2: Path) -> None:
    loader = make_loader(v2, "train", batch_size=B, seq_len=T, seed=2)
    first: dict[int, list[torch.Tensor]] = {}
    for _ in range(3):  # epochs
        for batch in loader:
            for b in range(B):
                if batch["reset"][b]:
                    first.setdefault(int(batch["index"][b]), []).append(batch["frames"][b, 0])
    compared = [views for views in first.values() if len(views) >= 2]
    assert compared
    for views in compared:
        assert not torch.equal(views[0], views[1])


def test_batches_depend_only_on_seed_epoch_and_step(v2: Path) -> None:
    before = random.getstate(), np.random.get_state(), torch.get_rng_state()
    kw = {"batch_size": B, "seq_len": T, "seed": 5}
    serial = make_loader(v2, "train", **kw)
    parallel = make_loader(v2, "train", num_workers=2, **kw)
    for _ in range(2):  # two epochs
        _same(list(serial), list(parallel))
    again = make_loader(v2, "train", **kw)
    again.set_epoch(1)
    serial.set_epoch(1)
    _same(list(again), list(serial))  # read twice: identical (noise, clutter, screens)
    after = random.getstate(), np.random.get_state(), torch.get_rng_state()
    assert before[0] == after[0] and torch.equal(before[2], after[2])
    assert all(np.array_equal(x, y) for x, y in zip(before[1], after[1], strict=True))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_gives_the_same_batches(v2: Path, workers: int) -> None:
    kw = {"batch_size": B, "seq_len": T, "seed": 9, "num_workers": workers}
    reference = make_loader(v2, "train", **kw)
    whole = list(reference) + list(reference)
    first = make_loader(v2, "train", **kw)
    got = []
    for batch in first:
        got.append(batch)
        if len(got) == 2:
            break
    state = first.state_dict()
    resumed = make_loader(v2, "train", **{**kw, "seed": 0})
    resumed.load_state_dict(state)
    got += list(resumed) + list(resumed)
    _same(got, whole)


def test_resume_refuses_a_loader_that_composites_otherwise(v1: Path, v2: Path) -> None:
    state = make_loader(v2, "train", batch_size=B, seq_len=T).state_dict()
    with pytest.raises(InputError, match="composite"):
        make_loader(v1, "train", batch_size=B, seq_len=T).load_state_dict(state)


# ----- what is drawn, and how it is rendered ----------------------------------------------------


def test_empty_clips_and_screens_come_at_their_rates() -> None:
    n = 6000
    rng = np.random.default_rng(0)
    drawn = [composite.draw(rng, (32, 48), 5, 0, (0, 0, k)) for k in range(n)]

    def near(share: float, p: float) -> bool:
        return abs(share - p) < 4 * (p * (1 - p) / n) ** 0.5

    assert near(sum(p.empty for p in drawn) / n, composite.EMPTY_P)
    assert near(sum(p.source == "screen" for p in drawn) / n, composite.SCREEN_P)
    assert near(sum(bool(p.clutter) for p in drawn) / n, composite.CLUTTER_P)
    assert near(sum(p.permute != (0, 1, 2) for p in drawn) / n, composite.FG_PERMUTE_P)
    assert not any(p.source == "video" for p in drawn)
    with_videos = [composite.draw(rng, (32, 48), 5, 2, (0, 0, k)) for k in range(n)]
    share = sum(p.source == "video" for p in with_videos) / n
    assert near(share, (1 - composite.SCREEN_P) * composite.VIDEO_P)
    screens = [p for p in drawn if p.source == "screen"]
    greens = sum(p.screen[1] > max(p.screen[0], p.screen[2]) for p in screens)
    blues = sum(p.screen[2] > max(p.screen[0], p.screen[1]) for p in screens)
    assert greens + blues == len(screens) and min(greens, blues) > len(screens) / 4


def test_the_loader_draws_empty_clips_and_screens_too(v2: Path) -> None:
    sampler = make_loader(v2, "train", batch_size=B, seq_len=T).sampler
    drawn = [sampler.params(e, c) for e in range(400) for c in range(len(sampler.lengths))]
    assert all(isinstance(p, CompositeParams) for p in drawn)
    n = len(drawn)
    empty, screens = sum(p.empty for p in drawn) / n, sum(p.source == "screen" for p in drawn) / n
    for share, p in ((empty, composite.EMPTY_P), (screens, composite.SCREEN_P)):
        assert abs(share - p) < 4 * (p * (1 - p) / n) ** 0.5


def _plain(params: CompositeParams) -> CompositeParams:
    """``params`` without any colour change, blur or noise, with a person."""
    return dataclasses.replace(
        params, foreground_colour=Colour(), permute=(0, 1, 2), colour=Colour(), blur=0,
        noise=0.0, empty=False,
    )  # fmt: skip


def test_labels_move_with_the_person(v2: Path) -> None:
    store = ClipStore(v2)
    clip = store.open(store.clips("train")[0])
    comp = Compositor(store.backgrounds("images"), [], store.size)
    rng = np.random.default_rng(1)
    moved = 0
    for k in range(30):
        params = _plain(composite.draw(rng, store.size, 3, 0, (0, 0, k)))
        frames, labels = comp.window(params, clip, 3, 6)
        fg, alpha = clip.layers(3, 6)
        _, warped, want = _warp(params, fg, alpha, clip.labels(3, 6))
        assert np.array_equal(labels, want)
        inside, strong = labels == 1, warped >= 128
        assert (inside & strong).sum() / max(1, (inside | strong).sum()) > 0.9  # the same place
        person = np.asarray(fg[0, 0, 0], int)  # the ellipse's colour
        solid = warped == 255
        assert np.abs(frames[solid].astype(int) - person).max() <= 1
        bg = comp.background(params, range(3, 6), len(clip))
        assert np.array_equal(frames[warped == 0], bg[warped == 0])
        moved += not np.array_equal(labels, clip.labels(3, 6))
    assert moved >= 25


def test_an_empty_clip_has_no_person_and_screens_are_green_or_blue(v2: Path) -> None:
    store = ClipStore(v2)
    clip = store.open(store.clips("train")[1])
    comp = Compositor(store.backgrounds("images"), [], store.size)
    rng = np.random.default_rng(2)
    params = _plain(composite.draw(rng, store.size, 3, 0, (0, 0, 0)))
    frames, labels = comp.window(dataclasses.replace(params, empty=True), clip, 0, 3)
    assert not labels.any()
    assert np.array_equal(frames, comp.background(params, range(3), len(clip)))
    while params.source != "screen":
        params = _plain(composite.draw(rng, store.size, 3, 0, (0, 0, 1)))
    params = dataclasses.replace(params, clutter=(), paste=None, background_colour=Colour())
    frames, _ = comp.window(dataclasses.replace(params, empty=True), clip, 0, 3)
    r, g, b = frames.reshape(-1, 3).astype(float).mean(0)
    assert max(g, b) > 1.5 * r
    assert not np.array_equal(frames[0], frames[1])  # sensor noise: per frame
