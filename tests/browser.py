"""A real headless browser for UI tests: Debian's Chromium driven by Playwright (never a browser
Playwright downloads), a fresh profile per session, screenshots kept as test artifacts."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parents[1]
# the flags: no GPU, no first-run UI, no background traffic (updates, sync, pings)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update",
         "--disable-sync")  # fmt: skip
VIEWPORT = {"width": 1600, "height": 1000}
TIMEOUT_MS = 60_000  # every wait: a loaded 2-core machine renders the MLflow UI slowly


def chromium_path() -> str | None:
    """Debian's Chromium (``apt-get install chromium``), None when it is not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def unavailable() -> str | None:
    """Why a browser test cannot run here (the skip reason), None when it can."""
    if chromium_path() is None:
        return "Chromium not installed (apt-get install chromium; make install does it as root)"
    if importlib.util.find_spec("playwright") is None:
        return "Playwright not installed (pip install -c constraints.txt -e '.[dev]')"
    return None


def artifacts_dir() -> Path:
    """Where screenshots go: ``$RECSEG_TEST_ARTIFACTS``, else ``<repo>/test-artifacts/ui``."""
    folder = Path(os.environ.get("RECSEG_TEST_ARTIFACTS") or ROOT / "test-artifacts" / "ui")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def browser_page(artifacts: Path | None = None) -> Iterator[Page]:
    """A page of a headless Chromium with a fresh, temporary profile. On an error it saves
    ``failure.png``; the page's console messages and errors land in ``console.log``."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)  # its own default (5 s) is too short here

    folder = artifacts or artifacts_dir()
    log: list[str] = []
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=chromium_path(), headless=True, args=list(FLAGS),
            viewport=VIEWPORT, timeout=TIMEOUT_MS,
        )  # fmt: skip
        try:
            context.set_default_timeout(TIMEOUT_MS)
            page = context.pages[0] if context.pages else context.new_page()
            page.on("console", lambda m: log.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: log.append(f"pageerror: {e}"))
            try:
                yield page
            except Exception:
                with contextlib.suppress(Exception):
                    log.append(f"failed at {page.url}")
                    screenshot(page, "failure", folder)
                raise
        finally:
            context.close()
            (folder / "console.log").write_text("\n".join(log) + "\n")


# how much taller the page's main scrolling panel is than its box: single-page apps scroll
# inside a panel, where a plain full-page screenshot shows only what fits in the viewport
HIDDEN_HEIGHT_JS = """() => {
  const panels = [...document.querySelectorAll('*')].filter(e => e.scrollHeight > e.clientHeight
    && ['auto', 'scroll'].includes(getComputedStyle(e).overflowY));
  const area = e => e.clientWidth * e.clientHeight;
  const main = panels.sort((a, b) => area(b) - area(a))[0];
  return main ? main.scrollHeight - main.clientHeight : 0;
}"""


def screenshot(page: Page, name: str, artifacts: Path | None = None) -> Path:
    """Save a full-page PNG ``<artifacts>/<name>.png``, the viewport grown for once to show
    all of a main panel that scrolls (up to 8000 px); returns its path."""
    path = (artifacts or artifacts_dir()) / f"{name}.png"
    size = page.viewport_size or VIEWPORT
    height = min(size["height"] + int(page.evaluate(HIDDEN_HEIGHT_JS)), 8000)
    page.set_viewport_size({"width": size["width"], "height": height})
    try:
        page.screenshot(path=str(path), full_page=True, animations="disabled")
    finally:
        page.set_viewport_size(size)
    return path
