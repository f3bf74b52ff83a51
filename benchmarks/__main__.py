"""``python -m benchmarks [PART ...]``: measure recseg where users wait, print markdown tables
and write ``benchmarks/results.json``. ``make bench`` runs every part; see benchmarks/README.md.
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

from benchmarks.common import NEVER_REACHED, REPO, TARGETS, Part, machine

PARTS = (
    "ceiling", "inference", "training", "loader", "preprocess", "tracking", "accuracy", "learning",
)  # fmt: skip
DEFAULT_OUT = REPO / "benchmarks" / "results.json"


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
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results file (merged)")
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


def write_results(path: Path, parts: list[Part], info: dict[str, Any]) -> dict[str, Any]:
    """Merge ``parts`` into the results file (other parts' earlier entries stay), atomically."""
    data = _load(path)
    stored = data.get("parts", {})
    when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    for part in parts:
        stored[part.name] = {"machine": info, "measured": when, **part.to_dict()}
    figures = {k: v for entry in stored.values() for k, v in entry.get("figures", {}).items()}
    rows, _ = summary(figures)
    data = {
        **{key: figures.get(key) for key in TARGETS},
        "targets": {r[0]: {"value": r[1], "target": r[2], "met": r[3]} for r in rows},
        "figures": figures,
        "machine": info,
        "command": " ".join(["python -m benchmarks", *sys.argv[1:]]),
        "parts": stored,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return data


def run_parts(args: argparse.Namespace) -> list[Part]:
    parts = []
    for name in args.parts or PARTS:
        start = time.perf_counter()
        print(f"\n## {name}\n", flush=True)
        part = _module(name).run(args)
        parts.append(part)
        print(part.markdown())
        print(f"\n{part.method} ({time.perf_counter() - start:.0f} s)", flush=True)
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
    with tempfile.TemporaryDirectory(prefix="recseg-bench-") as tmp:
        args.work = args.work or Path(tmp)
        args.work.mkdir(parents=True, exist_ok=True)
        parts = run_parts(args)
    data = write_results(args.out, parts, info)
    rows, ok = summary(data["figures"])
    print("\n## targets\n")
    print(Part("targets", ["figure", "value", "target", "met"], rows, {}, "").markdown())
    print(f"\nresults: {args.out}")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
