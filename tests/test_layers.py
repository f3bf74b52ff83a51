"""recseg's packages form one-way layers (docs/architecture.md): module-level imports go only to
the same package or down, and no two modules import each other. Pure AST: nothing of recseg is
imported here."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "recseg"
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- layers:begin", "<!-- layers:end -->"


@dataclass(frozen=True)
class Import:
    line: int
    text: str  # the statement as written
    targets: tuple[str, ...]  # the recseg modules it imports


def doc_layers(text: str | None = None) -> list[tuple[str, list[str]]]:
    """(layer, its packages ``data/`` and top-level modules ``config.py``), bottom first: the
    table between the ``layers:begin`` and ``layers:end`` markers of docs/architecture.md."""
    text = DOC.read_text() if text is None else text
    assert BEGIN in text and END in text, f"{DOC}: the layer table's markers are missing"
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    layers = []
    for row in block.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].isdigit():
            continue  # the marker's line, the header, the |---| line
        assert int(cells[0]) == len(layers) + 1, f"{DOC}: layer numbers must run 1, 2, ...: {row}"
        layers.append((cells[1], re.findall(r"`([^`]+)`", cells[2])))
    return layers


def layer_of() -> dict[str, int]:
    """Package (``data/``) or top-level module (``config.py``) -> its layer's index."""
    index: dict[str, int] = {}
    for i, (_, members) in enumerate(doc_layers()):
        for member in members:
            assert member not in index, f"{DOC}: {member} is in two layers"
            index[member] = i
    return index


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def member(module: str) -> str:
    """``recseg.data.store`` -> ``data/``; ``recseg.config`` -> ``config.py``;
    ``recseg`` -> ``__init__.py``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__.py"
    return f"{parts[1]}/" if (PACKAGE / parts[1]).is_dir() else f"{parts[1]}.py"


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported: in its body, in module-level
    ``if``/``try``/``with``/loops and class bodies; not in functions, not under
    ``if TYPE_CHECKING:`` (its ``else`` does run)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        elif isinstance(node, ast.If) and _type_checking(node.test):
            yield from _module_level(node.orelse)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                for child in getattr(node, field, []):
                    yield from _module_level(
                        child.body if isinstance(child, ast.excepthandler | ast.match_case)
                        else [child]
                    )  # fmt: skip


def imports(path: Path, source: str, modules: set[str]) -> list[Import]:
    """The module-level imports of the recseg module at ``path`` that reach recseg modules."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in _module_level(ast.parse(source, str(path)).body):
        if isinstance(node, ast.Import):
            wanted = [a.name for a in node.names]
        else:
            base = package[: len(package) - node.level + 1] if node.level else []
            origin = ".".join([*base, *([node.module] if node.module else [])])
            # ``from recseg.training import checkpoint`` imports the module checkpoint
            wanted = [
                f"{origin}.{a.name}" if f"{origin}.{a.name}" in modules else origin
                for a in node.names
            ]
        targets = tuple(dict.fromkeys(_known(w, modules) for w in wanted if _recseg(w)))
        if targets:
            found.append(Import(node.lineno, ast.unparse(node), targets))
    return found


def _recseg(name: str) -> bool:
    return name == "recseg" or name.startswith("recseg.")


def _known(name: str, modules: set[str]) -> str:
    """The module ``name`` names, or its nearest enclosing one (``recseg.x.attr``)."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def python_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def scan() -> dict[str, tuple[Path, list[Import]]]:
    """Every recseg module -> its file and its module-level recseg imports."""
    files = python_files()
    modules = {module_name(p) for p in files}
    return {module_name(p): (p, imports(p, p.read_text(), modules)) for p in files}


def test_the_doc_gives_one_order() -> None:
    """The table and the diagram of docs/architecture.md list the same layers."""
    layers = doc_layers()
    assert len(layers) >= 2 and all(members for _, members in layers)
    chain = re.search(r"```mermaid\n.*?\n\s*(\w+(?:\s*-->\s*\w+)+)\s*\n```", DOC.read_text(), re.S)
    assert chain, f"{DOC}: no mermaid chain of the layers"
    top_down = [n.strip() for n in chain[1].split("-->")]
    assert top_down[::-1] == [name for name, _ in layers], "diagram and table differ"


def test_every_package_and_module_has_a_layer() -> None:
    """Each package and top-level module of recseg/ is in exactly one layer; every entry of the
    table exists."""
    index = layer_of()
    present = {member(module_name(p)) for p in python_files()}
    assert not (present - set(index)), (
        f"give these a layer in {DOC.relative_to(ROOT)}: {sorted(present - set(index))}"
    )
    assert not (set(index) - present), f"the layer table names missing {set(index) - present}"


def test_module_level_imports_go_down() -> None:
    """No module imports (at module level) from a package in a higher layer (a package without
    a layer: see the test above)."""
    index, names = layer_of(), [name for name, _ in doc_layers()]
    bad = []
    for module, (path, found) in scan().items():
        own = index.get(member(module), len(names))
        for imp in found:
            for target in imp.targets:
                theirs = index.get(member(target), -1)
                if theirs > own:
                    bad.append(
                        f"{path.relative_to(ROOT)}:{imp.line}: `{imp.text}` imports "
                        f"{names[theirs]} (layer {theirs + 1}) from {names[own]} (layer {own + 1})"
                    )
    assert not bad, (
        f"module-level imports must go to the same package or down ({DOC.relative_to(ROOT)}):\n"
        + "\n".join(bad)
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` with more than one node (Tarjan)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in order:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], order[nxt])
        if low[node] == order[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return found


def test_no_two_modules_import_each_other() -> None:
    """The module-level import graph of recseg has no cycle (within a package either)."""
    scanned = scan()
    graph = {m: {t for i in found for t in i.targets} - {m} for m, (_, found) in scanned.items()}
    lines = []
    for component in cycles(graph):
        lines.append("cycle: " + ", ".join(component))
        for module in component:
            path, found = scanned[module]
            lines += [
                f"  {path.relative_to(ROOT)}:{imp.line}: `{imp.text}`"
                for imp in found
                if set(imp.targets) & (set(component) - {module})
            ]
    assert not lines, "\n".join(lines)


def test_the_scan_sees_what_runs_at_import() -> None:
    """The scanner counts imports in module-level blocks and class bodies; not in functions,
    not under ``if TYPE_CHECKING:``; relative imports are resolved."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "import recseg.data.store\n"
        "from recseg.training import checkpoint, config as c\n"
        "try:\n    from recseg.models import registry\nexcept ImportError:\n"
        "    from recseg.errors import InputError\n"
        "if TYPE_CHECKING:\n    from recseg.cli import cli\nelse:\n    from . import trainer\n"
        "class A:\n    from recseg.faults import fail_point\n"
        "def f():\n    from recseg.tracking import tags\n"
    )
    modules = {
        "recseg", "recseg.data", "recseg.data.store", "recseg.training",
        "recseg.training.checkpoint", "recseg.training.config", "recseg.training.trainer",
        "recseg.models", "recseg.models.registry", "recseg.errors", "recseg.cli",
        "recseg.faults", "recseg.tracking", "recseg.tracking.tags",
    }  # fmt: skip
    found = imports(PACKAGE / "training" / "x.py", source, modules)
    assert [t for imp in found for t in imp.targets] == [
        "recseg.data.store",
        "recseg.training.checkpoint",
        "recseg.training.config",
        "recseg.models.registry",
        "recseg.errors",
        "recseg.training.trainer",
        "recseg.faults",
    ]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
