"""Everything ``recseg evaluate`` measures for one model on a clip store: split metrics (the
training code's metrics), latency, parameters and GFLOPs per frame, a prediction grid and a
short input | truth | prediction video."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import torch

from recseg.data.footage.video import Mp4Writer
from recseg.data.loader import make_loader
from recseg.data.store import ClipStore, read_meta
from recseg.errors import InputError
from recseg.evaluation.evaluate import evaluate
from recseg.evaluation.frames import FrameRecorder, split_metrics, summaries
from recseg.evaluation.latency import Latency, gflops_per_frame, measure_latency
from recseg.evaluation.samples import encode_png, prediction_panel
from recseg.inference.optimize import optimize
from recseg.models.deeplab import RecurrentDeepLab, count_parameters
from recseg.models.loaded import LoadedModel
from recseg.tracking.evaluate_config import EvaluateConfig
from recseg.training.losses import build_loss

VIDEO_FPS = 15.0
TILE = 256  # pixels per tile of the video (input, truth, prediction)


@dataclasses.dataclass
class ModelEvaluation:
    """What one evaluation logs: metrics (prefixed), settings, and the visual results."""

    metrics: dict[str, float]
    info: dict[str, Any]
    latency: Latency | None
    grid_png: bytes | None
    video_mp4: bytes | None
    per_clip: dict[str, Any] = dataclasses.field(default_factory=dict)  # first split's clips


def split_prefix(split: str) -> str:
    """``test`` -> ``test_``; the others -> ``eval_train_`` / ``eval_val_`` (training already
    logs per-epoch ``train_*`` and ``val_*``)."""
    return "test_" if split == "test" else f"eval_{split}_"


def eval_size(cfg: EvaluateConfig, loaded: LoadedModel, store: ClipStore) -> tuple[int, int]:
    """--size, else the size the model was trained at, else the store's frame size."""
    return cfg.frame_size or loaded.size or store.size


def check_splits(store: ClipStore, splits: tuple[str, ...]) -> None:
    """``InputError`` when a split to score has no clips."""
    for split in splits:
        if not store.clips(split):
            raise InputError(f"--data {store.root}: the store has no {split} clips to evaluate")


def _loader(store: ClipStore, split: str, cfg: EvaluateConfig, size: tuple[int, int], lanes: int):
    lanes = max(1, min(lanes, len(store.clips(split))))
    return make_loader(
        store,
        split,
        batch_size=lanes,
        seq_len=cfg.seq_len,
        train=False,
        seed=cfg.seed,
        num_workers=cfg.num_workers,
        size=size,
    )


@torch.inference_mode()
def prediction_video(
    model: RecurrentDeepLab,
    store: ClipStore,
    split: str,
    size: tuple[int, int],
    frames: int,
    device: torch.device,
) -> bytes:
    """An H.264 mp4 of the split's first ``frames`` frames, streamed clip after clip with the
    state reset at each clip start: input | truth | prediction over the input."""
    loader = make_loader(store, split, batch_size=1, seq_len=8, train=False, size=size)
    state = None
    with tempfile.TemporaryDirectory(prefix="recseg-video-") as tmp:
        path = Path(tmp) / "predictions.mp4"
        with contextlib.ExitStack() as stack:
            writer: Mp4Writer | None = None
            for batch in loader:
                logits, state = model(batch["frames"].to(device), state, batch["reset"].to(device))
                valid = batch["valid"][0]
                probs = torch.softmax(logits[0].float(), dim=1)[:, 1].cpu()[valid]
                for frame, label, prob in zip(
                    batch["frames"][0][valid], batch["labels"][0][valid], probs, strict=True
                ):
                    row = prediction_panel(frame[None], label[None], prob[None], width=TILE)
                    h, w = row.shape[0] // 2 * 2, row.shape[1] // 2 * 2  # yuv420p: even sizes
                    if writer is None:
                        writer = stack.enter_context(Mp4Writer(path, VIDEO_FPS, (h, w)))
                    writer.write(cv2.cvtColor(row[:h, :w], cv2.COLOR_RGB2BGR))
                    if writer.frames >= frames:
                        break
                if writer is not None and writer.frames >= frames:
                    break
        return path.read_bytes() if writer is not None else b""


def evaluate_model(
    loaded: LoadedModel,
    store: ClipStore,
    cfg: EvaluateConfig,
    loss_name: str,
    device: torch.device,
    progress: bool = False,
    echo: Callable[[str], None] = print,
) -> ModelEvaluation:
    """Score ``loaded`` on each split of ``cfg``, time it, and draw its predictions.

    The latency is that of recseg's optimised path at ``cfg.precision`` (what ``recseg segment``
    runs); the scores are the plain network's at fp32 (the optimised fp32 path agrees within
    1e-4), the optimised network's at bf16."""
    plain = loaded.model.to(device).eval()
    needed = cfg.precision != "fp32" or cfg.latency_frames > 0  # else only the plain one runs
    fast = optimize(plain, cfg.precision, device, compile=cfg.compile) if needed else None
    model = plain if cfg.precision == "fp32" else fast
    size = eval_size(cfg, loaded, store)
    loss_fn = build_loss(loss_name)
    metrics: dict[str, float] = {}
    grid, per_clip = None, {}
    for split in cfg.split_names:
        recorder = FrameRecorder()
        result = evaluate(
            model,
            _loader(store, split, cfg, size, cfg.batch_size),
            loss_fn,
            device,
            samples=4,
            progress=progress,
            recorder=recorder,
        )
        prefix = split_prefix(split)
        clips = summaries(recorder, split_events(store, split))
        frame_metrics = {k: v for k, v in split_metrics(clips).items() if k != "fg_iou"}
        metrics.update({f"{prefix}{k}": v for k, v in {**result.metrics, **frame_metrics}.items()})
        if split == cfg.split_names[0]:
            per_clip = clips
            if result.samples is not None:
                s = result.samples
                grid = encode_png(prediction_panel(s.frames, s.labels, s.probs))
    first = cfg.split_names[0]
    latency = None
    if cfg.latency_frames:
        batch = next(iter(_loader(store, first, cfg, size, 1)))
        clip = batch["frames"][0][batch["valid"][0]].numpy()
        latency = measure_latency(fast, clip, device, timed=cfg.latency_frames, warmup=cfg.warmup)
        metrics.update(latency.metrics(split_prefix(first)))
    metrics["params_total"] = float(count_parameters(plain))
    metrics["gflops"] = gflops_per_frame(plain, size)
    video = None
    if cfg.video_frames:
        video = prediction_video(model, store, first, size, cfg.video_frames, device) or None
    info = {
        "model": loaded.name,
        "model_uri": loaded.uri,
        "size": f"{size[0]}x{size[1]}",
        "splits": list(cfg.split_names),
        "loss": loss_name,
        "device": f"{latency.device if latency else device}, {cfg.precision}",
        "precision": cfg.precision,
        "threads": torch.get_num_threads(),
        "store": str(store.root),
    }
    return ModelEvaluation(metrics, info, latency, grid, video, per_clip)


def split_events(store: ClipStore, split: str) -> dict[str, list[int] | None]:
    """Per clip id, the per-frame event codes its metadata records (None: none recorded)."""
    return {r.id: read_meta(store.path(r)).get("events") for r in store.clips(split)}
