"""Training throughput: frames/s of a full step (forward over a B x T clip, back-propagation
through time, optimiser) and the step's peak memory, the way ``recseg train`` runs it."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch

from benchmarks.common import Part, median, note, time_calls
from benchmarks.inference import MODELS
from recseg.config import parse_size
from recseg.models import build_model
from recseg.models.state import detach_state
from recseg.training.losses import build_loss
from recseg.training.optim import build_optimizer

COLUMNS = ["model", "B x T x size", "s/step", "frames/s", "peak memory (MiB)"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--training-models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--training-size", default="144x256", help="HxW")
    parser.add_argument("--training-batch", default="2x4", help="B x T")
    parser.add_argument("--training-steps", type=int, default=0, help="timed steps (3; quick 1)")


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):  # Linux: clears the process's peak resident set size
        Path("/proc/self/clear_refs").write_text("5")


def _peak_mib(device: torch.device) -> float | None:
    """Peak CUDA memory allocated, or the process's peak resident set (VmHWM) on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        line = next(ln for ln in status if ln.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    return None


def train_step_rate(
    name: str, batch: tuple[int, int], size: tuple[int, int], device: torch.device, steps: int
) -> dict:
    """Frames/s and peak memory of ``name``'s training step (as ``recseg train``: channels-last,
    CrossDice, Nesterov SGD, state carried and detached between steps): the median of ``steps``
    timed steps after one warm-up."""
    torch.manual_seed(0)
    model = build_model(name).train().to(device, memory_format=torch.channels_last)
    loss_fn = build_loss("CrossDice").to(device)
    optimizer = build_optimizer("sgd", model, 0.01, 1e-4)
    b, t = batch
    frames = torch.rand(b, t, 3, *size, device=device)
    labels = torch.randint(0, 2, (b, t, *size), device=device)
    reset = torch.zeros(b, dtype=torch.bool, device=device)
    box: dict = {"state": None}

    def step() -> None:
        logits, state = model(frames, box["state"], reset)
        loss = loss_fn(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        box["state"] = detach_state(state)

    _reset_peak(device)
    seconds = median(time_calls(step, device, warmup=1, timed=steps))
    return {
        "model": name,
        "seconds": seconds,
        "fps": b * t / seconds,
        "peak_mib": _peak_mib(device),
    }


def run(args: argparse.Namespace) -> Part:
    names = [n for n in args.training_models.split(",") if n]
    size = parse_size(args.training_size)
    b, t = (int(v) for v in args.training_batch.lower().split("x"))
    steps = args.training_steps or (1 if args.quick else 3)
    results = []
    for k, name in enumerate(names, 1):
        note(f"{name} ({k}/{len(names)}): 1 warm-up + {steps} timed step(s) ...")
        results.append(train_step_rate(name, (b, t), size, args.device, steps))
        note(f"{name}: {results[-1]['seconds']:.2f} s/step")
    args.shared["training"] = results
    shape = f"{b} x {t} x {size[0]}x{size[1]}"
    rows = [[r["model"], shape, r["seconds"], r["fps"], r["peak_mib"]] for r in results]
    return Part(
        name="training",
        columns=COLUMNS,
        rows=rows,
        figures={f"train_fps_{r['model']}": r["fps"] for r in results},
        method=(
            f"one step = forward over a {b}x{t} clip, CrossDice loss, backward through time, "
            f"Nesterov SGD; median of {steps} step(s) after one warm-up, random frames, "
            f"channels-last, {args.threads} threads on {args.device}. Peak memory: "
            + ("torch.cuda.max_memory_allocated" if args.device.type == "cuda" else
               "the process's peak resident set (VmHWM, reset per model), interpreter included")
        ),
        details={"results": results},
    )  # fmt: skip
