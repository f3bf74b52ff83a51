"""``recseg segment``: a registered model on a real server segments real mp4 files, streamed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from recseg.data.footage.video import Mp4Writer
from recseg.data.video import decode, fit_size
from recseg.errors import InputError
from recseg.inference.background import (
    Background,
    composite,
    mask_frame,
    open_background,
    parse_colour,
)
from recseg.inference.segment import segment_video, stream_masks, working_size
from recseg.models import RecurrentDeepLab, build_model
from recseg.models.loaded import LoadedModel
from recseg.tracking.model_uri import load_network
from recseg.tracking.pyfunc import log_clip_model
from tests.conftest import randomize_norms
from tests.media import one_error_line, run_recseg, write_video
from tests.tolerance import probs_atol

MODEL = "Deep_mobile_gruV1"
SHAPE = (48, 64)  # (H, W) of the test videos
FRAMES = 12
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:.*input example was not provided:UserWarning"),
]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """in.mp4 (48x64, 12 frames), odd.mp4 (33x47), bg.jpg and bgvid.mp4 (5 frames)."""
    root = tmp_path_factory.mktemp("segment-media")
    write_video(root / "in.mp4", seconds=FRAMES / 10, fps=10, size=SHAPE)
    write_video(root / "odd.mp4", seconds=0.6, fps=10, size=(33, 47), seed=1)
    rng = np.random.default_rng(5)
    bg = cv2.resize(rng.integers(0, 255, (3, 5, 3), dtype=np.uint8), (100, 60))
    cv2.imwrite(str(root / "bg.jpg"), bg, [cv2.IMWRITE_JPEG_QUALITY, 98])
    with Mp4Writer(root / "bgvid.mp4", 10, (40, 80)) as writer:
        for i in range(5):
            writer.write(np.full((40, 80, 3), 40 * i + 20, np.uint8))
    return root


def _network(frames: np.ndarray, norm: str = "batch", scale: float = 20.0) -> RecurrentDeepLab:
    """A random network made decisive: its logits scaled up and centred on ``frames``, so about
    half of the pixels are foreground and probabilities spread over (0, 1). BatchNorm by
    default: the tight tolerances below suit its random networks, which vary smoothly (random
    GroupNorm networks are chaotic: ``test_group_norm_model_segments_like_its_network``)."""
    torch.manual_seed(1)
    model = randomize_norms(build_model(MODEL, norm=norm), seed=1).eval()
    clip = torch.from_numpy(frames).permute(0, 3, 1, 2).float()[None] / 255
    with torch.no_grad():
        model.classifier[1].weight.mul_(scale)
        model.out_conv.weight.mul_(scale)
        logits = model(clip)[0][0]
        model.out_conv.bias[1] -= (logits[:, 1] - logits[:, 0]).median()
    return model


@pytest.fixture(scope="module")
def registered(mlflow_server: str, media: Path) -> Iterator[tuple[RecurrentDeepLab, str]]:
    """The network registered as NAME@champion (trained size 32x48); yields it and its URI."""
    name = f"seg-{uuid.uuid4().hex[:8]}"
    model = _network(_frames(media / "in.mp4"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        mlflow.set_tracking_uri(mlflow_server)
        try:
            with mlflow.start_run(experiment_id=mlflow.create_experiment(name)):
                info = log_clip_model(model, MODEL, registered_model_name=name, size=(32, 48))
            version = info.registered_model_version
            MlflowClient().set_registered_model_alias(name, "champion", str(version))
            yield model, f"models:/{name}@champion"
        finally:
            mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def loaded(registered: tuple) -> LoadedModel:
    return load_network(registered[1], "cpu")


def _frames(path: Path) -> np.ndarray:
    return np.stack([frame for _, frame in decode(path)])


def _reference(model: RecurrentDeepLab, frames: np.ndarray) -> np.ndarray:
    """Foreground probability of the network run frame by frame, state carried."""
    out, state = [], None
    with torch.inference_mode():
        for frame in frames:
            x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
            logits, state = model(x, state)
            out.append(torch.softmax(logits, dim=1)[0, 1].numpy())
    return np.stack(out)


def _stream(path: Path) -> dict:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        frames = sum(1 for _ in container.decode(stream))
        return {
            "codec": ctx.name,
            "pix_fmt": ctx.pix_fmt,
            "size": (ctx.height, ctx.width),
            "frames": frames,
            "rate": stream.average_rate,
        }


def _env(server: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": server, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _masks_match(masks: np.ndarray, probs: np.ndarray) -> None:
    """Binary masks equal probs > 0.5 wherever the probability is not within 1e-4 of 0.5."""
    sure = np.abs(probs - 0.5) > 1e-4
    assert sure.mean() > 0.99
    np.testing.assert_array_equal(masks[sure], (probs > 0.5)[sure])


def _assert_composite(path: Path, expected: np.ndarray, *wrong: np.ndarray) -> None:
    """The decoded video matches ``expected`` up to H.264/VP9 loss, far better than ``wrong``."""
    got = _frames(path).astype(np.float32)
    error = np.abs(got - expected).mean()
    assert error < 5, error
    for other in wrong:
        assert error < 0.5 * np.abs(got - other).mean(), (error, np.abs(got - other).mean())


def test_cli_composites_onto_an_image_and_writes_png_masks(
    registered: tuple, media: Path, mlflow_server: str, tmp_path: Path
) -> None:
    model, uri = registered
    out, masks = tmp_path / "new" / "out.mp4", tmp_path / "masks"
    masks.mkdir()  # an existing empty folder is fine
    args = ["segment", str(media / "in.mp4"), "-o", str(out), "--model", uri]
    args += ["--background", str(media / "bg.jpg"), "--masks", str(masks), "--size", "48x64"]
    result = run_recseg(*args, "--device", "cpu", cwd=tmp_path, env=_env(mlflow_server))
    assert result.returncode == 0, result.stderr[-2000:]
    line = result.stdout.strip().splitlines()[-1]
    pattern = rf"segmented {FRAMES} frames \(64x48\) in [\d.]+ s: [\d.]+ fps "
    pattern += rf"\(model {MODEL} on cpu\); wrote {re.escape(str(out))}"
    assert re.fullmatch(pattern, line), line
    assert _stream(out) == {
        "codec": "h264",
        "pix_fmt": "yuv420p",
        "size": SHAPE,
        "frames": FRAMES,
        "rate": _stream(media / "in.mp4")["rate"],
    }
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.mp4"]  # no temp file left
    frames = _frames(media / "in.mp4")
    probs = _reference(model, frames)
    assert probs.std() > 0.05  # a non-trivial segmentation, so the comparisons mean something
    pngs = sorted(masks.iterdir())
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(FRAMES)]
    read = np.stack([cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in pngs])
    assert read.dtype == np.uint8 and set(np.unique(read)) <= {0, 255}
    _masks_match(read > 0, probs)
    bg = cv2.cvtColor(cv2.imread(str(media / "bg.jpg")), cv2.COLOR_BGR2RGB)
    bg = fit_size(bg, SHAPE)
    expected = np.stack([composite(f, bg, p) for f, p in zip(frames, probs, strict=True)])
    _assert_composite(out, expected, frames, np.broadcast_to(bg, frames.shape))


def test_bf16_path_gives_the_same_masks(
    registered: tuple, media: Path, mlflow_server: str, tmp_path: Path
) -> None:
    model, uri = registered
    probs = _reference(model, _frames(media / "in.mp4"))
    for extra in (["--precision", "bf16"],):
        masks = tmp_path / f"masks{len(extra)}.mp4"
        args = ["segment", str(media / "in.mp4"), "-o", str(tmp_path / f"o{len(extra)}.mp4")]
        args += ["--model", uri, "--masks", str(masks), "--size", "48x64", *extra]
        result = run_recseg(*args, "--device", "cpu", cwd=tmp_path, env=_env(mlflow_server))
        assert result.returncode == 0, result.stderr[-2000:]
        decoded = _frames(masks)[..., 0] > 127
        sure = np.abs(probs - 0.5) > 0.1  # bf16 may flip pixels the model is unsure about
        assert sure.mean() > 0.5
        agree = (decoded == (probs > 0.5))[sure].mean()
        assert agree > 0.99, (extra, agree)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_group_norm_model_segments_like_its_network(
    media: Path, tmp_path: Path, precision: str
) -> None:
    """The default norm (GroupNorm, nothing to fold) through the optimised path, both
    precisions: the masks agree with the network's own probabilities where it is sure."""
    frames = _frames(media / "in.mp4")
    model = _network(frames, norm="group", scale=5.0)
    probs = _reference(model, frames)
    loaded = LoadedModel(model=model, name=MODEL, uri="test:group", run_id=None, size=SHAPE)
    masks = tmp_path / "masks"
    stats = segment_video(media / "in.mp4", tmp_path / "o.mp4", loaded, masks=masks,
                          size=SHAPE, precision=precision)  # fmt: skip
    assert stats.frames == FRAMES
    decoded = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(masks.iterdir())])
    sure = np.abs(probs - 0.5) > 0.1
    assert sure.mean() > 0.4
    assert ((decoded > 127) == (probs > 0.5))[sure].mean() > (0.99 if precision == "fp32" else 0.95)


