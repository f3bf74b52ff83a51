"""What every benchmark part shares: the machine description, timing, and the result type."""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from recseg.machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
# results.json key -> (comparison, target): the targets for a 2-core CPU
TARGETS: dict[str, tuple[str, float]] = {
    "fp32_speedup_mobile": (">=", 1.5),
    "fp32_speedup_mobile_gru": (">=", 1.5),
    "fp32_speedup_resnet": (">=", 1.5),
    "bf16_speedup_mobile": (">=", 3.0),
    "bf16_speedup_resnet": (">=", 3.0),
    "bf16_iou_drop_points": ("<=", 0.5),
    "loader_frames_per_s": (">=", 470.0),
    "loader_over_train_step": (">=", 5.0),
    "tracking_overhead_pct": ("<=", 2.0),
    "preprocess_realtime_x": (">=", 2.0),
    # seconds of the demo recipe's training until held-out fg IoU >= 0.80 (the demo's budget)
    "time_to_working_model_s": ("<=", 300.0),
}
# "time to ..." figures: None after a measurement means the target was never reached (missed)
NEVER_REACHED = frozenset({"time_to_working_model_s"})
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


@dataclasses.dataclass
class Part:
    """One part's outcome: a markdown table (``columns`` + ``rows``), the key figures for
    ``results.json`` (``figures``), and how the numbers were taken (``method``)."""

    name: str
    columns: list[str]
    rows: list[list[Any]]
    figures: dict[str, float | None]
    method: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    wall_s: float | None = None  # the part's wall seconds (set by ``python -m benchmarks``)

    def markdown(self) -> str:
        head = "| " + " | ".join(self.columns) + " |"
        rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.columns))) + "|"
        body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in self.rows]
        return "\n".join([head, rule, *body])

    def to_dict(self) -> dict[str, Any]:
        rows = [dict(zip(self.columns, row, strict=True)) for row in self.rows]
        timing = {} if self.wall_s is None else {"wall_s": self.wall_s}
        return {
            "method": self.method, "figures": self.figures, **timing, "rows": rows, **self.details
        }  # fmt: skip


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return (
            f"{value:.3g}"
            if abs(value) < 10
            else f"{value:,.0f}"
            if value >= 1000
            else f"{value:.1f}"
        )
    return str(value)


def cpu_flags() -> list[str]:
    """The performance-relevant ISA flags this CPU reports (of ``CPU_FLAGS``)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    return [f for f in CPU_FLAGS if f in flags]


def machine(device: torch.device) -> dict[str, Any]:
    """Where the numbers come from: CPU, cores, threads, device, versions, commit."""
    import mlflow
    import torchvision

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "mlflow": mlflow.__version__,
        "onednn": torch.backends.mkldnn.is_available(),
        "commit": _commit(),
    }
    return info


def _git(*args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10, check=True
    )
    return out.stdout.strip()


def _commit() -> str | None:
    """The checkout's commit, ``+dirty`` with uncommitted changes to tracked files."""
    try:
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return _git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


_PART_START = [time.perf_counter()]


def part_started() -> None:
    """Restart the clock of ``note`` (``python -m benchmarks`` calls it before each part)."""
    _PART_START[0] = time.perf_counter()


def note(message: str) -> None:
    """A progress line inside a part: seconds since the part started, then ``message``."""
    print(f"  [{time.perf_counter() - _PART_START[0]:4.0f} s] {message}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    fn: Callable[[], object], device: torch.device, *, warmup: int, timed: int
) -> list[float]:
    """Seconds per call of ``fn`` over ``timed`` calls after ``warmup`` untimed ones, each
    synchronised on CUDA."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(timed):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is missing or ``b`` is zero."""
    if a is None or b is None or b == 0 or a != a or b != b:
        return None
    return a / b
