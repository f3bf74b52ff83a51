"""README.md and docs/*.md name only things that exist.

Checked in README.md and in every docs/*.md (fast, no network):

* README.md is a front door: at most 250 lines; the detail lives in docs/.
* Links and images (``[text](target)``, ``![alt](target)``) outside code: a relative target
  resolves (from the page's folder) to a file or folder of the repository; a ``#fragment`` on a
  markdown target, or a bare ``#fragment``, names a heading of that page (GitHub's anchors).
  http(s):// and mailto: targets are not checked.
* Repository paths named in inline code or in a shell code block: a word that starts with
  ``recseg/``, ``tests/``, ``grid/``, ``benchmarks/``, ``docs/``, ``scripts/``,
  ``entrypoints/`` or ``.ci/``, or is one of the top-level files (``MLproject``, ``Makefile``,
  ...), exists from the repository root, or from recseg/ (a module named inside its package,
  as docs/architecture.md writes ``grid/job.py``). A path may be a pattern only when it says
  so: ``*``/``?`` (a glob) or a ``<placeholder>`` (read as ``*``); at least one file must
  match. ``demo/``, ``thesis/`` and other output folders do not start with these prefixes and
  are not checked.
* Flags: every ``--flag`` in inline code or in a shell code block (```` ```bash ````, ``sh``,
  ``console``, ``text`` or no language; ``python``, ``ini`` and other blocks are not shell) is
  an option of the command it is given to. A fragment is read word by word, and these words
  set the command that the flags after them belong to:

  - ``recseg CMD``: CMD's click options (every command of ``recseg.cli.cli``, walked
    recursively; ``--help``/``--version`` too) — strict, no allowlist;
  - ``python -m benchmarks``: the options of its argparse parser
    (``benchmarks.__main__.parse_args``); ``python -m benchmarks.report``: the flags its source
    spells out; ``python -m benchmarks.scale`` and ``grid/tracking-server.sh``: the options
    of their argparse parsers (``ARGPARSE``);
  - ``make``: none, except in ``DEMO_ARGS=``/``THESIS_ARGS=`` (``recseg demo``/``recseg
    thesis``), ``BENCH_ARGS=`` (``python -m benchmarks``), ``SCALE_ARGS=`` (``python -m
    benchmarks.scale``) and ``PYTEST_ARGS=`` (pytest);
  - other tools: the small explicit allowlists in ``EXTERNAL`` (those of ``mlflow run``,
    ``mlflow ui`` and ``mlflow server`` are checked against MLflow's own click options).

  In inline code and in a code block's ``# comment``, flags before any such word
  (``--piece-frames 4`` in prose) must be an option of some recseg command; on
  docs/performance.md also of ``python -m benchmarks``. In a code block every command line (a
  trailing backslash or an indented line continues it) and every piece after `` | ``, ``&&``,
  ``;`` or ``$(`` is a new command: a flag there before a known command word fails, so an
  unknown tool's flags must be added to ``EXTERNAL`` to pass.

A failure names the file, the line and the bad link, path or flag.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import unicodedata
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250

PATH_PREFIXES = (
    "recseg/", "tests/", "grid/", "benchmarks/", "docs/", "scripts/", "entrypoints/", ".ci/",
)  # fmt: skip
TOP_LEVEL_FILES = {
    "MLproject", "conda.yaml", "Makefile", "pyproject.toml", "constraints.txt", "README.md",
}  # fmt: skip
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console", "text"}

# Flags of other tools that the docs may use: keep these lists short and explicit.
EXTERNAL: dict[str, frozenset[str]] = {
    "mlflow run": frozenset({"--env-manager", "--run-id", "--experiment-name"}),
    "mlflow ui": frozenset({"--backend-store-uri", "--host", "--port"}),
    "mlflow server": frozenset(
        {
            "--app-name",
            "--host",
            "--port",
            "--backend-store-uri",
            "--artifacts-destination",
            "--allowed-hosts",
        }
    ),
    "pytest": frozenset({"--durations", "--dist", "--no-loadscope-reorder"}),
    "qsub": frozenset(),  # Grid Engine's options have one dash
    "make": frozenset(),
    "pip": frozenset(),
    "git": frozenset(),
    "ruff": frozenset({"--fix", "--check"}),
    "torchrun": frozenset({"--nproc-per-node"}),
}
# commands whose flags come from an argparse ``parse_args`` of a module: command -> module
ARGPARSE = {"tracking-server.sh": "recseg.tracking.cluster", "benchmarks.scale": "benchmarks.scale"}
MAKE_VARIABLES = {
    "DEMO_ARGS": "recseg demo",
    "THESIS_ARGS": "recseg thesis",
    "BENCH_ARGS": "benchmarks",
    "SCALE_ARGS": "benchmarks.scale",
    "PYTEST_ARGS": "pytest",
}

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")


# --- what exists --------------------------------------------------------------------------


def _options(command: click.Command, ctx: click.Context) -> set[str]:
    return {
        opt
        for param in command.get_params(ctx)
        for opt in (*param.opts, *param.secondary_opts)
        if opt.startswith("--")
    }


@cache
def recseg_options() -> dict[str, frozenset[str]]:
    """``"recseg CMD"`` (and ``"recseg"``, ``"recseg GROUP SUB"``) -> its long options."""
    from recseg.cli import cli

    found: dict[str, frozenset[str]] = {}

    def walk(command: click.Command, path: str, parent: click.Context | None) -> None:
        ctx = click.Context(command, info_name=path.split()[-1], parent=parent)
        found[path] = frozenset(_options(command, ctx))
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None:
                    walk(sub, f"{path} {name}", ctx)

    walk(cli, "recseg", None)
    return found


@cache
def benchmark_options() -> frozenset[str]:
    """The options of ``python -m benchmarks``, read from its argparse help."""
    from benchmarks.__main__ import parse_args

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        parse_args(["--help"])
    return frozenset(FLAG.findall(out.getvalue()))


@cache
def argparse_options(module: str) -> frozenset[str]:
    """The options of a module's argparse ``parse_args``, read from its help."""
    parse_args = importlib.import_module(module).parse_args
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        parse_args(["--help"])
    return frozenset(FLAG.findall(out.getvalue()))


