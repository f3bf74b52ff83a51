"""``python -m benchmarks.report [RESULTS]``: the stored results as markdown (the README's
performance tables), without measuring anything."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.__main__ import DEFAULT_OUT, summary
from benchmarks.common import Part


def _table(name: str, entry: dict[str, Any]) -> str:
    rows = entry.get("rows", [])
    if not rows:
        return ""
    columns = list(rows[0])
    return Part(name, columns, [list(r.values()) for r in rows], {}, "").markdown()


def render(data: dict[str, Any]) -> str:
    """Targets, then every part's table with its method and machine line."""
    rows, _ = summary(data.get("figures", {}))
    out = [Part("targets", ["figure", "value", "target", "met"], rows, {}, "").markdown()]
    for name, entry in data.get("parts", {}).items():
        table = _table(name, entry)
        if table:
            out.append(f"**{name}** — {entry.get('method', '')} ({entry.get('measured', '')})")
            out.append(table)
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else DEFAULT_OUT
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"cannot read {path}: {exc}", file=sys.stderr)
        return 2
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
