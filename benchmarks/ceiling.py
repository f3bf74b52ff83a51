"""The yardstick: dense matrix-multiply GFLOP/s in float32 and bfloat16 on this device."""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import Part, median, time_calls


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ceiling-n",
        type=int,
        default=0,
        help="matrix side (default 2048 on a CPU, 8192 on a GPU)",
    )


def matmul_gflops(dtype: torch.dtype, device: torch.device, n: int, timed: int) -> float:
    """GFLOP/s of ``n x n @ n x n`` (2 n^3 FLOPs), median of ``timed`` products."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    seconds = median(time_calls(lambda: a @ b, device, warmup=3, timed=timed))
    return 2 * n**3 / seconds / 1e9


def run(args: argparse.Namespace) -> Part:
    n = args.ceiling_n or (8192 if args.device.type == "cuda" else 2048)
    timed = 5 if args.quick else 15
    rates = {name: matmul_gflops(dtype, args.device, n, timed) for name, dtype in
             (("fp32", torch.float32), ("bf16", torch.bfloat16))}  # fmt: skip
    args.shared["ceiling"] = rates
    rows = [[name, f"{n}x{n}", rate] for name, rate in rates.items()]
    return Part(
        name="ceiling",
        columns=["dtype", "matmul", "GFLOP/s"],
        rows=rows,
        figures={"ceiling_fp32_gflops": rates["fp32"], "ceiling_bf16_gflops": rates["bf16"]},
        method=f"torch.matmul of two {n}x{n} matrices, median of {timed} after 3 warm-ups, "
        f"{args.threads} threads" + (", CUDA-synchronised" if args.device.type == "cuda" else ""),
    )