@cache
def report_options() -> frozenset[str]:
    """The options of ``python -m benchmarks.report``: the flags its source spells out."""
    source = (ROOT / "benchmarks" / "report.py").read_text()
    return frozenset(re.findall(r"[\"'](--[a-z][a-z0-9-]*)[\"']", source))


def known_flags(tool: str) -> frozenset[str]:
    if tool.startswith("recseg"):
        return recseg_options()[tool]
    if tool == "benchmarks":
        return benchmark_options()
    if tool == "benchmarks.report":
        return report_options()
    if tool in ARGPARSE:
        return argparse_options(ARGPARSE[tool])
    return EXTERNAL[tool]


@cache
def all_recseg_flags() -> frozenset[str]:
    return frozenset().union(*recseg_options().values())


# --- reading the pages --------------------------------------------------------------------


def code_blocks(lines: list[str]) -> Iterator[tuple[int, str, list[tuple[int, str]]]]:
    """(first line number, language, [(line number, text)]) of each fenced block."""
    block: list[tuple[int, str]] | None = None
    fence = language = ""
    start = 0
    for number, line in enumerate(lines, 1):
        match = FENCE.match(line)
        if block is None and match:
            fence, language, start, block = match[1], match[2].lower(), number, []
        elif (
            block is not None
            and line.strip().startswith(fence)
            and not line.strip().strip(fence[0])
        ):
            yield start, language, block
            block = None
        elif block is not None:
            block.append((number, line))


def prose_lines(lines: list[str]) -> Iterator[tuple[int, str]]:
    """Lines outside fenced code blocks (fences included in the code)."""
    code = set()
    for start, _, block in code_blocks(lines):
        code.add(start)
        code.update(number for number, _ in block)
        code.add((block[-1][0] if block else start) + 1)  # the closing fence
    for number, line in enumerate(lines, 1):
        if number not in code:
            yield number, line


