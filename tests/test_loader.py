"""Tests for the temporal loader (recseg.data.loader) and per-clip augmentation, on real stores.

Frames carry their identity losslessly in the labels: row 0 holds the clip number in bits 0-7
and the frame number in bits 8-15 (tests that read ids turn augmentation off). The image is a
flat grey that also encodes the frame number, which JPEG keeps to within a grey level or two.
"""

from __future__ import annotations

import collections
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from recseg.data import augment as aug
from recseg.data.loader import IGNORE, LaneSampler, TemporalLoader, clip_windows, make_loader
from recseg.data.store import ClipFile, ClipRecord, ClipStore, write_clip, write_manifest
from recseg.errors import InputError
from tests.stores import make_store

H, W = 24, 32
TRAIN_LENGTHS = [7, 12, 5, 9, 2, 16, 10, 8, 6]  # clip 4 is shorter than T=3: never trained on
VAL_LENGTHS = [5, 7, 2, 4]
T, B = 3, 3


def _grey(frame: int) -> int:
    return 20 + 3 * frame


def _id_clip(clip: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    frames = np.zeros((n, H, W, 3), np.uint8)
    labels = np.zeros((n, H, W), np.uint8)
    for f in range(n):
        frames[f] = _grey(f)
        labels[f, 0, :16] = [(clip >> k) & 1 for k in range(8)] + [(f >> k) & 1 for k in range(8)]
    return frames, labels


def _record(split: str, i: int, n: int) -> ClipRecord:
    return ClipRecord(
        id=f"{split}{i}",
        split=split,
        video=f"video{i}",
        index=i,
        frames=n,
        height=H,
        width=W,
        fps=15.0,
        background="none",
        fg_ratio=0.1,
        path=f"clips/{split}/{split}{i}.npz",
    )


def _make_store(root: Path, splits: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> Path:
    records = []
    for split, clips in splits.items():
        for i, (frames, labels) in enumerate(clips):
            rec = _record(split, i, len(frames))
            write_clip(root / rec.path, frames, labels, {"id": rec.id})
            records.append(rec)
    write_manifest(root, {"size": [H, W], "fps": 15}, records)
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_store(
        tmp_path_factory.mktemp("store"),
        {
            "train": [_id_clip(i, n) for i, n in enumerate(TRAIN_LENGTHS)],
            "val": [_id_clip(i, n) for i, n in enumerate(VAL_LENGTHS)],
        },
    )


def _ids(batch: dict) -> np.ndarray:
    """(B, T, 2) array of (clip, frame) read from the label bits."""
    bits = batch["labels"][:, :, 0, :16].numpy().astype(np.int64)
    weights = 1 << np.arange(8)
    return np.stack([bits[..., :8] @ weights, bits[..., 8:] @ weights], axis=-1)


def _check_streams(batches: list[dict], train: bool) -> dict[int, list[int]]:
    """Assert the lane invariants; return each clip's frames in the order they were seen."""
    seen: dict[int, list[int]] = collections.defaultdict(list)
    current: list[tuple[int, int] | None] = [None] * B  # per lane: (clip, next frame)
    for batch in batches:
        ids, valid = _ids(batch), batch["valid"].numpy()
        for b in range(B):
            index, start, reset = int(batch["index"][b]), int(batch["start"][b]), batch["reset"][b]
            if index < 0:  # an idle lane (evaluation only)
                assert not train and reset and not valid[b].any() and batch["clip"][b] == ""
                assert (batch["labels"][b] == IGNORE).all() and (batch["frames"][b] == 0).all()
                current[b] = None
                continue
            assert bool(reset) == (start == 0)
            if not reset:  # the lane goes on with the same clip, right where it stopped
                assert current[b] == (index, start)
            assert batch["clip"][b] == f"{'train' if train else 'val'}{index}"
            n = int(valid[b].sum())
            assert valid[b, :n].all() and not valid[b, n:].any()
            assert n == T or not train
            assert (ids[b, :n, 0] == index).all()
            assert (ids[b, :n, 1] == np.arange(start, start + n)).all()
            grey = batch["frames"][b, :n].mean(dim=(1, 2, 3)).numpy() * 255
            assert np.abs(grey - [_grey(f) for f in range(start, start + n)]).max() < 2.5
            assert (batch["labels"][b, n:] == IGNORE).all() and (batch["frames"][b, n:] == 0).all()
            seen[index].extend(range(start, start + n))
            current[b] = (index, start + n)
    return seen


def test_clip_windows() -> None:
    assert clip_windows(7, 3, train=True) == [(0, 3), (3, 3)]
    assert clip_windows(2, 3, train=True) == []
    assert clip_windows(7, 3, train=False) == [(0, 3), (3, 3), (6, 1)]
    assert clip_windows(6, 3, train=False) == [(0, 3), (3, 3)]


def test_training_lanes_stream_whole_windows_of_one_clip(store: Path) -> None:
    loader = make_loader(store, "train", batch_size=B, seq_len=T, augment=False)
    batches = list(loader)
    assert len(batches) == len(loader.sampler.plans(0)) > 0
    first = batches[0]
    assert first["frames"].dtype == torch.float32 and first["frames"].shape == (B, T, 3, H, W)
    assert first["labels"].dtype == torch.int64 and first["labels"].shape == (B, T, H, W)
    assert first["reset"].dtype == torch.bool and first["reset"].all()
    assert first["valid"].dtype == torch.bool and first["start"].dtype == torch.int64
    seen = _check_streams(batches, train=True)
    for clip, frames in seen.items():  # each clip at most once, from frame 0, whole windows
        assert frames == list(range(len(frames))) and len(frames) % T == 0
        assert len(frames) <= TRAIN_LENGTHS[clip] // T * T
    assert 4 not in seen
    resets = collections.Counter(int(i) for b in batches for i in b["index"][b["reset"]])
    assert set(resets.values()) == {1}
    usable = sum(n // T for n in TRAIN_LENGTHS)
    assert sum(len(f) for f in seen.values()) // T >= usable - (B - 1) * max(TRAIN_LENGTHS) // T


def test_evaluation_covers_every_frame_once(store: Path) -> None:
    loader = make_loader(store, "val", batch_size=B, seq_len=T, train=False)
    assert not loader.sampler.augment
    batches = list(loader)
    seen = _check_streams(batches, train=False)
    assert {c: sorted(f) for c, f in seen.items()} == {
        c: list(range(n)) for c, n in enumerate(VAL_LENGTHS)
    }
    assert any((b["index"] < 0).any() for b in batches)  # lanes run dry before the last step


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x["clip"] == y["clip"]
        for k in ("frames", "labels", "reset", "valid", "index", "start"):
            assert torch.equal(x[k], y[k]), k


def test_same_seed_same_batches_other_seed_other_order(store: Path) -> None:
    a, b, c = (
        list(make_loader(store, "train", batch_size=B, seq_len=T, seed=s)) for s in (0, 0, 1)
    )
    _assert_same(a, b)
    assert [x["clip"] for x in a] != [x["clip"] for x in c]


def test_epochs_reshuffle_and_redraw_augmentation(store: Path) -> None:
    loader = make_loader(store, "train", batch_size=B, seq_len=T)
    assert loader.sampler.order(0) != loader.sampler.order(1)
    assert loader.sampler.params(0, 0) != loader.sampler.params(1, 0)
    assert loader.epoch == 0
    for _ in loader:
        pass
    assert (loader.epoch, loader.step) == (1, 0)
    loader.set_epoch(5)
    assert loader.state_dict()["epoch"] == 5


def test_two_workers_give_the_same_batches_and_leave_global_rngs_alone(store: Path) -> None:
    before = random.getstate(), np.random.get_state(), torch.get_rng_state()
    serial = list(make_loader(store, "train", batch_size=B, seq_len=T, seed=3))
    parallel = list(make_loader(store, "train", batch_size=B, seq_len=T, seed=3, num_workers=2))
    _assert_same(serial, parallel)
    evaluated = make_loader(store, "val", batch_size=B, seq_len=T, train=False, num_workers=2)
    _assert_same(
        list(evaluated), list(make_loader(store, "val", batch_size=B, seq_len=T, train=False))
    )
    after = random.getstate(), np.random.get_state(), torch.get_rng_state()
    assert before[0] == after[0]
    assert all(np.array_equal(x, y) for x, y in zip(before[1], after[1], strict=True))
    assert torch.equal(before[2], after[2])


def _take(loader: TemporalLoader, n: int) -> list[dict]:
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_with_the_next_batch(store: Path, workers: int) -> None:
    kw = {"batch_size": B, "seq_len": T, "seed": 7, "num_workers": workers}
    reference = make_loader(store, "train", **kw)
    epoch0, epoch1 = list(reference), list(reference)
    n0 = len(epoch0)

    first = make_loader(store, "train", **kw)
    got = _take(first, 2)
    state = first.state_dict()
    assert (state["epoch"], state["step"], state["seed"]) == (0, 2, 7)
    resumed = make_loader(store, "train", **{**kw, "seed": 0})
    resumed.load_state_dict(state)
    got += list(resumed)
    got += list(resumed)
    _assert_same(got, epoch0 + epoch1)

    at_end = make_loader(store, "train", **kw)
    _take(at_end, n0)  # saved after the epoch's last batch, before the loop ended
    assert at_end.state_dict()["step"] == n0
    resumed = make_loader(store, "train", **kw)
    resumed.load_state_dict(at_end.state_dict())
    assert list(resumed) == [] and resumed.epoch == 1
    _assert_same(list(resumed), epoch1)


def test_resume_checks_settings(store: Path) -> None:
    state = make_loader(store, "train", batch_size=B, seq_len=T).state_dict()
    other = make_loader(store, "train", batch_size=B, seq_len=T + 1)
    with pytest.raises(InputError, match="seq_len"):
        other.load_state_dict(state)
    with pytest.raises(InputError, match="step"):
        make_loader(store, "train", batch_size=B, seq_len=T).load_state_dict({**state, "step": 999})


def test_arguments_are_checked(store: Path) -> None:
    with pytest.raises(InputError, match="--batch-size"):
        make_loader(store, "train", batch_size=0, seq_len=T)
    with pytest.raises(InputError, match="--seq-len"):
        make_loader(store, "train", batch_size=B, seq_len=0)
    with pytest.raises(InputError, match="--num-workers"):
        make_loader(store, "train", batch_size=B, seq_len=T, num_workers=-1)
    with pytest.raises(InputError, match="split 'test' has no clips"):
        make_loader(store, "test", batch_size=B, seq_len=T)
    with pytest.raises(InputError, match="fewer than --batch-size"):
        make_loader(store, "train", batch_size=len(TRAIN_LENGTHS), seq_len=T)
    with pytest.raises(InputError, match="no such store"):
        make_loader(store / "missing", "train", batch_size=B, seq_len=T)


def test_greedy_lanes_drop_little() -> None:
    lengths = [30, 3, 3, 3, 3, 3, 3, 3, 3, 3, 30]
    sampler = LaneSampler(lengths, 2, 3, seed=0, augment=False, size=(H, W))
    plans = sampler.plans(0)
    used = sum(w.length for plan in plans for w in plan)
    assert all(w.clip >= 0 for plan in plans for w in plan)
    assert sum(lengths) - used <= 30


def test_pieces_cut_training_clips_but_not_evaluation() -> None:
    """--piece-frames: each clip plays as pieces, every piece starts with a reset and draws its
    own augmentation; the frames trained on are the same; evaluation keeps whole clips."""
    lengths = [12, 9, 8]
    whole = LaneSampler(lengths, 2, 2, seed=0, size=(H, W))
    cut = LaneSampler(lengths, 2, 2, seed=0, size=(H, W), piece=4)
    assert cut.units == [(0, 0, 4), (0, 4, 4), (0, 8, 4), (1, 0, 4), (1, 4, 4), (1, 8, 1),
                         (2, 0, 4), (2, 4, 4)]  # fmt: skip
    played = [w for plan in cut.plans(0) for w in plan if w.clip >= 0]
    for w in played:
        assert w.reset == (w.start % 4 == 0) and w.length == 2
    assert len({(w.clip, w.start) for w in played}) == len(played)
    assert len({w.augment for w in played if w.reset}) == len([w for w in played if w.reset])
    frames = {(w.clip, w.start + k) for w in played for k in range(w.length)}
    assert frames <= {(c, f) for c, n in enumerate(lengths) for f in range(n)}
    assert len(cut.plans(0)) * 2 >= len(whole.plans(0)) * 2 - 4  # a piece of 1 frame is dropped
    layered = LaneSampler(lengths, 2, 2, seed=0, size=(H, W), piece=4, layers=[True] * 3,
                          backgrounds=(3, 0))  # fmt: skip
    keys = [layered.params(0, u).key for u in range(len(layered.units))]
    assert len(set(keys)) == len(keys)  # each piece its own composite (and cached background)
    evaluation = LaneSampler(lengths, 2, 2, seed=0, size=(H, W), train=False, piece=4)
    assert evaluation.plans(0) == LaneSampler(
        lengths, 2, 2, seed=0, size=(H, W), train=False
    ).plans(0)


# ----- augmentation -------------------------------------------------------------------------


def _box_clip(n: int, top: int, left: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((n, H, W), np.uint8)
    labels[:, top : top + 8, left : left + 10] = 1
    frames = np.where(labels[..., None] == 1, 230, 30).astype(np.uint8).repeat(3, axis=-1)
    frames[..., 0] = np.where(labels == 1, 200, 60)  # some colour for the jitter to act on
    return frames, labels


def _mask_iou(frame: np.ndarray, label: np.ndarray) -> float:
    grey = frame.mean(axis=-1)
    bright = grey > (grey.max() + grey.min()) / 2
    fg = label == 1
    return (bright & fg).sum() / max(1, (bright | fg).sum())


def test_flip_mirrors_image_and_labels_exactly() -> None:
    frames, labels = _box_clip(2, 3, 4)
    flip = np.array([[-1.0, 0.0, W - 1.0], [0.0, 1.0, 0.0]])
    params = aug.AugmentParams(flip=True, matrix=tuple(flip.reshape(-1)))
    out_f, out_l = aug.apply(frames, labels, params)
    assert np.array_equal(out_l, labels[:, :, ::-1])
    assert np.abs(out_f.astype(int) - frames[:, :, ::-1]).max() <= 2  # HSV round trip
    assert aug.apply(frames, labels, None)[1] is labels


def test_sampled_geometry_moves_labels_with_the_image() -> None:
    frames, labels = _box_clip(1, 8, 2)  # columns 2-11: left of centre
    rng = np.random.default_rng(0)
    flips = set()
    for _ in range(40):
        params = aug.sample_params(rng, (H, W))
        flips.add(params.flip)
        out_f, out_l = aug.apply(frames, labels, params)
        assert set(np.unique(out_l)) <= {0, 1}
        assert _mask_iou(out_f[0], out_l[0]) > 0.8
        centre = np.argwhere(out_l[0])[:, 1].mean()
        assert centre > W / 2 if params.flip else centre < W / 2
    assert flips == {True, False}


def test_augmentation_is_the_same_for_every_frame_of_a_clip(tmp_path: Path) -> None:
    clips = [_box_clip(6, 2 + 3 * i, 3 + 4 * i) for i in range(4)]
    root = _make_store(tmp_path, {"train": clips})
    loader = make_loader(root, "train", batch_size=2, seq_len=2, seed=1)
    per_clip: dict[int, list[tuple[np.ndarray, np.ndarray]]] = collections.defaultdict(list)
    for epoch in range(2):
        for batch in loader:
            for b in range(2):
                for t in range(2):
                    pair = batch["frames"][b, t].numpy(), batch["labels"][b, t].numpy()
                    per_clip[(epoch, int(batch["index"][b]))].append(pair)
    changed = 0
    for (_, clip), pairs in per_clip.items():
        assert len(pairs) >= 2
        for frame, label in pairs[1:]:  # all windows of a clip: bit-identical
            assert np.array_equal(frame, pairs[0][0]) and np.array_equal(label, pairs[0][1])
        image = (pairs[0][0].transpose(1, 2, 0) * 255).round()
        assert _mask_iou(image, pairs[0][1]) > 0.8
        changed += not np.array_equal(pairs[0][1], clips[clip][1][0])
    assert changed > 0
    # a clip's parameters are redrawn each epoch
    assert loader.sampler.params(0, 0) != loader.sampler.params(1, 0)


def test_store_size_is_used(store: Path) -> None:
    assert ClipStore(store).size == (H, W)


# ----- resizing -----------------------------------------------------------------------------


def _check_resized(batches: list[dict], size: tuple[int, int]) -> None:
    h, w = size
    for batch in batches:
        frames, labels, valid = batch["frames"], batch["labels"], batch["valid"]
        assert frames.shape == (B, T, 3, h, w) and labels.shape == (B, T, h, w)
        assert frames.dtype == torch.float32 and labels.dtype == torch.int64
        assert set(labels[valid].unique().tolist()) <= {0, 1}
        assert (labels[~valid] == IGNORE).all() and (frames[~valid] == 0).all()
        assert frames.min() >= 0 and frames.max() <= 1


@pytest.mark.parametrize("size", [(12, 16), (40, 50), (18, 40)])
def test_batches_come_out_at_the_given_size(store: Path, size: tuple[int, int]) -> None:
    train = make_loader(store, "train", batch_size=B, seq_len=T, size=size)
    assert train.size == size and train.state_dict()["size"] == list(size)
    batches = list(train)
    assert len(batches) == len(train.sampler.plans(0))
    _check_resized(batches, size)
    val = make_loader(store, "val", batch_size=B, seq_len=T, train=False, size=list(size))
    batches = list(val)
    assert any(not b["valid"].all() for b in batches)  # padding is there, at the new size
    _check_resized(batches, size)


def test_resizing_workers_give_the_same_batches(store: Path) -> None:
    kw = {"batch_size": B, "seq_len": T, "seed": 4, "size": (12, 20)}
    serial = list(make_loader(store, "train", **kw))
    _assert_same(serial, list(make_loader(store, "train", num_workers=2, **kw)))
    _check_resized(serial, (12, 20))


def test_store_size_or_none_means_no_resizing(store: Path) -> None:
    kw = {"batch_size": B, "seq_len": T, "seed": 2}
    plain = make_loader(store, "train", **kw)
    assert plain.size == (H, W) and plain.state_dict()["size"] == [H, W]
    same = make_loader(store, "train", size=(H, W), **kw)
    _assert_same(list(plain), list(same))
    same.load_state_dict(plain.state_dict())


def test_resume_with_another_size_is_refused(store: Path) -> None:
    kw = {"batch_size": B, "seq_len": T}
    state = make_loader(store, "train", size=(12, 16), **kw).state_dict()
    for other in (None, (16, 12), (12, 17)):
        with pytest.raises(InputError, match=r"size=\[12, 16\]"):
            make_loader(store, "train", size=other, **kw).load_state_dict(state)
    resumed = make_loader(store, "train", size=(12, 16), **kw)
    resumed.load_state_dict({**state, "size": (12, 16)})  # a tuple is the same size
    resumed.load_state_dict({k: v for k, v in state.items() if k != "size"})  # older states


@pytest.mark.parametrize("size", [(0, 16), (12,), (12.0, 16), "12x16", (True, 16), 12])
def test_bad_size_is_refused(store: Path, size: object) -> None:
    with pytest.raises(InputError, match="size must be two positive integers"):
        make_loader(store, "train", batch_size=B, seq_len=T, size=size)


@pytest.mark.parametrize(
    ("size", "mode"), [((20, 30), cv2.INTER_AREA), ((48, 60), cv2.INTER_LINEAR)]
)
def test_resized_moving_object_matches_cv2(
    tmp_path: Path, size: tuple[int, int], mode: int
) -> None:
    root = make_store(tmp_path, train=(6, 6), val=(5, 4), size=(32, 48))
    store = ClipStore(root)
    clips = [ClipFile(store.path(r)) for r in store.clips("val")]
    loader = make_loader(root, "val", batch_size=2, seq_len=T, train=False, size=size)
    h, w = size
    checked = 0
    for batch in loader:
        for b in range(2):
            clip, start = int(batch["index"][b]), int(batch["start"][b])
            n = int(batch["valid"][b].sum())
            if clip < 0:
                continue
            frames = clips[clip].frames(start, start + n)
            labels = clips[clip].labels(start, start + n)
            for k in range(n):
                want_f = cv2.resize(frames[k], (w, h), interpolation=mode)
                want_l = cv2.resize(labels[k], (w, h), interpolation=cv2.INTER_NEAREST)
                got_f = (batch["frames"][b, k] * 255).round().byte().permute(1, 2, 0).numpy()
                assert np.array_equal(got_f, want_f)
                assert np.array_equal(batch["labels"][b, k].numpy(), want_l)
                assert 0 < want_l.sum() < want_l.size and _mask_iou(got_f, want_l) > 0.8
                checked += 1
    assert checked == 5 + 4
