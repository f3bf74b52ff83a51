"""``recseg preprocess`` SIGKILLed again and again - right after start, at the first clip, with a
clip's temp file on disk, part way, after the last video, after the manifest - and re-run each
time: the final store is byte-for-byte the store of an uninterrupted run, no temp file is left,
and a reader polling the folder all along only ever sees complete clips and a complete manifest.

``RECSEG_KILL_SEED=N`` replays one draw of kill points (the seed is printed and tallied)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from recseg.data.store import MANIFEST, ClipFile
from tests.media import write_backgrounds, write_video

VIDEOS = 6  # 3 s at 10 fps, 0.5 s clips: 36 clips of 5 frames
SPLITS = ("train", "val", "test")
SETTINGS = ("--size", "90x160", "--clip-seconds", "0.5", "--fps", "10")
Trigger = Callable[[Path], bool]


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Greenscreen videos with their true masks, and backgrounds."""
    root = tmp_path_factory.mktemp("footage")
    (root / "videos").mkdir()
    (root / "truth").mkdir()
    for i in range(VIDEOS):
        masks = write_video(root / "videos" / f"v{i}.mp4", 3.0, 10.0, (108, 192), seed=i)
        np.savez(root / "truth" / f"v{i}.npz", masks=masks)
    write_backgrounds(root / "backgrounds", 6)
    return root