def paragraphs(lines: list[str]) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each run of non-blank prose lines (a code span or a
    link may wrap onto the next line)."""
    start, text = 0, []
    previous = -1
    for number, line in [*prose_lines(lines), (-1, "")]:
        if line.strip() and number == previous + 1 and text:
            text.append(line)
        else:
            if text:
                yield start, "\n".join(text)
            start, text = number, [line] if line.strip() else []
        previous = number


def matches_with_lines(
    pattern: re.Pattern[str], lines: list[str]
) -> Iterator[tuple[int, re.Match]]:
    for start, text in paragraphs(lines):
        for match in pattern.finditer(text):
            yield start + text.count("\n", 0, match.start()), match


def inline_code(lines: list[str]) -> Iterator[tuple[int, str]]:
    for number, match in matches_with_lines(INLINE_CODE, lines):
        yield number, " ".join(match[2].split())


def shell_commands(lines: list[str]) -> Iterator[tuple[int, str]]:
    """(line number, text) of each command line in shell code blocks, continuations joined."""
    for _, language, block in code_blocks(lines):
        if language not in SHELL_LANGUAGES:
            continue
        joined: list[tuple[int, str]] = []
        continued = False
        for number, text in block:
            if joined and (continued or text[:1].isspace()):
                joined[-1] = (joined[-1][0], joined[-1][1] + " " + text.strip())
            else:
                joined.append((number, text))
            continued = text.rstrip().endswith("\\")
        yield from joined


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces -> hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading.strip()).lower()
    kept = "".join(c for c in text if c in " -" or unicodedata.category(c)[0] in "LN" or c == "_")
    return kept.replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(page.read_text().splitlines()):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match[1])
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


# --- the checks ---------------------------------------------------------------------------


def bad_links(page: Path) -> list[str]:
    problems = []
    for start, text in paragraphs(page.read_text().splitlines()):
        # code spans hold no links; keep their line breaks so the line numbers stay right
        text = INLINE_CODE.sub(lambda m: "\n" * m[0].count("\n"), text)
        for match in LINK.finditer(text):
            target = match[1]
            if re.match(r"^(https?:|mailto:)", target):
                continue
            number = start + text.count("\n", 0, match.start())
            file_part, _, fragment = target.partition("#")
            where = f"{rel(page)}:{number}: link {target!r}"
            path = (page.parent / file_part).resolve() if file_part else page
            if file_part and not path.exists():
                problems.append(f"{where}: {file_part} does not exist")
            elif fragment and path.suffix == ".md" and fragment not in anchors(path):
                problems.append(f"{where}: no heading #{fragment} in {rel(path)}")
    return problems


def repo_path_words(fragment: str) -> Iterator[str]:
    for word in re.split(r"[\s=(),\"'`]+", fragment):
        word = word.strip("[]{}").rstrip(".:;")
        if word.startswith(PATH_PREFIXES) or word in TOP_LEVEL_FILES:
            yield word


def path_exists(word: str) -> bool:
    """From the repository root, or from recseg/ (a module named inside its package, as
    docs/architecture.md writes ``grid/job.py``)."""
    pattern = re.sub(r"<[^<>]+>", "*", word)
    for base in (ROOT, ROOT / "recseg"):
        if any(c in pattern for c in "*?["):
            if any(base.glob(pattern.rstrip("/"))):
                return True
        elif (base / word).exists():
            return True
    return False


def bad_paths(page: Path) -> list[str]:
    lines = page.read_text().splitlines()
    fragments = [*inline_code(lines), *shell_commands(lines)]
    return [
        f"{rel(page)}:{number}: path `{word}` is not in the repository"
        for number, fragment in fragments
        for word in repo_path_words(fragment)
        if not path_exists(word)
    ]


def command_word(words: list[str], i: int) -> tuple[str, int] | None:
    """The command (a key of ``known_flags``) that starts at words[i], and its length."""
    word = words[i].rsplit("/", 1)[-1]
    nxt = words[i + 1] if i + 1 < len(words) else ""
    if word == "recseg":
        sub = f"recseg {nxt}"
        return (sub, 2) if sub in recseg_options() else ("recseg", 1)
    if word == "mlflow" and f"mlflow {nxt}" in EXTERNAL:
        return f"mlflow {nxt}", 2
    if re.fullmatch(r"python[0-9.]*", word) and nxt == "-m" and i + 2 < len(words):
        module = words[i + 2]
        if module in ("benchmarks", "benchmarks.report", "benchmarks.scale", "pytest"):
            return module, 3
    if word in EXTERNAL or word in ARGPARSE:
        return word, 1
    return None


def flag_problems(fragment: str, default: frozenset[str] | None, where: str) -> list[str]:
    """Flags of ``fragment`` that the command they follow does not have; before any command
    word the flags must be in ``default`` (None: no flag is allowed there)."""
    problems = []
    tool, allowed = "", default
    words = [w.strip("\"'`[]{}();") for w in fragment.split()]
    i = 0
    while i < len(words):
        found = command_word(words, i)
        if found:
            tool, allowed = found[0], known_flags(found[0])
            i += found[1]
            continue
        variable, _, value = words[i].partition("=")
        if variable in MAKE_VARIABLES and tool == "make":
            sub = MAKE_VARIABLES[variable]
            problems += flag_problems(value, known_flags(sub), f"{where} ({sub})")
            i += 1
            continue
        for flag in FLAG.findall(words[i]):
            if allowed is None:
                problems.append(f"{where}: flag {flag} follows no known command")
            elif flag not in allowed:
                problems.append(f"{where}: {tool or 'recseg'} has no flag {flag}")
        i += 1
    return problems


def split_commands(line: str) -> tuple[list[str], str]:
    """A shell line's commands (the pieces after `` | ``, ``&&``, ``;``, ``$(``) and its
    comment."""
    code, _, comment = line.partition(" #")
    return re.split(r"\s\|\s(?!-)|&&|;\s|\$\(", code), comment


def bad_flags(page: Path) -> list[str]:
    lines = page.read_text().splitlines()
    prose_default = all_recseg_flags()
    if page.name == "performance.md":
        prose_default = prose_default | benchmark_options()
    problems = []
    for number, fragment in inline_code(lines):
        problems += flag_problems(fragment, prose_default, f"{rel(page)}:{number}")
    for number, line in shell_commands(lines):
        pieces, comment = split_commands(line)
        for piece in pieces:
            problems += flag_problems(piece, None, f"{rel(page)}:{number}")
        problems += flag_problems(comment, prose_default, f"{rel(page)}:{number}")
    return problems


def test_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move detail to docs/"
    )


def test_pages_exist() -> None:
    names = {page.name for page in PAGES}
    assert {"README.md", "models.md", "data.md", "performance.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_links_resolve(page: Path) -> None:
    problems = bad_links(page)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_named_paths_exist(page: Path) -> None:
    problems = bad_paths(page)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_flags_exist(page: Path) -> None:
    problems = bad_flags(page)
    assert not problems, "\n".join(problems)


def test_the_checks_catch_mistakes() -> None:
    """The checkers themselves: a stale flag, path and link are each reported with a line."""
    page = ROOT / "docs" / "_probe.md"  # not written: the checks read it through a fake
    text = "\n".join(
        [
            "# Probe",
            "`recseg train --weights imagenet` and `recseg train --pretrained imagenet`",
            "```bash",
            "recseg segment in.mp4 -o out.mp4 --model M \\",
            "    --weights x   # or: mlflow run . -e train --run-id RID",
            "qsub -v A=1 grid/train.sge | sort --reverse",
            "```",
            "See `grid/missing.sge`, `tests/<file>.py`, `recseg/` and [gone](gone.md),"
            " [ok](recipe.md), [bad anchor](#nope), [good anchor](#probe).",
        ]
    )
    original = Path.read_text

    def read_text(self: Path, *args, **kwargs) -> str:
        return text if self == page else original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "read_text", read_text)
        anchors.cache_clear()
        flags, paths, links = bad_flags(page), bad_paths(page), bad_links(page)
    anchors.cache_clear()
    assert flags == [
        "docs/_probe.md:2: recseg train has no flag --weights",
        "docs/_probe.md:4: recseg segment has no flag --weights",
        "docs/_probe.md:6: flag --reverse follows no known command",
    ]
    assert paths == ["docs/_probe.md:8: path `grid/missing.sge` is not in the repository"]
    assert links == [
        "docs/_probe.md:8: link 'gone.md': gone.md does not exist",
        "docs/_probe.md:8: link '#nope': no heading #nope in docs/_probe.md",
    ]


def test_external_allowlists_are_real_mlflow_options() -> None:
    from mlflow.cli import cli as mlflow_cli

    ctx = click.Context(mlflow_cli)
    for tool in ("mlflow run", "mlflow ui", "mlflow server"):
        command = mlflow_cli.get_command(ctx, tool.split()[1])
        assert command is not None, tool
        missing = EXTERNAL[tool] - _options(command, click.Context(command, parent=ctx))
        assert not missing, f"{tool} has no {sorted(missing)}"
