"""Per-frame latency and compute of a model the way a video is segmented: batch 1, one frame at
a time, the recurrent state carried, after a warm-up, CUDA synchronised around each frame.

The seed timed without ``cuda.synchronize`` (so it measured kernel launches), on 49 frames of
whatever grid host it got, and reported seconds x 100 as milliseconds; here every number says
which device and how many threads produced it.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclasses.dataclass(frozen=True)
class Latency:
    """Milliseconds per frame from a float CPU frame to a CPU mask (host-device copies in)."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    fps: float  # 1000 / median
    frames: int
    warmup: int
    device: str
    threads: int
    size: tuple[int, int]

    def metrics(self, prefix: str = "test_") -> dict[str, float]:
        return {
            f"{prefix}latency_ms": self.median_ms,
            f"{prefix}latency_p90_ms": self.p90_ms,
            f"{prefix}fps": self.fps,
        }


def device_name(device: torch.device) -> str:
    """``cpu (16 threads)`` or the GPU's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def measure_latency(
    model: nn.Module,
    frames: np.ndarray,
    device: torch.device,
    *,
    timed: int = 50,
    warmup: int = 10,
) -> Latency:
    """Time ``timed`` frames after ``warmup`` untimed ones, cycling through ``frames``
    ``(N, 3, H, W)`` float32 in [0, 1]; each frame: host -> device, forward with the state,
    argmax, device -> host, synchronised."""
    if timed < 1 or frames.shape[0] < 1:
        raise ValueError("measure_latency needs at least one frame to time")
    model.eval()
    state = None
    times: list[float] = []
    for i in range(warmup + timed):
        frame = torch.from_numpy(np.ascontiguousarray(frames[i % frames.shape[0]][None]))
        _sync(device)
        start = time.perf_counter()
        logits, state = model(frame.to(device), state)
        mask = logits.argmax(1).to("cpu")
        _sync(device)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000.0)
        del mask
    ordered = sorted(times)
    median = statistics.median(ordered)
    p90 = ordered[min(len(ordered) - 1, int(np.ceil(0.9 * len(ordered))) - 1)]
    h, w = frames.shape[2:]
    return Latency(
        median_ms=median,
        p90_ms=p90,
        mean_ms=statistics.fmean(ordered),
        fps=1000.0 / median if median > 0 else float("inf"),
        frames=timed,
        warmup=warmup,
        device=device_name(device),
        threads=torch.get_num_threads(),
        size=(int(h), int(w)),
    )


@torch.inference_mode()
def gflops_per_frame(model: nn.Module, size: tuple[int, int]) -> float:
    """Floating-point operations (a multiply-add counts 2) of one frame at ``size`` with a
    recurrent state already present (the steady state of a video), in GFLOPs."""
    model.eval()
    device = next(model.parameters()).device
    frame = torch.rand(1, 3, *size, device=device)
    _, state = model(frame)  # the first frame creates the state; count a later one
    counter = FlopCounterMode(display=False)
    with counter:
        model(frame, state)
    return counter.get_total_flops() / 1e9
