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
import time
from typing import Any

import torch

from benchmarks.common import Part, note, ratio
from recseg.config import parse_size
from recseg.evaluation.latency import gflops_per_frame, measure_latency
from recseg.inference.optimize import compiler_available, optimize
from recseg.models import build_model

MODELS = (  # every model (the training part's default; --inference-models all)
    "Deep+_mobile",
    "Deep_mobile_gruV3",
    "Deep_mobile_lstmV3",
    "Deep+_resnet50",
    "Deep_resnet50_gruV3",
)
SIZES = ("270x512", "144x256")  # --inference-sizes all
# results.json key -> (model, size, path) of the speedup it stands for
SPEEDUPS = {
    "fp32_speedup_mobile": ("Deep+_mobile", "270x512", "fp32"),
    "fp32_speedup_mobile_gru": ("Deep_mobile_gruV3", "270x512", "fp32"),
    "fp32_speedup_resnet": ("Deep+_resnet50", "270x512", "fp32"),
    "bf16_speedup_mobile": ("Deep+_mobile", "270x512", "bf16"),
    "bf16_speedup_resnet": ("Deep+_resnet50", "270x512", "bf16"),
}
PATHS = ("reference", "fp32", "bf16")
# By default the models the targets name, at the size they name, and of those the paths they name
# (with the reference): each compiled path costs 40-100 s of torch.compile on 2 cores with a cold
# cache, so every path of every model at both sizes (`--inference-models all --inference-sizes
# all`) takes about 25 min there. Quick: one model, not compiled unless --compile on.
DEFAULT_MODELS = tuple(dict.fromkeys(model for model, _, _ in SPEEDUPS.values()))
DEFAULT_SIZES = tuple(dict.fromkeys(size for _, size, _ in SPEEDUPS.values()))
QUICK_MODELS = ("Deep+_mobile",)
COLUMNS = [
    "model", "size", "path", "ms/frame", "FPS", "speedup", "GFLOPs/frame", "effective GFLOPs",
    "effective GFLOP/s", "% of ceiling", "max rel. diff",
]  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--inference-models", default="",
        help="comma-separated, or all (default: those the targets name, "
        f"{','.join(DEFAULT_MODELS)}; quick: {','.join(QUICK_MODELS)})",
    )  # fmt: skip
    parser.add_argument(
        "--inference-sizes", default="",
        help=f"comma-separated HxW, or all ({','.join(SIZES)}); default {','.join(DEFAULT_SIZES)}",
    )  # fmt: skip
    parser.add_argument(
        "--inference-frames", type=int, default=0, help="timed frames (10; quick 4)"
    )
    parser.add_argument(
        "--compile", choices=("auto", "on", "off"), default=None,
        help="torch.compile the optimised paths (default auto: when a compiler is present; "
        "quick: off)",
    )  # fmt: skip


