"""``python -m benchmarks.report [RESULTS] [--readme [README]]``: the stored results as
markdown (the README's performance tables), without measuring anything.

``--readme`` renders the performance block (the run's date and machine, its wall time and the
targets table) and writes it into README.md between the lines ``<!-- bench:start -->`` and
``<!-- bench:end -->`` (atomically); ``make bench`` does so after measuring.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

from benchmarks.__main__ import DEFAULT_OUT, PARTS, summary
from benchmarks.common import NEVER_REACHED, REPO, Part, _cell

README = REPO / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


class MarkersMissing(Exception):
    """The README lacks the performance block's marker lines (or has them out of order)."""


def _table(name: str, entry: dict[str, Any]) -> str:
    rows = entry.get("rows", [])
    if not rows:
        return ""
    columns = list(rows[0])
    return Part(name, columns, [list(r.values()) for r in rows], {}, "").markdown()


def render(data: dict[str, Any]) -> str:
    """Targets, then every part's table with its method, date and wall time."""
    rows, _ = summary(data.get("figures", {}))
    out = [Part("targets", ["figure", "value", "target", "met"], rows, {}, "").markdown()]
    for name, entry in data.get("parts", {}).items():
        table = _table(name, entry)
        if table:
            when = entry.get("measured", "")
            if isinstance(entry.get("wall_s"), int | float):
                when += f", {_duration(entry['wall_s'])}"
            out.append(f"**{name}** — {entry.get('method', '')} ({when})")
            out.append(table)
    return "\n\n".join(out)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _day(iso: str | None) -> str:
    """``2026-12-04T07:26:59+00:00`` -> ``2026-12-04 07:26 UTC``."""
    try:
        when = datetime.datetime.fromisoformat(iso or "")
    except ValueError:
        return iso or "unknown date"
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _machine(info: dict[str, Any]) -> str:
    """``AMD EPYC, 2 cores, torch 2.14.1+cu130, commit d3d95d2`` (the torch threads when
    they differ from the cores, the GPU when one was used)."""
    cores, threads = info.get("cores", "?"), info.get("torch_threads")
    text = f"{info.get('cpu') or 'unknown CPU'}, {cores} cores"
    text += f" ({threads} torch threads)" if threads not in (None, cores) else ""
    text += f", {info['gpu']}" if info.get("gpu") else ""
    text += f", torch {info.get('torch', '?')}"
    return text + (f", commit {info['commit']}" if info.get("commit") else "")


def _value(key: str, value: Any, met: str, figures: dict[str, Any]) -> str:
    if value is None and key in NEVER_REACHED and met == "NO":
        wall = figures.get("learning_wall_s") if key == "time_to_working_model_s" else None
        return "not reached" + (f" in {wall:.0f} s" if isinstance(wall, int | float) else "")
    return _cell(value)


def readme_block(data: dict[str, Any]) -> str:
    """The README's performance block: when and where the figures were measured, the wall
    time, and the targets table (figure, value, target, met)."""
    parts: dict[str, Any] = data.get("parts", {})
    run = data.get("run") or {}
    lines = []
    if run.get("complete") and not run.get("quick"):
        wall = run.get("wall_s")
        per = ", ".join(
            f"{name} {_duration(entry['wall_s'])}"
            for name, entry in parts.items()
            if isinstance(entry.get("wall_s"), int | float)
        )
        total = _duration(wall) if isinstance(wall, int | float) else "unknown wall time"
        lines.append(
            f"Latest full run (`make bench`, every part): {_day(run.get('date'))}, "
            f"{_machine(run.get('machine', {}))}; {total} in all" + (f" ({per})." if per else ".")
        )
    else:
        groups: dict[tuple[str, str], list[str]] = {}
        for name, entry in parts.items():
            wall = entry.get("wall_s")
            label = name + (f" ({_duration(wall)})" if isinstance(wall, int | float) else "")
            key = (_day(entry.get("measured")), _machine(entry.get("machine", {})))
            groups.setdefault(key, []).append(label)
        runs = f"{len(groups)} run{'s' if len(groups) != 1 else ''}"
        lines.append(f"Not one run: the parts were measured separately ({runs}):")
        lines.append("")
        for (day, where), names in groups.items():
            lines.append(f"- {', '.join(names)}: {day}, {where}")
        missing = [p for p in PARTS if p not in parts]
        if missing:
            lines += [f"- not measured: {', '.join(missing)}"]
    figures = data.get("figures", {})
    rows, _ = summary(figures)
    table = [[k, _value(k, value, met, figures), target, met] for k, value, target, met in rows]
    lines += ["", Part("targets", ["figure", "value", "target", "met"], table, {}, "").markdown()]
    return "\n".join(lines)


def _markers(lines: list[str]) -> tuple[int, int]:
    starts = [k for k, ln in enumerate(lines) if ln.strip() == START]
    ends = [k for k, ln in enumerate(lines) if ln.strip() == END]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise MarkersMissing(f"needs one line {START} and, after it, one line {END}")
    return starts[0], ends[0]


def with_block(text: str, block: str) -> str:
    """``text`` with the lines between the markers replaced by ``block``."""
    lines = text.splitlines(keepends=True)
    start, end = _markers(lines)
    return "".join(lines[: start + 1]) + block.rstrip("\n") + "\n" + "".join(lines[end:])


def block_in(text: str) -> str | None:
    """What stands between the markers (None: no markers)."""
    lines = text.splitlines(keepends=True)
    try:
        start, end = _markers(lines)
    except MarkersMissing:
        return None
    return "".join(lines[start + 1 : end]).rstrip("\n")


def write_readme(readme: Path, data: dict[str, Any]) -> None:
    """Put ``readme_block(data)`` between the markers of ``readme``: temp file + rename."""
    text = with_block(readme.read_text(), readme_block(data))
    tmp = readme.with_name(f".{readme.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.chmod(tmp, readme.stat().st_mode & 0o777)
    os.replace(tmp, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__)
    parser.add_argument("results", nargs="?", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--readme", nargs="?", type=Path, const=README, default=None, metavar="README",
        help="write the performance block between the markers of README (default README.md)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    path = args.results
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"cannot read {path}: {exc}", file=sys.stderr)
        return 2
    if args.readme is None:
        print(render(data))
        return 0
    try:
        write_readme(args.readme, data)
    except MarkersMissing as exc:
        print(f"{args.readme}: no performance block to fill: it {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cannot write {args.readme}: {exc}", file=sys.stderr)
        return 2
    print(f"{args.readme}: performance block written from {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