def start(footage: Path, out: Path, tmp: Path) -> subprocess.Popen:
    """``python -m recseg preprocess`` into ``out``, as a user starts it."""
    args = ["--videos", str(footage / "videos"), "--backgrounds", str(footage / "backgrounds"),
            "--out", str(out), *SETTINGS]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}"}
    with open(tmp / "preprocess.log", "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "recseg", "preprocess", *args],
            cwd=tmp, env=env, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file of a store, by path relative to it."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def reference(footage: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The digests of a store made by one uninterrupted run."""
    tmp = tmp_path_factory.mktemp("reference")
    proc = start(footage, tmp / "store", tmp)
    assert proc.wait(timeout=120) == 0, (tmp / "preprocess.log").read_text()[-3000:]
    return digests(tmp / "store")


def clip_files(root: Path) -> list[Path]:
    """Clip files under their final names."""
    out = []
    for split in SPLITS:
        folder = root / "clips" / split
        if folder.is_dir():
            out += [folder / n for n in os.listdir(folder) if n.endswith(".npz")]
    return out


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")] if root.is_dir() else []


def done_markers(root: Path) -> int:
    folder = root / "done"
    return len(os.listdir(folder)) if folder.is_dir() else 0


class Reader(threading.Thread):
    """Polls the store while it is written: every clip under its final name must decode whole,
    and a ``store.json``, once there, must be complete and list only clips that exist."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.stop = threading.Event()
        self.seen: set[tuple[str, int, int]] = set()
        self.manifests = 0
        self.vanished = 0
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.poll()
            except Exception as exc:  # every failure is a finding
                self.errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.005)

    def poll(self) -> None:
        for path in clip_files(self.root):
            try:
                st = path.stat()
                key = (path.name, st.st_ino, st.st_mtime_ns)
                if key not in self.seen:
                    self.check_clip(path)
                    self.seen.add(key)
            except FileNotFoundError:  # listed, then deleted by a re-run remaking its video's
                self.vanished += 1  # clips: gone is fine, half-written is what is checked
        manifest = self.root / MANIFEST
        if manifest.is_file():
            data = json.loads(manifest.read_text())
            listed = [c["path"] for clips in data["splits"].values() for c in clips]
            missing = [p for p in listed if not (self.root / p).is_file()]
            assert listed and not missing, f"store.json lists missing clips {missing[:3]}"
            self.manifests += 1

    def check_clip(self, path: Path) -> None:
        clip = ClipFile(path)
        frames, labels = clip.frames(), clip.labels()
        n = clip.meta["record"]["frames"]
        assert frames.shape == (n, 90, 160, 3) and labels.shape == (n, 90, 160), path
        assert set(np.unique(labels)) <= {0, 1}, path


def kill_plan(rng: random.Random, total: int) -> list[tuple[str, Callable[[int], Trigger]]]:
    """(name, trigger factory): the factory takes the clips there before the run starts."""
    delay = rng.uniform(0.0, 0.4)
    step = rng.randint(3, total // 3)
    videos = rng.randint(2, VIDEOS - 1)

    def after(seconds: float, t0: float) -> Trigger:
        return lambda root: time.monotonic() - t0 >= seconds

    def clips(n: int) -> Trigger:
        return lambda root: len(clip_files(root)) >= min(n, total)

    def temp_or(fallback: Trigger) -> Trigger:  # a clip's temp file is there for a moment only
        return lambda root: bool(temp_files(root / "clips")) or fallback(root)

    return [
        (f"{delay:.2f} s after start", lambda before: after(delay, time.monotonic())),
        ("at the first new clip", lambda before: clips(before + 1)),
        ("with a temp file on disk", lambda before: temp_or(clips(before + 3))),
        (f"after {step} more clips", lambda before: clips(before + step)),
        (f"after {videos} videos", lambda before: lambda root: done_markers(root) >= videos),
        ("after the last video", lambda before: lambda root: done_markers(root) >= VIDEOS),
        ("after the manifest", lambda before: lambda root: (root / MANIFEST).is_file()),
    ]


def mtime(path: Path) -> int | None:
    """The file's modification time (ns); None once the run has deleted it."""
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def kill_when(proc: subprocess.Popen, root: Path, trigger: Trigger, limit: float = 60) -> bool:
    """SIGKILL ``proc`` once ``trigger`` holds; False when it finished first."""
    deadline = time.monotonic() + limit
    while proc.poll() is None:
        if trigger(root) or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    return False


def test_killed_preprocess_ends_identical(
    footage: Path, reference: dict[str, str], tmp_path: Path, tally
) -> None:
    seed = int(os.environ.get("RECSEG_KILL_SEED") or time.time_ns() % 1_000_000)
    print(f"preprocess kill seed {seed} (replay: RECSEG_KILL_SEED={seed})")
    tally(f"preprocess: runs with kill seed {seed} (RECSEG_KILL_SEED={seed} replays it)", 1)
    total = sum(1 for name in reference if name.startswith("clips/"))
    root = tmp_path / "store"
    reader = Reader(root)
    reader.start()
    killed: list[tuple[str, int, int, bool]] = []  # (point, clips, temp files, manifest)
    try:
        for name, make in kill_plan(random.Random(seed), total):
            proc = start(footage, root, tmp_path)
            if kill_when(proc, root, make(len(clip_files(root)))):
                state = (len(clip_files(root)), len(temp_files(root)), (root / MANIFEST).is_file())
                killed.append((name, *state))
            else:
                assert proc.returncode == 0, (tmp_path / "preprocess.log").read_text()[-3000:]
        final = start(footage, root, tmp_path)
        assert final.wait(timeout=120) == 0, (tmp_path / "preprocess.log").read_text()[-3000:]
    finally:
        reader.stop.set()
        reader.join()
    print("kills (point, clips, temp files, manifest):", *killed, sep="\n  ")
    tally("preprocess kills survived", len(killed))
    tally("preprocess: clips read while killed", len(reader.seen))
    assert not reader.errors, reader.errors[:5]
    assert len(killed) >= 5, killed
    assert killed[0][1] == 0 and any(0 < k[1] < total for k in killed), killed
    assert not temp_files(root), temp_files(root)
    got = digests(root)
    assert sorted(got) == sorted(reference)
    differ = [name for name in reference if got[name] != reference[name]]
    assert not differ, differ
    assert len(reader.seen) >= total


def test_changed_video_is_never_listed_while_remade(footage: Path, tmp_path: Path, tally) -> None:
    """A re-run after a video changed deletes that video's clips to make them again: the old
    ``store.json`` must not list them meanwhile (a reader would find them missing)."""
    videos = tmp_path / "footage"
    shutil.copytree(footage, videos)
    root = tmp_path / "store"
    assert start(videos, root, tmp_path).wait(timeout=120) == 0
    write_video(videos / "videos" / "v0.mp4", 3.0, 10.0, (108, 192), seed=99)
    reader = Reader(root)
    reader.start()
    try:
        proc = start(videos, root, tmp_path)
        made = {p.name: mtime(p) for p in clip_files(root)}
        remade = lambda root: any(  # noqa: E731  (deleted to be made again counts too)
            made.get(p.name) != mtime(p) for p in clip_files(root)
        )
        assert kill_when(proc, root, remade), "the re-run finished before making a clip"
        tally("preprocess kills survived", 1)
        reader.poll()  # the state the kill left
        assert start(videos, root, tmp_path).wait(timeout=120) == 0
    finally:
        reader.stop.set()
        reader.join()
    tally("preprocess: clips read while killed", len(reader.seen))
    assert not reader.errors, reader.errors[:5]
    fresh = tmp_path / "fresh"
    assert start(videos, fresh, tmp_path).wait(timeout=120) == 0
    assert digests(root) == digests(fresh)
