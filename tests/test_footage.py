"""``recseg footage``: real H.264 greenscreen videos, true masks and backgrounds, checked by
playing them back with a second decoder (OpenCV) and by keying them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from recseg.data.footage import FootageConfig, make_footage
from recseg.data.footage.events import BLUR, BURST, DROPPED, OCCLUDED
from recseg.data.footage.look import GREEN_HUES, GREY_SATURATION, bgr_to_hsv, random_look
from recseg.data.footage.programs import EMPTY_ENDS

TINY = ["--videos", "3", "--seconds", "2", "--fps", "10", "--size", "96x160"]
DEBIAN = Path("/usr/share/backgrounds")


def recseg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recseg", *args], capture_output=True, text=True, timeout=300
    )


def tiny(**changes: object) -> FootageConfig:
    return FootageConfig(**{"videos": 3, "seconds": 2.0, "fps": 10.0, "size": "96x160", **changes})


def read_cv2(path: Path) -> list[np.ndarray]:
    """Every frame of a video, decoded by OpenCV (BGR)."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def truth(root: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(root / "truth" / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


def green(frame: np.ndarray) -> np.ndarray:
    """Pixels a plain HSV test calls green screen."""
    hsv = cv2.cvtColor(frame, cv2.COLOR_BGR2HSV)
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    return (h >= GREEN_HUES[0]) & (h <= GREEN_HUES[1]) & (s >= 60) & (v >= 40)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Tiny footage written by the real command (every background included)."""
    out = tmp_path_factory.mktemp("plain")
    result = recseg("footage", str(out), *TINY)
    assert result.returncode == 0, result.stderr
    assert "wrote 3 videos (60 frames)" in result.stdout
    return out, json.loads((out / "footage.json").read_text())


@pytest.fixture(scope="module")
def hard(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("hard")
    make_footage(tiny(hard=True, backgrounds=1), out)
    return out, json.loads((out / "footage.json").read_text())


def test_layout_and_manifest(plain: tuple[Path, dict]) -> None:
    root, manifest = plain
    names = [v["name"] for v in manifest["videos"]]
    assert names == ["person-00", "person-01", "person-02"]
    assert manifest["options"] == {"videos": 3, "seconds": 2.0, "fps": 10.0, "size": "96x160",
                                   "seed": 0, "hard": False, "backgrounds": 0}  # fmt: skip
    assert {"version", "seed", "videos", "backgrounds", "licences", "event_codes"} <= set(manifest)
    for video in manifest["videos"]:
        assert (root / video["video"]).is_file() and (root / video["truth"]).is_file()
        data = truth(root, video["name"])
        assert data["masks"].dtype == bool and data["masks"].shape == (20, 96, 160)
        assert data["events"].dtype == np.uint8 and not data["events"].any()
        assert float(data["fps"]) == 10.0 and video["frames"] == 20
        assert video["motions"] and video["figures"] in (1, 2)
        assert video["hard_events"] == []
    assert not [p for p in root.rglob(".*")], "temporary files left behind"


def test_videos_play_back_in_opencv(plain: tuple[Path, dict]) -> None:
    """A second decoder sees one frame per mask, green screen outside, no green on people."""
    root, manifest = plain
    kernel = np.ones((5, 5), np.uint8)
    for video in manifest["videos"]:
        frames = read_cv2(root / video["video"])
        masks = truth(root, video["name"])["masks"]
        assert len(frames) == len(masks) == 20
        assert all(f.shape == (96, 160, 3) for f in frames)
        for frame, mask in zip(frames, masks, strict=True):
            inside = cv2.erode(mask.astype(np.uint8), kernel).astype(bool)
            outside = ~cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
            assert green(frame)[outside].mean() > 0.97
            if inside.sum() > 20:
                assert green(frame)[inside].mean() < 0.05


def test_codec_is_h264_yuv420p(plain: tuple[Path, dict]) -> None:
    root, manifest = plain
    for video in manifest["videos"]:
        with av.open(str(root / video["video"])) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert stream.codec_context.pix_fmt == "yuv420p"
            assert float(stream.average_rate) == 10.0
            assert sum(1 for _ in container.decode(stream)) == 20


def test_figures_enter_and_leave(plain: tuple[Path, dict]) -> None:
    root, manifest = plain
    programs = {v["program"] for v in manifest["videos"]}
    assert programs & set(EMPTY_ENDS), "three consecutive videos include an enter/leave one"
    for video in manifest["videos"]:
        present = truth(root, video["name"])["masks"].any(axis=(1, 2))
        if video["program"] in EMPTY_ENDS:
            assert not present[0] and not present[-1] and present.sum() >= 5
            assert {"enter", "exit", "walk"} <= set(video["motions"])
            assert video["empty_frames"] == int((~present).sum())
        else:
            assert present.all()


def test_backgrounds_are_real_readable_images(plain: tuple[Path, dict]) -> None:
    root, manifest = plain
    records = manifest["backgrounds"]
    sources = {r["source"] for r in records}
    assert {"skimage", "texture"} <= sources
    files = {r["file"] for r in records}
    assert "backgrounds/skimage-chelsea.jpg" in files
    assert not files & {"backgrounds/skimage-astronaut.jpg", "backgrounds/skimage-camera.jpg"}
    if DEBIAN.is_dir() and list(DEBIAN.glob("*.jpg")):
        assert "lomiri" in sources
    if (DEBIAN / "mate").is_dir():
        assert "mate" in sources
    for record in records:
        image = cv2.imread(str(root / record["file"]))
        assert image is not None and image.ndim == 3 and max(image.shape[:2]) <= 1024
        assert record["licence"] and Path(record["file"]).name.startswith(record["source"])
    on_disk = {f"backgrounds/{p.name}" for p in (root / "backgrounds").iterdir()}
    assert on_disk == {r["file"] for r in records}


def test_same_seed_same_footage_other_seed_differs(plain: tuple[Path, dict], tmp_path: Path):
    """Video k depends only on the seed and k: one video from a fresh run matches byte for
    byte; another seed gives other footage."""
    root, _ = plain
    again, other = tmp_path / "again", tmp_path / "other"
    make_footage(tiny(videos=1, backgrounds=1), again)
    make_footage(tiny(videos=1, backgrounds=1, seed=1), other)
    ours = (root / "truth" / "person-00.npz").read_bytes()
    assert (again / "truth" / "person-00.npz").read_bytes() == ours
    frames = read_cv2(root / "videos" / "person-00.mp4")
    repeat = read_cv2(again / "videos" / "person-00.mp4")
    assert all(np.array_equal(a, b) for a, b in zip(frames, repeat, strict=True))
    assert not np.array_equal(truth(other, "person-00")["masks"], truth(root, "person-00")["masks"])
    assert not np.array_equal(read_cv2(other / "videos" / "person-00.mp4")[10], frames[10])


def test_hard_events(hard: tuple[Path, dict]) -> None:
    """--hard: occlusions, bursts, dropped frames and motion blur, recorded per frame; the
    mask stays the (amodal) person under a full occlusion."""
    root, manifest = hard
    kinds: set[int] = set()
    for video in manifest["videos"]:
        data = truth(root, video["name"])
        events, masks = data["events"], data["masks"]
        kinds |= set(np.unique(events).tolist())
        frames = read_cv2(root / video["video"])
        for event in video["hard_events"]:
            span = range(event["start"], event["start"] + event["frames"])
            assert all(events[i] == event["kind"] for i in span)
            if event["kind"] == OCCLUDED:
                assert all(masks[i].any() for i in span)
                middle = frames[event["start"] + event["frames"] // 2]
                assert green(middle)[masks[event["start"] + event["frames"] // 2]].mean() < 0.05
            if event["detail"] == "flash":
                assert all(frames[i].mean() > 190 for i in span)
        assert sum(e["frames"] for e in video["hard_events"]) == int((events > 0).sum())
    assert kinds == {0, OCCLUDED, BURST, DROPPED, BLUR}


def test_a_soft_key_separates_people_from_the_screen(tmp_path: Path) -> None:
    """A simple soft key (green excess over the local screen, refined along luma edges)
    recovers the true masks at full size: spill, shadow, noise and 4:2:0 chroma stay keyable
    (the errors are a one-pixel band along the outline)."""
    make_footage(tiny(videos=2, seconds=1.0, size="360x640", backgrounds=1), tmp_path)
    inter = union = 0
    for name in ("person-00", "person-01"):
        masks = truth(tmp_path, name)["masks"]
        for frame, mask in zip(read_cv2(tmp_path / "videos" / f"{name}.mp4"), masks, strict=True):
            f = frame.astype(np.float32)
            excess = f[..., 1] - np.maximum(f[..., 0], f[..., 2])
            screen = excess > 15
            weight = cv2.GaussianBlur(screen.astype(np.float32), (0, 0), 15)
            local = cv2.GaussianBlur(np.where(screen, excess, 0), (0, 0), 15) / (weight + 1e-3)
            alpha = np.clip(1.0 - excess / np.maximum(local, 1.0), 0.0, 1.0)
            luma = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255
            key = _guided(luma, alpha, 1, 1e-3) > 0.5
            inter += int((key & mask).sum())
            union += int((key | mask).sum())
    assert inter / union > 0.96


def _guided(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter (grey guide)."""
    size = (2 * radius + 1, 2 * radius + 1)
    mean = lambda x: cv2.boxFilter(x, -1, size)  # noqa: E731
    mg, ms = mean(guide), mean(src)
    a = (mean(guide * src) - mg * ms) / (mean(guide * guide) - mg * mg + eps)
    return mean(a) * guide + mean(ms - a * mg)


