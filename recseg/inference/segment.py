"""Segmenting a whole video with a logged model, streamed in constant memory.

Frames are decoded one at a time, resized to a working size, and run through the recurrent
network a few at a time with its state carried from chunk to chunk; the foreground probability
is upsampled back to the video's size and written out (mask, composite, PNG masks) before the
next frames are decoded. No more than one chunk of frames is held, whatever the video's length.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from recseg.config import parse_size
from recseg.data.footage.video import Mp4Writer
from recseg.data.paths import writing
from recseg.data.video import VideoError, VideoInfo, decode, probe
from recseg.inference import CHUNK, check_paths
from recseg.inference.background import Background, composite, mask_frame, open_background
from recseg.inference.optimize import optimize
from recseg.machine import pick_device
from recseg.models.loaded import LoadedModel

DEFAULT_SIZE = (270, 512)  # working size when the model does not record its training size
MIN_SIDE = 32


@dataclasses.dataclass(frozen=True)
class SegmentStats:
    """What ``segment_video`` did: frames written, wall seconds, frames per second, the video's
    ``size`` and the network's ``working_size`` (both ``(H, W)``)."""

    frames: int
    seconds: float
    fps: float
    size: tuple[int, int]
    working_size: tuple[int, int]


def working_size(
    frame_size: tuple[int, int], model_size: tuple[int, int] | None
) -> tuple[int, int]:
    """The model's training size (else ``DEFAULT_SIZE``) reshaped to the frame's aspect ratio:
    about the same pixel count, sides rounded to multiples of 8, at least ``MIN_SIDE``."""
    th, tw = model_size or DEFAULT_SIZE
    h, w = frame_size
    scale = math.sqrt(th * tw / (h * w))
    return max(MIN_SIDE, round(h * scale / 8) * 8), max(MIN_SIDE, round(w * scale / 8) * 8)


class _FrameBuffer:
    """A host buffer of ``chunk`` frames at the working size, reused for every chunk (no
    per-frame allocations: frames are resized straight into it)."""

    def __init__(
        self, chunk: int, size: tuple[int, int], dtype: np.dtype, device: torch.device
    ) -> None:
        self.key = (size, np.dtype(dtype))
        self.size, self.scale = size, 255.0 if dtype == np.uint8 else 1.0
        self.array = np.empty((chunk, *size, 3), dtype)
        self.tensor = torch.from_numpy(self.array)
        if device.type == "cuda":  # page-locked: the copy to the GPU runs asynchronously
            self.tensor = self.tensor.pin_memory()
            self.array = self.tensor.numpy()
        self.device = device

    def clip(self, frames: list[np.ndarray]) -> torch.Tensor:
        """RGB frames ``(H, W, 3)`` (uint8, or float in [0, 1]) as ``(1, T, 3, h, w)`` float32
        in [0, 1] on the device."""
        for i, frame in enumerate(frames):
            _resize_into(frame.astype(self.array.dtype, copy=False), self.size, self.array[i])
        stack = self.tensor[: len(frames)].to(self.device, non_blocking=True)
        return (stack.permute(0, 3, 1, 2).float() / self.scale).unsqueeze(0)


def _resize_into(frame: np.ndarray, size: tuple[int, int], out: np.ndarray) -> None:
    """``frame`` resized to ``size`` (H, W) into ``out``: area averaging when shrinking,
    bilinear when enlarging."""
    h, w = frame.shape[:2]
    if (h, w) == size:
        np.copyto(out, frame)
        return
    shrink = size[0] * size[1] < h * w
    cv2.resize(
        frame, size[::-1], dst=out, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )


def _chunks(frames: Iterable[np.ndarray], k: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == k:
            yield batch
            batch = []
    if batch:
        yield batch


def stream_masks(
    frames_iter: Iterable[np.ndarray],
    model: torch.nn.Module,
    working_size: tuple[int, int] | None = None,
    device: torch.device | str = "cpu",
    *,
    chunk: int = CHUNK,
) -> Iterator[np.ndarray]:
    """Foreground probability (softmax channel 1), float32 ``(H, W)`` at each frame's own size,
    for RGB frames ``(H, W, 3)`` (uint8 or float in [0, 1]) of one video, in order.

    The network (already on ``device``, in eval mode) sees ``chunk`` frames at a time at
    ``working_size`` (None: the frames' size); its recurrent state is carried from chunk to
    chunk, so the result is that of the whole video in one pass, in constant memory.
    """
    device = torch.device(device)
    state, buffer = None, None
    for batch in _chunks(frames_iter, chunk):
        h, w = batch[0].shape[:2]
        size = working_size or (h, w)
        dtype = np.dtype(np.uint8 if batch[0].dtype == np.uint8 else np.float32)
        if buffer is None or buffer.key != (size, dtype):
            buffer = _FrameBuffer(chunk, size, dtype, device)
        with torch.inference_mode():
            clip = buffer.clip(batch)
            logits, state = model(clip, state)
            probs = torch.softmax(logits[0].float(), dim=1)[:, 1:2]  # (T, 1, h, w)
            if probs.shape[-2:] != (h, w):
                probs = F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)
            out = probs[:, 0].cpu().numpy()
        yield from out


