"""``python -m benchmarks [PART ...]``: measure recseg where users wait, print markdown tables
and write ``benchmarks/results.json``. ``make bench`` runs every part (about 16 min on 2 cores),
``make bench-quick`` every part in a reduced form (about 3 min, into
``benchmarks/results-quick.json``).

A run of every part replaces the results file: it then holds that run's figures only, with its
date, machine, commit and wall seconds (``run``). A run of some parts merges them into the file;
each part keeps its own date, machine and wall seconds (``parts.NAME``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import NEVER_REACHED, REPO, TARGETS, Part, machine, part_started

PARTS = (
    "ceiling", "inference", "training", "loader", "preprocess", "tracking", "accuracy", "learning",
)  # fmt: skip
DEFAULT_OUT = REPO / "benchmarks" / "results.json"
QUICK_OUT = REPO / "benchmarks" / "results-quick.json"  # --quick: never the full results
# Seconds per part on a 2-core CPU with a cold torch.compile cache (full, quick): the progress
# lines' estimates when the results file holds no earlier time of the part on this many cores.
ESTIMATES: dict[str, tuple[float, float]] = {
    "ceiling": (5, 2), "inference": (360, 5), "training": (50, 25), "loader": (45, 12),
    "preprocess": (20, 10), "tracking": (105, 45), "accuracy": (10, 10), "learning": (400, 45),
}  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0].strip("`")
    )
    parser.add_argument(
        "parts", nargs="*", metavar="PART", help=f"default: all of {', '.join(PARTS)}"
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer frames/steps/videos (a smoke run)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: the cores)")
    parser.add_argument(
        "--out", type=Path, default=None,
        help="results file: replaced by a run of every part, else merged (default "
        "benchmarks/results.json; with --quick benchmarks/results-quick.json)",
    )  # fmt: skip
    parser.add_argument(
        "--work", type=Path, default=None, help="scratch folder (default: a temp one)"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    for name in PARTS:
        _module(name).add_arguments(parser)
    args = parser.parse_args(argv)
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; parts: {', '.join(PARTS)}")
    if args.out is None:
        args.out = QUICK_OUT if args.quick else DEFAULT_OUT
    return args


def _module(name: str) -> Any:
    return importlib.import_module(f"benchmarks.{name}")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return torch.device(name)


def summary(figures: dict[str, Any]) -> tuple[list[list[Any]], bool]:
    """Rows of the targets table and whether every measured target is met."""
    rows, ok = [], True
    for key, (op, target) in TARGETS.items():
        value = figures.get(key)
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        if value is None and key in NEVER_REACHED and key in figures:  # measured, never got there
            met = False
        ok = ok and met is not False
        rows.append(
            [key, value, f"{op} {target:g}", {None: "not run", True: "yes", False: "NO"}[met]]
        )
    return rows, ok


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_results(
    path: Path,
    parts: list[Part],
    info: dict[str, Any],
    *,
    wall_s: float | None = None,
    quick: bool = False,
) -> dict[str, Any]:
    """Write ``parts`` to the results file, atomically. When they are every part of ``PARTS``
    the file is replaced (that run's figures only); otherwise they are merged into it (the
    other parts' earlier entries, each with its own date and machine, stay)."""
    complete = {p.name for p in parts} >= set(PARTS)
    stored = {} if complete else _load(path).get("parts", {})
    when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    for part in parts:
        stored[part.name] = {"machine": info, "measured": when, **part.to_dict()}
    order = {name: k for k, name in enumerate(PARTS)}
    stored = dict(sorted(stored.items(), key=lambda kv: order.get(kv[0], len(order))))
    figures = {k: v for entry in stored.values() for k, v in entry.get("figures", {}).items()}
    rows, _ = summary(figures)
    command = " ".join(["python -m benchmarks", *sys.argv[1:]])
    data = {
        **{key: figures.get(key) for key in TARGETS},
        "targets": {r[0]: {"value": r[1], "target": r[2], "met": r[3]} for r in rows},
        "figures": figures,
        "machine": info,
        "command": command,
        # the run that wrote the file last; "complete": every part in the file is this run's
        "run": {
            "date": when, "machine": info, "command": command, "quick": quick,
            "parts": [p.name for p in parts], "wall_s": wall_s, "complete": complete,
        },
        "parts": stored,
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return data


def estimates(previous: dict[str, Any], args: argparse.Namespace) -> dict[str, float]:
    """Seconds each part is expected to take: its wall seconds in ``previous`` (the results
    file) when measured on as many cores and the same kind of device, else ``ESTIMATES``."""
    out = {name: ESTIMATES.get(name, (60, 20))[1 if args.quick else 0] for name in PARTS}
    for name, entry in previous.get("parts", {}).items():
        seen = entry.get("machine", {})
        same = seen.get("cores") == _cores() and seen.get("device", "cpu").split(":")[0] == (
            args.device.type
        )
        if name in out and same and isinstance(entry.get("wall_s"), int | float):
            out[name] = float(entry["wall_s"])
    return out


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def run_parts(args: argparse.Namespace, expected: dict[str, float] | None = None) -> list[Part]:
    """Run the parts named in ``args.parts`` (default: all), each with a progress line before
    (``[i/N] part — est. ~X s``) and after (its time and the total so far)."""
    names = list(args.parts or PARTS)
    expected = expected or {}
    left = sum(expected.get(n, 0.0) for n in names)
    print(f"{len(names)} part(s), est. ~{_duration(left)} in all", flush=True)
    parts, begin = [], time.perf_counter()
    for i, name in enumerate(names, 1):
        est = expected.get(name)
        print(f"\n[{i}/{len(names)}] {name} — est. ~{_duration(est or 0)}", flush=True)
        print(f"\n## {name}\n", flush=True)
        part_started()
        start = time.perf_counter()
        part = _module(name).run(args)
        part.wall_s = time.perf_counter() - start
        parts.append(part)
        print(part.markdown())
        print(f"\n{part.method}", flush=True)
        left -= est or 0.0
        total = time.perf_counter() - begin
        tail = f", ~{_duration(left)} to go" if i < len(names) else ""
        print(
            f"\n[{i}/{len(names)}] {name} done in {_duration(part.wall_s)} "
            f"(total {_duration(total)}{tail})",
            flush=True,
        )
    return parts


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args = parse_args(argv)
    args.device = _device(args.device)
    args.threads = args.threads or _cores()
    torch.set_num_threads(args.threads)
    args.shared = {}
    info = machine(args.device)
    print(f"# recseg benchmarks{' (quick)' if args.quick else ''}\n")
    print(", ".join(f"{k}: {v}" for k, v in info.items() if v not in (None, [])))
    expected = estimates(_load(args.out), args)
    begin = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recseg-bench-") as tmp:
        args.work = args.work or Path(tmp)
        args.work.mkdir(parents=True, exist_ok=True)
        parts = run_parts(args, expected)
    wall = time.perf_counter() - begin
    data = write_results(args.out, parts, info, wall_s=wall, quick=args.quick)
    rows, ok = summary(data["figures"])
    print("\n## targets\n")
    print(Part("targets", ["figure", "value", "target", "met"], rows, {}, "").markdown())
    how = "replaced (every part)" if data["run"]["complete"] else "merged"
    print(f"\nresults: {args.out} ({how}); {_duration(wall)} in all")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
