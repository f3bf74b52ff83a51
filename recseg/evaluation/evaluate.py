"""Evaluate a model on a whole split: every frame once, lanes streaming their clips with state.

The loader pads a clip's last window and idle lanes (label ``IGNORE``); the loss and the metrics
skip padding. The loss is averaged over real frames; the metrics are split-level
(:class:`recseg.evaluation.metrics.SegmentationMetrics`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import torch
from torch import nn
from tqdm import tqdm

from recseg.data.loader import TemporalLoader
from recseg.evaluation.frames import FrameRecorder
from recseg.evaluation.metrics import SegmentationMetrics
from recseg.faults import fail_point
from recseg.models.state import State

# the split-level metrics an evaluation reports (besides "loss")
METRICS = ("miou", "fg_iou", "bg_iou", "dice", "fg_dice", "pixel_accuracy",
           "per_class_accuracy", "flicker", "frames")  # fmt: skip


@dataclasses.dataclass
class Samples:
    """A few frames of the split with their labels and predicted foreground probabilities."""

    frames: torch.Tensor  # (N, 3, H, W)
    labels: torch.Tensor  # (N, H, W)
    probs: torch.Tensor  # (N, H, W)


@dataclasses.dataclass
class EvalResult:
    metrics: dict[str, float]  # loss, miou, fg_iou, ... (no split prefix)
    samples: Samples | None
    seconds: float


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """float16 autocast on CUDA when ``amp``; a no-op elsewhere."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _pick_samples(batch: dict, logits: torch.Tensor, count: int) -> Samples | None:
    """The last real frame of the first ``count`` lanes that have one."""
    valid = batch["valid"]
    picks = [(b, int(valid[b].nonzero().max())) for b in range(valid.shape[0]) if valid[b].any()]
    picks = picks[:count]
    if not picks:
        return None
    lanes, frames = zip(*picks, strict=True)
    lanes_t, frames_t = torch.tensor(lanes), torch.tensor(frames)
    probs = torch.softmax(logits[lanes_t, frames_t].float(), dim=1)[:, 1]
    return Samples(
        frames=batch["frames"][lanes_t, frames_t].cpu(),
        labels=batch["labels"][lanes_t, frames_t].cpu(),
        probs=probs.cpu(),
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: TemporalLoader,
    loss_fn: nn.Module,
    device: torch.device,
    *,
    amp: bool = False,
    samples: int = 4,
    progress: bool = False,
    recorder: FrameRecorder | None = None,
) -> EvalResult:
    """Loss and metrics of ``model`` on ``loader``'s split (evaluation mode, no augmentation);
    ``recorder`` also collects per-frame counts.

    Leaves the model in eval mode; the caller switches back to training.
    """
    start = time.perf_counter()
    model.eval()
    loader.set_epoch(0)
    metrics = SegmentationMetrics()
    state: State | None = None
    loss_sum, frames_seen, picked = 0.0, 0, None
    for batch in tqdm(loader, desc="evaluate", unit="step", leave=False, disable=not progress):
        frames = batch["frames"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        reset = batch["reset"].to(device)
        with autocast(device, amp):
            logits, state = model(frames, state, reset)
        real = int(batch["valid"].sum())
        if real:
            loss_sum += float(loss_fn(logits.float(), labels)) * real
            frames_seen += real
        pred = logits.argmax(2)
        metrics.update(pred, labels, reset)
        if recorder is not None:
            recorder.update(pred, labels, batch)
        fail_point("evaluate")
        if picked is None and samples:
            picked = _pick_samples(batch, logits, samples)
    result = {k: v for k, v in metrics.compute().items() if k in METRICS}
    result["loss"] = loss_sum / frames_seen if frames_seen else float("nan")
    return EvalResult(result, picked, time.perf_counter() - start)