class PngFolder:
    """Writes ``000000.png``, ... into a temporary folder that replaces ``folder`` (absent or
    empty) on success and is removed on failure."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.frames = 0

    def write(self, mask: np.ndarray) -> None:
        """Write one boolean mask as an 8-bit PNG (0 or 255)."""
        path = self.tmp / f"{self.frames:06d}.png"
        if not cv2.imwrite(str(path), mask.astype(np.uint8) * 255):
            raise OSError(f"could not write {path}")
        self.frames += 1

    def __enter__(self) -> PngFolder:
        return self

    def __exit__(
        self, kind: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if kind is None:
                os.replace(self.tmp, self.folder)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def segment_video(
    input_path: str | Path,
    output_path: str | Path,
    loaded: LoadedModel,
    *,
    background: Background | str | None = None,
    masks: str | Path | None = None,
    size: tuple[int, int] | str | None = None,
    threshold: float = 0.5,
    device: torch.device | str | None = None,
    progress: bool = False,
    chunk: int = CHUNK,
    precision: str = "fp32",
    compile: bool = False,
) -> SegmentStats:
    """Segment ``input_path`` with ``loaded``'s network into ``output_path`` (.mp4, same size,
    frame count and rate): the person over ``background`` (a ``Background`` or what
    ``--background`` accepts), or without one the mask video. ``masks``: also write the binary
    masks (``.mp4`` or a PNG folder). ``size``: working size (default: see ``working_size``).
    ``device``: None uses the one the model is on. The network runs through
    ``recseg.inference.optimize.optimize`` at ``precision`` (``compile``: ``torch.compile`` it).
    Outputs appear whole or not at all.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    masks_path = Path(masks) if masks else None
    check_paths(input_path, output_path, masks_path)
    if isinstance(background, str):
        background = open_background(background) if background else None
    info = probe(input_path)
    shape = (info.height, info.width)
    if isinstance(size, str):
        size = parse_size(size)
    work = size or working_size(shape, loaded.size)
    if device is None:
        device = next(loaded.model.parameters()).device
    device = pick_device(device)
    model = optimize(loaded.model, precision, device, compile=compile)
    job = _Job(input_path, output_path, masks_path, info, work, background, threshold, chunk)
    created = _make_folders(output_path.parent, masks_path.parent if masks_path else None)
    try:
        with writing(output_path):
            return _segment(job, model, device, progress)
    except BaseException:
        for folder in reversed(created):  # folders made for outputs that never came
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


@dataclasses.dataclass(frozen=True)
class _Job:
    """What ``segment_video`` resolved: paths, the input's description and the settings."""

    input_path: Path
    output_path: Path
    masks_path: Path | None
    info: VideoInfo
    work: tuple[int, int]
    background: Background | None
    threshold: float
    chunk: int


def _make_folders(*folders: Path | None) -> list[Path]:
    """Create ``folders`` (with their parents); the ones created, outermost first."""
    created: list[Path] = []
    for folder in folders:
        if folder is None:
            continue
        missing = [f for f in (folder, *folder.parents) if not f.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        created += reversed(missing)
    return created


def _segment(
    job: _Job, model: torch.nn.Module, device: torch.device, progress: bool
) -> SegmentStats:
    shape, fps = (job.info.height, job.info.width), job.info.fps
    total = round(job.info.duration * fps) or None
    start = time.perf_counter()
    with ExitStack() as stack:
        out = stack.enter_context(Mp4Writer(job.output_path, fps, shape, rgb=True))
        mask_out = _mask_writer(stack, job.masks_path, fps, shape)
        bar = stack.enter_context(
            tqdm(total=total, unit="frame", file=sys.stderr, disable=not progress, leave=False)
        )
        backdrops = job.background.frames(shape) if job.background is not None else None
        pending: collections.deque[np.ndarray] = collections.deque()
        frames = _remember(decode(job.input_path), pending)
        for prob in stream_masks(frames, model, job.work, device, chunk=job.chunk):
            frame = pending.popleft()
            mask = prob > job.threshold
            if backdrops is None:
                out.write(mask_frame(mask))
            else:
                out.write(composite(frame, next(backdrops), prob))
            if mask_out is not None:
                mask_out.write(mask_frame(mask) if isinstance(mask_out, Mp4Writer) else mask)
            bar.update()
        if out.frames == 0:
            raise VideoError(f"{job.input_path.name}: the video has no frames")
    seconds = time.perf_counter() - start
    return SegmentStats(out.frames, seconds, out.frames / max(seconds, 1e-9), shape, job.work)


def _remember(
    frames: Iterator[tuple[float, np.ndarray]], pending: collections.deque[np.ndarray]
) -> Iterator[np.ndarray]:
    """The decoded RGB frames, each also kept in ``pending`` until its mask is written."""
    for _, frame in frames:
        pending.append(frame)
        yield frame


def _mask_writer(
    stack: ExitStack, masks: Path | None, fps: float, shape: tuple[int, int]
) -> Mp4Writer | PngFolder | None:
    if masks is None:
        return None
    if masks.suffix.lower() == ".mp4":
        return stack.enter_context(Mp4Writer(masks, fps, shape, rgb=True))
    return stack.enter_context(PngFolder(masks))
