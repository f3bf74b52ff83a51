"""The machine: which device a command computes on (``--device``), and what machine produced a
number (the CPU's name and core count, for reports and benchmarks)."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING

from recseg.errors import InputError

if TYPE_CHECKING:
    import torch


def pick_device(name: str | torch.device | None) -> torch.device:
    """``auto`` (or None): CUDA when available, else the CPU; a CUDA device without CUDA ->
    ``InputError``."""
    import torch  # here: this module stays light for the commands that only report the CPU

    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    return device


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def made_on() -> str:
    """ "Made 2026-11-24 15:02 UTC on HOST (CPU, N cores, Python X)"."""
    return (
        f"Made {time.strftime('%Y-%m-%d %H:%M %Z')} on {platform.node()} ({cpu_model()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()})."
    )