def test_stream_equals_whole_clip_and_chunking_does_not_matter(registered: tuple) -> None:
    model = registered[0]
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (7, 40, 56, 3), dtype=np.uint8)
    clip = torch.from_numpy(frames).permute(0, 3, 1, 2).float()[None] / 255
    with torch.inference_mode():
        logits = model(clip)[0]
    whole = torch.softmax(logits, dim=2)[0, :, 1].numpy()
    assert whole.std() > 0.05
    for chunk in (1, 3, 8):
        probs = np.stack(list(stream_masks(iter(frames), model, None, "cpu", chunk=chunk)))
        assert probs.shape == (7, 40, 56) and probs.dtype == np.float32
        np.testing.assert_allclose(probs, whole, atol=probs_atol(logits), rtol=0)
    # At a smaller working size the probabilities come back at the frames' size.
    small = list(stream_masks(iter(frames), model, (32, 48), "cpu", chunk=4))
    assert len(small) == 7 and all(p.shape == (40, 56) for p in small)
    assert all(p.min() >= 0 and p.max() <= 1 for p in small)


def test_compositing_and_mask_frames_on_arrays() -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    bg = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    prob = np.zeros((6, 8), np.float32)
    prob[:, 4:] = 1.0
    prob[0] = 0.5
    out = composite(frame, bg, prob)
    np.testing.assert_array_equal(out[1:, :4], bg[1:, :4])
    np.testing.assert_array_equal(out[1:, 4:], frame[1:, 4:])
    half = (frame[0].astype(np.float32) + bg[0]) / 2
    assert np.abs(out[0].astype(np.float32) - half).max() <= 0.5
    white = mask_frame(prob > 0.5)
    assert white.shape == (6, 8, 3) and white.dtype == np.uint8
    assert (white[1:, 4:] == 255).all() and (white[:, :4] == 0).all()


