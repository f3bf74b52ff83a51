"""Mixed precision for training: float16 autocast (with a gradient scaler) on CUDA, bfloat16
autocast on CPUs whose oneDNN kernels run bfloat16 natively (AVX-512 BF16 / AMX): about 1.5x
the fp32 steps per second on 2 cores at the same foreground IoU per step (docs/recipe.md).
Weights, optimiser state and the loss stay float32."""

from __future__ import annotations

import contextlib

import torch

OFF, CUDA_FP16, CPU_BF16 = "off", "fp16", "bf16"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has the AVX-512 BF16 or AMX-BF16 instructions (from /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = next((ln for ln in fh if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def amp_mode(device: torch.device, amp: bool) -> str:
    """The mixed precision a run uses: ``fp16`` (CUDA), ``bf16`` (a CPU with native bf16) or
    ``off``."""
    if not amp:
        return OFF
    if device.type == "cuda":
        return CUDA_FP16
    return CPU_BF16 if device.type == "cpu" and cpu_has_native_bf16() else OFF


def train_autocast(device: torch.device, mode: str) -> contextlib.AbstractContextManager:
    """The autocast context of a training step under ``mode``."""
    if mode == CUDA_FP16:
        return torch.autocast("cuda", dtype=torch.float16)
    if mode == CPU_BF16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
