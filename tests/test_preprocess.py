"""The acceptance path: ``recseg footage`` -> ``recseg preprocess`` -> a clip store, with the
key scored against the true masks and everything logged to a real MLflow server."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from recseg.data.store import SPLITS, ClipStore
from recseg.data.video import decode, probe, resampled
from tests.media import run_recseg


def recseg(*args: str, cwd: Path, uri: str) -> subprocess.CompletedProcess:
    return run_recseg(*args, cwd=cwd, env={"MLFLOW_TRACKING_URI": uri})


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str) -> dict:
    """The issue's acceptance commands, run as a user runs them."""
    root = tmp_path_factory.mktemp("accept")
    f, s = root / "f", root / "s"
    footage = recseg("footage", str(f), "--videos", "6", "--seconds", "6", cwd=root, uri="")
    assert footage.returncode == 0, footage.stderr
    pre = recseg(
        "preprocess", "--videos", str(f / "videos"), "--backgrounds", str(f / "backgrounds"),
        "--out", str(s), cwd=root, uri=mlflow_server,
    )  # fmt: skip
    assert pre.returncode == 0, pre.stderr
    run_id = pre.stdout.split("run")[-1].split()[0]
    return {"root": root, "footage": f, "store": s, "stdout": pre.stdout, "run_id": run_id}


def test_store_has_three_nonempty_splits_by_video(made: dict) -> None:
    store = ClipStore(made["store"])
    videos = {split: {r.video for r in store.clips(split)} for split in SPLITS}
    assert all(videos[s] for s in SPLITS)
    assert not (videos["train"] & videos["val"] or videos["train"] & videos["test"])
    assert not videos["val"] & videos["test"]
    for split in SPLITS:
        for rec in store.clips(split):
            assert rec.frames == 60 and (rec.height, rec.width) == (270, 512)
            assert 0.01 < rec.fg_ratio < 0.6


def test_backgrounds_differ_between_train_and_heldout(made: dict) -> None:
    store = ClipStore(made["store"])
    train = {r.background for r in store.clips("train")}
    held = {r.background for r in store.clips("val") + store.clips("test")}
    assert train and held and not train & held
    plan = store.root / "plan.json"
    import json

    split = json.loads(plan.read_text())["backgrounds"]
    assert not set(split["train"]) & (set(split["val"]) | set(split["test"]))


def test_key_reaches_iou_097_against_truth_and_it_is_logged(made: dict, mlflow_server: str):
    from mlflow import MlflowClient

    store = ClipStore(made["store"])
    iou = store.manifest["key"]["fg_iou"]
    assert iou >= 0.97, iou
    run = MlflowClient(mlflow_server).get_run(made["run_id"])
    assert run.data.metrics["key_fg_iou"] == pytest.approx(iou)
    assert f"key IoU    {iou:.4f}" in made["stdout"]
    for rec in store.clips("train"):
        assert rec.key_iou is not None and rec.key_iou > 0.9


def test_labels_are_lossless_and_frames_are_resampled_in_time(made: dict) -> None:
    """Clip frames are 15 fps samples of the 30 fps source (every second frame), and each
    label equals the key of the stored source frame (no JPEG on labels: only 0 and 1)."""
    store = ClipStore(made["store"])
    rec = store.clips("test")[0]
    clip = store.open(rec)
    labels = clip.labels()
    assert set(np.unique(labels)) <= {0, 1}
    import json

    meta = clip.meta
    assert meta["source_frames"][:4] == [0, 2, 4, 6]
    plan = json.loads((store.root / "plan.json").read_text())
    video = plan["videos"][rec.video]
    info = probe(video["path"])
    out = [i for _, i, _ in resampled(decode(video["path"]), 15.0, info.fps)]
    assert out[: rec.frames] == meta["source_frames"]
    truth = np.load(made["footage"] / "truth" / f"{rec.video}.npz")["masks"]
    first = cv2.resize(truth[0].astype(np.uint8), (512, 270), interpolation=cv2.INTER_NEAREST)
    assert (first[5:-5] == labels[0][5:-5]).mean() > 0.97