def _outputs(model: Any, frames: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Logits of three streamed frames (float32, on the host)."""
    state, outs = None, []
    for frame in frames[:3]:
        logits, state = model(frame.to(device), state)
        outs.append(logits.float().cpu())
    return torch.stack(outs)


def _timed_frames(args: argparse.Namespace) -> int:
    return args.inference_frames or (4 if args.quick else 10)


def _first_frame(model: Any, frames: list[torch.Tensor], device: torch.device) -> float:
    """Seconds of the first frame through ``model`` (``torch.compile`` compiles here)."""
    start = time.perf_counter()
    with torch.no_grad():
        logits, _ = model(frames[0].to(device), None)
        logits.argmax(1).to("cpu")
    return time.perf_counter() - start


def _measure(model: Any, frames: list[torch.Tensor], device: torch.device, args) -> float:
    """Median ms/frame as ``recseg evaluate`` times it (``measure_latency``)."""
    clip = torch.cat(frames).numpy()
    return measure_latency(
        model, clip, device, timed=_timed_frames(args), warmup=2 if args.quick else 3
    ).median_ms


def paths_of(name: str, size: tuple[int, int], explicit: bool) -> tuple[str, ...]:
    """Every path when the models were asked for (``explicit``), else the reference and the
    paths a target names for ``name`` at ``size`` (all three when none does)."""
    named = {p for m, s, p in SPEEDUPS.values() if (m, s) == (name, f"{size[0]}x{size[1]}")}
    return (
        PATHS if explicit or not named else tuple(p for p in PATHS if p == PATHS[0] or p in named)
    )


def measure_model(
    name: str, size: tuple[int, int], args: argparse.Namespace, paths: tuple[str, ...] = PATHS
) -> list[dict]:
    """``paths`` (the reference first) of one model at one size: a dict per path."""
    device, ceiling = args.device, args.shared.get("ceiling", {})
    torch.manual_seed(0)
    model = build_model(name).eval().to(device)
    frames = [torch.rand(1, 3, *size) for _ in range(4)]
    nominal = gflops_per_frame(model, size)
    effective = gflops_per_frame(optimize(model, "fp32", device, winograd=False).net, size)
    with torch.no_grad():
        reference = _outputs(model, frames, device)
    scale = float(reference.abs().max()) or 1.0
    mode = args.compile or ("off" if args.quick else "auto")
    compile_ = {"auto": compiler_available(device), "on": True, "off": False}[mode]
    rows = []
    for path in paths:
        what = f"{name} {size[0]}x{size[1]} {path}"
        compiling = path != "reference" and compile_
        note(f"{what}: first frame{' (torch.compile)' if compiling else ''} ...")
        net = model if path == "reference" else optimize(model, path, device, compile=compile_)
        first = _first_frame(net, frames, device)
        ms = _measure(net, frames, device, args)
        note(f"{what}: first frame {first:.1f} s, {ms:.0f} ms/frame")
        with torch.no_grad():
            diff = float((_outputs(net, frames, device) - reference).abs().max()) / scale
        rate = effective / (ms / 1000.0)
        peak = ceiling.get("bf16" if path == "bf16" else "fp32")
        rows.append({
            "model": name, "size": f"{size[0]}x{size[1]}", "path": path, "ms": ms,
            "fps": 1000.0 / ms, "gflops": nominal, "effective_gflops": effective,
            "effective_gflops_per_s": rate, "pct_ceiling": ratio(100.0 * rate, peak),
            "max_rel_diff": diff, "compiled": bool(getattr(net, "compiled", False)),
            "first_frame_s": first,
        })  # fmt: skip
        del net
        torch._dynamo.reset()  # free this model's compiled graphs before the next one
    for row in rows:
        row["speedup"] = rows[0]["ms"] / row["ms"]
    return rows


def _choice(value: str, every: tuple[str, ...], default: tuple[str, ...]) -> list[str]:
    """A comma-separated option: ``all`` is ``every``, empty is ``default``."""
    if value.strip() == "all":
        return list(every)
    return [v.strip() for v in value.split(",") if v.strip()] or list(default)


def run(args: argparse.Namespace) -> Part:
    names = _choice(args.inference_models, MODELS, QUICK_MODELS if args.quick else DEFAULT_MODELS)
    sizes = [parse_size(s) for s in _choice(args.inference_sizes, SIZES, DEFAULT_SIZES)]
    explicit = bool(args.inference_models.strip())
    results = [
        row for name in names for size in sizes
        for row in measure_model(name, size, args, paths_of(name, size, explicit))
    ]  # fmt: skip
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
    timed = _timed_frames(args)
    return Part(
        name="inference",
        columns=COLUMNS,
        rows=rows,
        figures=figures,
        method=(
            f"batch 1, one frame at a time with the recurrent state carried, host frame -> mask on "
            f"the host, median of {timed} frames after the first frame (where torch.compile "
            f"compiles; its seconds: details first_frame_s) and {2 if args.quick else 3} warm-up "
            f"frames, random-init weights (seed 0), "
            f"{args.threads} threads on {args.device}"
            + (", CUDA-synchronised" if args.device.type == "cuda" else "")
            + ". GFLOPs from torch.utils.flop_counter on a steady-state frame (multiply-add = 2); "
            "effective GFLOPs leave out dilated taps that only ever read zero padding at that "
            "size. Effective GFLOP/s above the matmul ceiling mean Winograd (fewer multiplies). "
            "max rel. diff: largest |logit - reference logit| over 3 streamed frames / largest "
            "|reference logit|."
            + (
                ""
                if explicit
                else " The models, sizes and paths the targets name (`--inference-"
                "models all --inference-sizes all`: every path of every model at both sizes)."
            )
        ),
        details={"results": results},
    )
