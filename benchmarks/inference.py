"""Streaming batch-1 inference: the reference path against recseg's optimised fp32 and bf16.

Every model is timed frame by frame with its recurrent state carried, from a float frame on the
host to a mask on the host (as ``recseg segment`` and ``evaluate`` run it):

- reference: the network as built, eager, float32, NCHW (the seed's computation), timed by
  ``recseg.evaluation.latency.measure_latency`` like every path (inference mode);
- fp32: ``recseg.inference.optimize(model, "fp32")`` (BatchNorm folded, dead dilated taps
  skipped, Winograd 3x3 convolutions, channels-last, inference mode, ``torch.compile`` when a
  compiler is present);
- bf16: the same in bfloat16 (no Winograd).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from benchmarks.common import Part, ratio
from recseg.config import parse_size
from recseg.evaluation.latency import gflops_per_frame, measure_latency
from recseg.inference.optimize import compiler_available, optimize
from recseg.models import build_model

MODELS = (
    "Deep+_mobile",
    "Deep_mobile_gruV3",
    "Deep_mobile_lstmV3",
    "Deep+_resnet50",
    "Deep_resnet50_gruV3",
)
SIZES = ("270x512", "144x256")
# results.json key -> (model, size, path) of the speedup it stands for
SPEEDUPS = {
    "fp32_speedup_mobile": ("Deep+_mobile", "270x512", "fp32"),
    "fp32_speedup_mobile_gru": ("Deep_mobile_gruV3", "270x512", "fp32"),
    "fp32_speedup_resnet": ("Deep+_resnet50", "270x512", "fp32"),
    "bf16_speedup_mobile": ("Deep+_mobile", "270x512", "bf16"),
    "bf16_speedup_resnet": ("Deep+_resnet50", "270x512", "bf16"),
}
COLUMNS = [
    "model", "size", "path", "ms/frame", "FPS", "speedup", "GFLOPs/frame", "effective GFLOPs",
    "effective GFLOP/s", "% of ceiling", "max rel. diff",
]  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inference-models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--inference-sizes", default=",".join(SIZES), help="comma-separated HxW")
    parser.add_argument(
        "--inference-frames", type=int, default=0, help="timed frames (20; quick 4)"
    )
    parser.add_argument(
        "--compile", choices=("auto", "on", "off"), default="auto",
        help="torch.compile the optimised paths (auto: when a compiler is present)",
    )  # fmt: skip


def _outputs(model: Any, frames: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Logits of three streamed frames (float32, on the host)."""
    state, outs = None, []
    for frame in frames[:3]:
        logits, state = model(frame.to(device), state)
        outs.append(logits.float().cpu())
    return torch.stack(outs)


def _measure(model: Any, frames: list[torch.Tensor], device: torch.device, args) -> float:
    """Median ms/frame as ``recseg evaluate`` times it (``measure_latency``)."""
    timed = args.inference_frames or (4 if args.quick else 20)
    clip = torch.cat(frames).numpy()
    return measure_latency(
        model, clip, device, timed=timed, warmup=2 if args.quick else 5
    ).median_ms


def measure_model(name: str, size: tuple[int, int], args: argparse.Namespace) -> list[dict]:
    """The three paths of one model at one size: a dict per path."""
    device, ceiling = args.device, args.shared.get("ceiling", {})
    torch.manual_seed(0)
    model = build_model(name).eval().to(device)
    frames = [torch.rand(1, 3, *size) for _ in range(4)]
    nominal = gflops_per_frame(model, size)
    effective = gflops_per_frame(optimize(model, "fp32", device, winograd=False).net, size)
    with torch.no_grad():
        reference = _outputs(model, frames, device)
    scale = float(reference.abs().max()) or 1.0
    compile_ = {"auto": compiler_available(device), "on": True, "off": False}[args.compile]
    rows = []
    for path in ("reference", "fp32", "bf16"):
        net = model if path == "reference" else optimize(model, path, device, compile=compile_)
        ms = _measure(net, frames, device, args)
        with torch.no_grad():
            diff = float((_outputs(net, frames, device) - reference).abs().max()) / scale
        rate = effective / (ms / 1000.0)
        peak = ceiling.get("bf16" if path == "bf16" else "fp32")
        rows.append({
            "model": name, "size": f"{size[0]}x{size[1]}", "path": path, "ms": ms,
            "fps": 1000.0 / ms, "gflops": nominal, "effective_gflops": effective,
            "effective_gflops_per_s": rate, "pct_ceiling": ratio(100.0 * rate, peak),
            "max_rel_diff": diff, "compiled": bool(getattr(net, "compiled", False)),
        })  # fmt: skip
        del net
        torch._dynamo.reset()  # free this model's compiled graphs before the next one
    for row in rows:
        row["speedup"] = rows[0]["ms"] / row["ms"]
    return rows


def run(args: argparse.Namespace) -> Part:
    names = [n for n in args.inference_models.split(",") if n]
    sizes = [parse_size(s) for s in args.inference_sizes.split(",") if s]
    results = [row for name in names for size in sizes for row in measure_model(name, size, args)]
    args.shared["inference"] = results
    figures: dict[str, float | None] = {}
    for key, (model, size, path) in SPEEDUPS.items():
        match = [r for r in results if (r["model"], r["size"], r["path"]) == (model, size, path)]
        figures[key] = match[0]["speedup"] if match else None
    rows = [
        [r["model"], r["size"], r["path"] + (" (compiled)" if r["compiled"] else ""), r["ms"],
         r["fps"], r["speedup"], r["gflops"], r["effective_gflops"], r["effective_gflops_per_s"],
         r["pct_ceiling"], f"{r['max_rel_diff']:.1e}"]
        for r in results
    ]  # fmt: skip
    timed = args.inference_frames or (4 if args.quick else 20)
    return Part(
        name="inference",
        columns=COLUMNS,
        rows=rows,
        figures=figures,
        method=(
            f"batch 1, one frame at a time with the recurrent state carried, host frame -> mask on "
            f"the host, median of {timed} frames after a warm-up, random-init weights (seed 0), "
            f"{args.threads} threads on {args.device}"
            + (", CUDA-synchronised" if args.device.type == "cuda" else "")
            + ". GFLOPs from torch.utils.flop_counter on a steady-state frame (multiply-add = 2); "
            "effective GFLOPs leave out dilated taps that only ever read zero padding at that "
            "size. Effective GFLOP/s above the matmul ceiling mean Winograd (fewer multiplies). "
            "max rel. diff: largest |logit - reference logit| over 3 streamed frames / largest "
            "|reference logit|."
        ),
        details={"results": results},
    )