def test_working_size_keeps_aspect_and_pixel_count() -> None:
    for frame, model_size in [
        ((720, 1280), None),
        ((1080, 1920), (270, 512)),
        ((480, 360), (32, 48)),
    ]:
        h, w = working_size(frame, model_size)
        th, tw = model_size or (270, 512)
        assert h % 8 == 0 and w % 8 == 0 and min(h, w) >= 32
        assert abs(h * w / (th * tw) - 1) < 0.3
        assert abs((w / h) / (frame[1] / frame[0]) - 1) < 0.2
    assert working_size((1000, 10), (32, 48))[1] == 32  # never below 32


def test_colours_parse() -> None:
    assert parse_colour("green") == (0, 255, 0)
    assert parse_colour("Black") == (0, 0, 0)
    assert parse_colour("#00ff00") == (0, 255, 0)
    assert parse_colour("#fff") == (255, 255, 255)
    assert parse_colour("10, 20,30") == (10, 20, 30)
    assert parse_colour("purple-ish") is None
    with pytest.raises(InputError, match="0-255"):
        parse_colour("0,256,0")
    with pytest.raises(InputError, match="not a colour"):
        open_background("purple-ish")


def test_colour_and_looped_video_backgrounds(
    registered: tuple, loaded: LoadedModel, media: Path, tmp_path: Path
) -> None:
    frames = _frames(media / "in.mp4")
    probs = _reference(registered[0], frames)
    out = tmp_path / "green.mp4"
    stats = segment_video(
        media / "in.mp4", out, loaded, background="#00ff00", masks=tmp_path / "m.mp4", size=SHAPE
    )
    assert (stats.frames, stats.size, stats.working_size) == (FRAMES, SHAPE, SHAPE)
    green = np.zeros((*SHAPE, 3), np.uint8)
    green[..., 1] = 255
    expected = np.stack([composite(f, green, p) for f, p in zip(frames, probs, strict=True)])
    _assert_composite(out, expected, frames, np.broadcast_to(green, frames.shape))
    mask_video = _frames(tmp_path / "m.mp4")
    assert _stream(tmp_path / "m.mp4")["frames"] == FRAMES
    sure = np.abs(probs - 0.5) > 0.05  # away from the (codec-blurred) mask edges
    agree = (mask_video[..., 0] > 127)[sure] == (probs > 0.5)[sure]
    assert agree.mean() > 0.98
    # A 5-frame background video loops behind the 12 frames.
    segment_video(media / "in.mp4", tmp_path / "v.mp4", loaded, background=str(media / "bgvid.mp4"))
    backs = [fit_size(f, SHAPE) for _, f in decode(media / "bgvid.mp4")]
    assert len(backs) == 5
    work = working_size(SHAPE, (32, 48))
    probs = np.stack(list(stream_masks(iter(frames), loaded.model, work)))
    looped = [composite(frames[i], backs[i % 5], probs[i]) for i in range(FRAMES)]
    held = [composite(frames[i], backs[min(i, 4)], probs[i]) for i in range(FRAMES)]
    _assert_composite(tmp_path / "v.mp4", np.stack(looped), frames, np.stack(held))


