"""What machine produced a number: the CPU's name and core count (for reports and benchmarks)."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


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