def test_preprocess_accepts_train_val_test_subfolders(made: dict, mlflow_server: str) -> None:
    root = made["root"] / "split-by-folder"
    videos = sorted((made["footage"] / "videos").glob("*.mp4"))
    for split, chosen in (("train", videos[:3]), ("val", videos[3:4]), ("test", videos[4:])):
        (root / "videos" / split).mkdir(parents=True)
        for path in chosen:
            shutil.copy(path, root / "videos" / split / path.name)
    result = recseg(
        "preprocess", "--videos", str(root / "videos"), "--backgrounds",
        str(made["footage"] / "backgrounds"), "--out", str(root / "store"), "--truth", "none",
        "--clip-seconds", "2", "--fps", "5", "--size", "90x160", cwd=root, uri=mlflow_server,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    store = ClipStore(root / "store")
    assert {r.video for r in store.clips("val")} == {f"val-{videos[3].stem}"}
    assert len({r.video for r in store.clips("test")}) == 2
    assert all(len(store.clips(s)) == 3 * len({r.video for r in store.clips(s)}) for s in SPLITS)
    assert store.manifest["key"]["fg_iou"] is None


def test_loader_streams_the_preprocessed_store(made: dict) -> None:
    from recseg.data.loader import make_loader

    loader = make_loader(made["store"], "train", batch_size=2, seq_len=4, seed=3)
    batches = list(loader)
    assert len(batches) >= 15  # 4 clips x 15 windows over 2 lanes, minus the greedy tail
    first = batches[0]
    assert first["frames"].shape == (2, 4, 3, 270, 512) and first["reset"].all()
    assert first["labels"].shape == (2, 4, 270, 512)
    assert not any(b["reset"].any() for b in batches[1:15])
    evaluation = make_loader(made["store"], "val", batch_size=1, seq_len=8, train=False)
    frames = sum(int(b["valid"].sum()) for b in evaluation)
    assert frames == sum(r.frames for r in ClipStore(made["store"]).clips("val"))


def test_hard_footage_with_true_labels(tmp_path: Path, mlflow_server: str) -> None:
    """--labels truth stores the true masks (people hidden by --hard events stay labelled),
    while the key's quality against them is still measured and logged."""
    from recseg.data.footage import FootageConfig, make_footage

    make_footage(FootageConfig(videos=3, seconds=3.0, fps=10.0, size="96x160", hard=True), tmp_path)
    result = recseg(
        "preprocess", "--videos", str(tmp_path / "videos"), "--backgrounds",
        str(tmp_path / "backgrounds"), "--out", str(tmp_path / "s"), "--labels", "truth",
        "--clip-seconds", "1", "--fps", "10", "--size", "96x160", cwd=tmp_path, uri=mlflow_server,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    store = ClipStore(tmp_path / "s")
    assert store.settings["labels"] == "truth"
    for split in SPLITS:
        for rec in store.clips(split):
            clip = store.open(rec)
            masks = np.load(tmp_path / "truth" / f"{rec.video}.npz")["masks"]
            want = masks[clip.meta["source_frames"]]
            assert np.array_equal(clip.labels().astype(bool), want)
    assert store.manifest["key"]["fg_iou"] < 0.97  # the key cannot see hidden people


def test_labels_truth_needs_true_masks(tmp_path: Path, made: dict) -> None:
    result = recseg(
        "preprocess", "--videos", str(made["footage"] / "videos"), "--backgrounds",
        str(made["footage"] / "backgrounds"), "--out", str(tmp_path / "s"), "--labels", "truth",
        "--truth", "none", cwd=tmp_path, uri="",
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        result.stderr.strip() == "recseg: error: --labels truth: no truth folder (give --truth DIR)"
    )
    assert not (tmp_path / "s").exists()
