"""``recseg preprocess`` on bad input: exit 2, one line naming the problem, nothing half-written,
the good videos still processed; and resuming an interrupted run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recseg.data.store import ClipStore
from tests.media import one_error_line, run_recseg, write_backgrounds, write_video

ARGS = ("--clip-seconds", "1", "--fps", "10", "--size", "64x96")


def recseg(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    uri = {"MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    return run_recseg(*args, cwd=cwd, env={**uri, **(env or {})})


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four good 2 s greenscreen videos and four backgrounds."""
    root = tmp_path_factory.mktemp("good")
    (root / "videos").mkdir()
    (root / "truth").mkdir()
    for i in range(4):
        masks = write_video(root / "videos" / f"v{i}.mp4", seed=i)
        np.savez_compressed(root / "truth" / f"v{i}.npz", masks=masks)
    write_backgrounds(root / "backgrounds")
    return root


def with_videos(tmp_path: Path, good: Path) -> Path:
    shutil.copytree(good / "videos", tmp_path / "videos")
    return tmp_path / "videos"


def run_pre(tmp_path: Path, videos: Path, backgrounds: Path, *extra: str):
    out = tmp_path / "store"
    result = recseg(
        "preprocess", "--videos", str(videos), "--backgrounds", str(backgrounds),
        "--out", str(out), *ARGS, *extra, cwd=tmp_path,
    )  # fmt: skip
    return result, out


def clip_files(out: Path) -> list[Path]:
    return sorted(out.glob("clips/*/*.npz")) if out.exists() else []


def test_empty_folder(tmp_path: Path, good: Path) -> None:
    (tmp_path / "empty").mkdir()
    result, out = run_pre(tmp_path, tmp_path / "empty", good / "backgrounds")
    one_error_line(result, "--videos", "no video files")
    assert not out.exists()


@pytest.mark.parametrize("kind", ["text", "truncated", "nogreen", "short"])
def test_bad_video_is_named_and_skipped_the_rest_processed(
    tmp_path: Path, good: Path, kind: str
) -> None:
    videos = with_videos(tmp_path, good)
    bad = videos / "bad.mp4"
    if kind == "text":
        bad.write_text("this is not a video\n")
    elif kind == "truncated":
        data = (videos / "v0.mp4").read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "nogreen":
        write_video(bad, screen=(120, 120, 200))
    else:
        write_video(bad, seconds=0.5)
    result, out = run_pre(tmp_path, videos, good / "backgrounds")
    line = one_error_line(result, "bad.mp4", "skipped 1 video")
    reasons = {"text": "not a readable video", "truncated": "bad.mp4",
               "nogreen": "no green screen", "short": "shorter than one clip"}  # fmt: skip
    assert reasons[kind] in line
    store = ClipStore(out)
    assert not any("bad" in p.name for p in clip_files(out))
    assert {r.video for recs in store.splits.values() for r in recs} == {f"v{i}" for i in range(4)}
    assert all(store.clips(s) for s in ("train", "val", "test"))
    assert "bad.mp4" in json.dumps(store.manifest["skipped"])


@pytest.mark.parametrize("problem", ["missing", "empty", "corrupt", "single"])
def test_bad_backgrounds_folder(tmp_path: Path, good: Path, problem: str) -> None:
    bgs = tmp_path / "bgs"
    if problem != "missing":
        bgs.mkdir()
    if problem == "corrupt":
        write_backgrounds(bgs)
        (bgs / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    if problem == "single":
        write_backgrounds(bgs, count=1)
    result, out = run_pre(tmp_path, good / "videos", bgs)
    needle = {"missing": "not a folder", "empty": "no images", "corrupt": "broken.jpg",
              "single": "at least 2 images"}[problem]  # fmt: skip
    one_error_line(result, "--backgrounds", needle)
    assert not out.exists()


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--size", "0x10"), ("--size", "big"), ("--fps", "0"), ("--clip-seconds", "0")],
)
def test_bad_flag_values(tmp_path: Path, good: Path, flag: str, value: str) -> None:
    result, out = run_pre(tmp_path, good / "videos", good / "backgrounds", flag, value)
    one_error_line(result, flag)
    assert not out.exists()