def test_figure_colours_stay_off_the_green_hues() -> None:
    for seed in range(300):
        for colour in random_look(np.random.default_rng(seed)).colours():
            hue, sat, _ = bgr_to_hsv(colour)
            assert sat < GREY_SATURATION or not GREEN_HUES[0] <= hue <= GREEN_HUES[1]


def test_rerun_keeps_user_files_and_removes_its_own_stale_ones(tmp_path: Path) -> None:
    make_footage(tiny(videos=2, seconds=0.5, backgrounds=3), tmp_path)
    mine = [tmp_path / "videos" / "mine.mp4", tmp_path / "notes.txt"]
    for path in mine:
        path.write_text("user data")
    make_footage(tiny(videos=1, seconds=0.5, backgrounds=1), tmp_path)
    assert all(p.read_text() == "user data" for p in mine)
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["mine.mp4", "person-00.mp4"]
    assert [p.name for p in (tmp_path / "truth").iterdir()] == ["person-00.npz"]
    assert len(list((tmp_path / "backgrounds").iterdir())) == 1


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--size", "0x10"], "--size"),
        (["--size", "95x160"], "--size"),
        (["--size", "big"], "--size"),
        (["--videos", "0"], "--videos"),
        (["--seconds", "-1"], "--seconds"),
        (["--seconds", "0.01"], "--seconds"),
        (["--fps", "0"], "--fps"),
        (["--backgrounds", "-2"], "--backgrounds"),
        (["--seed", "-1"], "--seed"),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path: Path, args: list[str], flag: str) -> None:
    out = tmp_path / "out"
    result = recseg("footage", str(out), *args)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"recseg: error: {flag}: ")
    assert not out.exists()