def test_odd_sized_video_keeps_its_size_and_mask_video(
    loaded: LoadedModel, media: Path, tmp_path: Path
) -> None:
    out, pngs = tmp_path / "odd-out.mp4", tmp_path / "pngs"
    stats = segment_video(media / "odd.mp4", out, loaded, masks=pngs)  # no background: masks
    assert stats.size == (33, 47) and stats.frames == 6
    info = _stream(out)
    assert info["size"] == (33, 47) and info["frames"] == 6, info
    assert (info["codec"], info["pix_fmt"]) == ("vp9", "yuv420p")  # H.264 4:2:0 cannot
    assert info["rate"] == _stream(media / "odd.mp4")["rate"]
    masks = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(pngs.iterdir())])
    assert masks.shape == (6, 33, 47) and 0.05 < (masks > 0).mean() < 0.95
    video = _frames(out)
    assert np.abs(video.astype(np.float32) - masks[..., None]).mean() < 8  # white on black


class _Failing(Background):
    """A background that breaks after three frames: a failure in the middle of a video."""

    def frames(self, shape: tuple[int, int]) -> Iterator[np.ndarray]:
        for _ in range(3):
            yield np.zeros((*shape, 3), np.uint8)
        raise RuntimeError("background broke")


def test_a_failure_part_way_leaves_nothing_behind(
    loaded: LoadedModel, media: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "new" / "folder"  # created for the outputs, removed again
    with pytest.raises(RuntimeError, match="background broke"):
        segment_video(
            media / "in.mp4", out_dir / "o.mp4", loaded, background=_Failing(), masks=out_dir / "m"
        )
    assert list(tmp_path.iterdir()) == []


def _bad_cases(media: Path, tmp: Path) -> list[tuple[list[str], tuple[str, ...]]]:
    (tmp / "x.mp4").write_text("not a video\n")
    (tmp / "full").mkdir()
    (tmp / "full" / "a.png").write_bytes(b"x")
    (tmp / "text.jpg").write_text("not an image\n")
    good = str(media / "in.mp4")
    return [
        ([str(tmp / "x.mp4"), "-o", "o.mp4"], ("x.mp4", "not a readable video")),
        ([good, "-o", "o.mp4", "--model", "models:/nope@champion"], ("models:/nope@champion",)),
        ([good, "-o", "o.mp4", "--background", "missing.jpg"], ("--background", "no such file")),
        ([good, "-o", "o.mp4", "--background", "text.jpg"], ("--background", "text.jpg")),
        ([good, "-o", "o.mp4", "--background", "purplish"], ("--background", "not a colour")),
        ([good, "-o", "out.avi"], ("out.avi", ".mp4")),
        ([good, "-o", good], ("must not be the input",)),
        ([good, "-o", "o.mp4", "--masks", "full"], ("--masks", "not empty")),
        ([good, "-o", "o.mp4", "--threshold", "1.5"], ("--threshold",)),
    ]


def test_bad_inputs_exit_2_with_one_line(
    registered: tuple, media: Path, mlflow_server: str, tmp_path: Path
) -> None:
    for args, needles in _bad_cases(media, tmp_path):
        if "--model" not in args:
            args = [*args, "--model", registered[1]]
        result = run_recseg("segment", *args, cwd=tmp_path, env=_env(mlflow_server))
        one_error_line(result, *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "text.jpg", "x.mp4"]


MEMORY_SCRIPT = """
import resource, sys, torch
torch.set_num_threads(1)
from recseg.inference.segment import segment_video
from recseg.tracking.model_uri import load_network
loaded = load_network(sys.argv[1], "cpu")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
stats = segment_video(sys.argv[2], sys.argv[3], loaded, background="green", size=(32, 48))
print(stats.frames, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _long_video(
    path: Path, seconds: float, fps: float = 30, size: tuple[int, int] = (72, 96)
) -> None:
    """A square moving over a still picture: cheap to write, any length."""
    h, w = size
    base = cv2.resize(np.random.default_rng(2).integers(0, 255, (9, 12, 3), dtype=np.uint8), (w, h))
    with Mp4Writer(path, fps, size) as writer:
        for i in range(round(seconds * fps)):
            frame = base.copy()
            x = i % (w - 16)
            frame[20:36, x : x + 16] = (30, 30, 220)
            writer.write(frame)


@pytest.mark.slow
def test_memory_is_constant_in_video_length(
    registered: tuple, mlflow_server: str, tmp_path: Path
) -> None:
    """Segmenting a 2-minute video (3600 frames of 72x96: 75 MB of RGB) takes no more memory
    than a 20-second one: the peak RSS grows alike during both runs (measured after imports and
    model loading, whose footprint varies from process to process)."""
    env = {**os.environ, **_env(mlflow_server), "MLFLOW_DISABLE_TELEMETRY": "true"}
    runs = {}
    for seconds in (20, 120):
        _long_video(tmp_path / f"in{seconds}.mp4", seconds)
        cmd = [sys.executable, "-c", MEMORY_SCRIPT, registered[1]]
        cmd += [str(tmp_path / f"in{seconds}.mp4"), str(tmp_path / f"out{seconds}.mp4")]
        runs[seconds] = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
    growth, peaks = {}, {}
    for seconds, proc in runs.items():
        out, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err[-2000:]
        frames, before_kb, peak_kb = map(int, out.split()[-3:])
        assert frames == seconds * 30
        growth[seconds], peaks[seconds] = (peak_kb - before_kb) / 1024, peak_kb / 1024
    assert growth[120] - growth[20] < 30, (growth, peaks)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_matches_cpu(loaded: LoadedModel, media: Path, tmp_path: Path) -> None:
    frames = _frames(media / "in.mp4")
    cpu = np.stack(list(stream_masks(iter(frames), loaded.model.cpu(), SHAPE, "cpu")))
    gpu_model = build_model(MODEL).cuda().eval()
    gpu_model.load_state_dict(loaded.model.state_dict())
    gpu = np.stack(list(stream_masks(iter(frames), gpu_model, SHAPE, "cuda")))
    np.testing.assert_allclose(gpu, cpu, atol=1e-2)
    stats = segment_video(media / "in.mp4", tmp_path / "g.mp4", loaded, device="cuda")
    assert stats.frames == FRAMES