def test_other_settings_on_an_existing_store_are_refused(tmp_path: Path, good: Path) -> None:
    result, out = run_pre(tmp_path, good / "videos", good / "backgrounds")
    assert result.returncode == 0, result.stderr
    before = {p: p.read_bytes() for p in clip_files(out)}
    result, _ = run_pre(tmp_path, good / "videos", good / "backgrounds", "--fps", "5")
    one_error_line(result, "--out", "other settings", "fps")
    assert {p: p.read_bytes() for p in clip_files(out)} == before


def test_preprocess_run_is_logged_to_an_mlflow_server(
    tmp_path: Path, good: Path, mlflow_server: str
) -> None:
    from mlflow import MlflowClient

    env = {"MLFLOW_TRACKING_URI": mlflow_server}
    result = recseg(
        "preprocess", "--videos", str(good / "videos"), "--backgrounds", str(good / "backgrounds"),
        "--out", str(tmp_path / "store"), *ARGS, "--experiment", "pre-test", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.split("run")[-1].split()[0]
    client = MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["size"] == "64x96" and run.data.params["fps"] == "10.0"
    store = ClipStore(tmp_path / "store")
    for split in ("train", "val", "test"):
        assert run.data.metrics[f"{split}_clips"] == len(store.clips(split)) > 0
        assert run.data.metrics[f"{split}_frames"] == sum(r.frames for r in store.clips(split))
    assert 0.9 < run.data.metrics["key_fg_iou"] <= 1.0
    assert 0 < run.data.metrics["fg_ratio"] < 1
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"samples.png", "store.json", "plan.json"} <= names
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.source_type == "local"
    assert str((tmp_path / "store").resolve()) in inputs[0].dataset.source


def test_mlflow_run_preprocess_entry_point(tmp_path: Path, good: Path) -> None:
    """`mlflow run . -e preprocess` in this installed environment logs into the run it made."""
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
    }
    out = tmp_path / "store"
    cmd = [sys.executable, "-m", "mlflow", "run", str(root), "-e", "preprocess",
           "--env-manager", "local", "--experiment-name", "pre-project",
           "-P", f"videos={good / 'videos'}", "-P", f"backgrounds={good / 'backgrounds'}",
           "-P", f"out={out}", "-P", "clip_seconds=1", "-P", "fps=10",
           "-P", "size=64x96"]  # fmt: skip
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(ClipStore(out).clips(s) for s in ("train", "val", "test"))
    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["pre-project"], output_format="list")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["size"] == "64x96" and "seed" in runs[0].data.params
    assert runs[0].data.metrics["train_clips"] > 0 and "key_fg_iou" in runs[0].data.metrics


def test_a_changed_video_is_made_again_the_rest_kept(tmp_path: Path, good: Path) -> None:
    videos = with_videos(tmp_path, good)
    result, out = run_pre(tmp_path, videos, good / "backgrounds")
    assert result.returncode == 0, result.stderr
    before = {p.name: p.read_bytes() for p in clip_files(out)}
    write_video(videos / "v0.mp4", seed=42)
    result, out = run_pre(tmp_path, videos, good / "backgrounds")
    assert result.returncode == 0, result.stderr
    assert "v0 changed since its clips were made" in result.stdout
    after = {p.name: p.read_bytes() for p in clip_files(out)}
    assert before.keys() == after.keys()
    changed = {name for name in before if before[name] != after[name]}
    assert changed and all(name.startswith("v0-") for name in changed)


def test_a_deleted_clip_is_made_again(tmp_path: Path, good: Path) -> None:
    result, out = run_pre(tmp_path, good / "videos", good / "backgrounds")
    assert result.returncode == 0, result.stderr
    victim = clip_files(out)[0]
    data = victim.read_bytes()
    victim.unlink()
    result, out = run_pre(tmp_path, good / "videos", good / "backgrounds")
    assert result.returncode == 0, result.stderr
    assert victim.read_bytes() == data
