"""Checks of what the MLflow UI shows of recseg runs, in a real browser (``tests/browser.py``):
the experiment page, the compare view (names, params, every ``test_*`` metric) and the chart
of a per-epoch metric. The values checked are read from the server itself."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient

from recseg.tracking.ui import experiment_url
from tests.browser import browser_page, screenshot

with contextlib.suppress(ImportError):  # without Playwright the browser tests are skipped
    from playwright.sync_api import Locator, Page, expect

CURVE = "val_miou"  # the per-epoch metric whose chart is opened


@dataclass(frozen=True)
class ShownRun:
    """A run the UI must show: its id, its name and the param values it must show."""

    run_id: str
    name: str
    params: dict[str, str]


# The compare view's metrics are two virtualised grids side by side (names | values, 45 px
# rows; the values grid scrolls both, the names one a scroll event behind: caught up here).
# Scroll until the metric's row is rendered and in view; then its values, left to right.
METRIC_ROW_JS = """([key, n]) => {
  const links = [...document.querySelectorAll('a[title="Plot chart"]')];
  if (!links.length) return null;
  const grids = links[0].closest('.du-bois-light-collapse-content-box')
    .querySelectorAll('.ReactVirtualized__Grid');
  const names = grids[0], values = grids[grids.length - 1];
  if (names.scrollTop !== values.scrollTop) {
    names.scrollTop = values.scrollTop;
    return null;
  }
  const link = links.find(a => a.textContent.trim() === key);
  const bottom = values.scrollHeight - values.clientHeight;
  if (!link) {
    values.scrollTop = values.scrollTop >= bottom ? 0 : values.scrollTop + values.clientHeight / 2;
    return null;
  }
  const top = link.parentElement.style.top, y = parseFloat(top);
  if (y < values.scrollTop || y + 45 > values.scrollTop + values.clientHeight) {
    values.scrollTop = Math.min(y, bottom);
    return null;
  }
  const cells = [...values.querySelectorAll('div[style*="top"]')]
    .filter(c => c.style.top === top && c.textContent.trim())
    .sort((a, b) => parseFloat(a.style.left) - parseFloat(b.style.left));
  return cells.length === n ? cells.map(c => c.textContent.trim()) : null;
}"""


def metric_row(page: Page, key: str, columns: int) -> list[str]:
    """The compare view's values of metric ``key``, one per run column."""
    handle = page.wait_for_function(METRIC_ROW_JS, arg=[key, columns], polling=100)
    return handle.json_value()


def check_experiment_page(
    page: Page, base: str, experiment_id: str, runs: Sequence[ShownRun]
) -> None:
    """The experiment page lists every run (name linked to its id)."""
    page.goto(experiment_url(base, experiment_id))
    for run in runs:
        expect(page.locator(f'a[href$="/runs/{run.run_id}"]').first).to_have_text(run.name)
    assistant = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
    if assistant.is_visible():  # the chat side panel hides a third of the page
        assistant.click()


def check_compare_view(page: Page, base: str, url: str, runs: Sequence[ShownRun]) -> None:
    """The compare view at ``url`` shows the runs' ids, names, params and every ``test_*``
    metric (and ends with the ``model`` param and ``test_miou`` scrolled into view)."""
    page.goto(url)
    expect(page.get_by_text(f"Comparing {len(runs)} Runs")).to_be_visible()
    details = page.locator("table").filter(has=page.get_by_text("Run ID:", exact=True))
    expect(details.locator("thead a")).to_have_count(len(runs))
    by_id = {r.run_id: r for r in runs}
    shown = [by_id[rid] for rid in details.locator("thead a").all_inner_texts()]  # column order
    expect(row(details, "Run Name:")).to_have_text([r.name for r in shown])
    params = page.locator(".du-bois-light-collapse-item").filter(
        has=page.locator(".du-bois-light-collapse-header", has_text=re.compile(r"^Parameters$"))
    )
    for key in shown[0].params:
        expect(row(params, key)).to_have_text([r.params[key] for r in shown])
    client = MlflowClient(base)
    logged = [client.get_run(r.run_id).data.metrics for r in shown]
    tests = sorted({k for m in logged for k in m if k.startswith("test_")})
    assert "test_miou" in tests, tests
    for key in tests:
        values = metric_row(page, key, len(shown))
        for text, metrics in zip(values, logged, strict=True):
            assert math.isclose(float(text), metrics[key], rel_tol=0.01, abs_tol=5e-4), (key, text)
    row(params, "model").first.scroll_into_view_if_needed()
    metric_row(page, "test_miou", len(shown))


def row(scope: Locator, label: str) -> Locator:
    """The value cells of the table row headed ``label`` inside ``scope``."""
    head = scope.page.locator("th", has_text=re.compile(f"^{re.escape(label)}$"))
    return scope.locator("tr").filter(has=head).locator("td")


def open_chart(page: Page, key: str, columns: int, attempts: int = 3) -> None:
    """Click metric ``key``'s chart link in the compare view until its chart page opens. The
    link sits in a virtualised grid that re-renders as it scrolls: on a loaded machine a click
    can land while the rows move and open nothing, so it is brought into view and clicked
    again (a user clicks again too)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    link = page.locator('a[title="Plot chart"]', has_text=re.compile(f"^{re.escape(key)}$"))
    for _ in range(attempts):
        metric_row(page, key, columns)
        link.click()
        with contextlib.suppress(PlaywrightTimeout):
            page.wait_for_url(re.compile(r"#/metric\?"), timeout=15_000)
            return
    raise AssertionError(f"{attempts} clicks on the {key} chart link did not open its chart")


def check_curves(page: Page, base: str, runs: Sequence[ShownRun]) -> None:
    """From the compare view, the chart of a per-epoch metric: one curve per run, over steps
    0..N-1, and each run's latest value at its last step."""
    open_chart(page, CURVE, len(runs))
    # the line chart (the compare view's parallel-coordinates one is a Plotly chart too)
    chart = page.locator(".js-plotly-plot").filter(has=page.locator(".scatterlayer"))
    expect(chart).to_be_visible()
    lines = chart.locator(".scatterlayer path.js-line")  # (a flat one: 0 px high)
    expect(lines.nth(len(runs) - 1)).to_be_attached()
    assert all("L" in (line.get_attribute("d") or "") for line in lines.all())  # >= 2 steps each
    expect(chart.locator(".xtitle")).to_have_text("Step")  # x axis: epochs
    client = MlflowClient(base)
    for run in runs:
        expect(page.get_by_text(f"{run.name} ({CURVE})", exact=True)).to_be_visible()  # legend
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.run_id, CURVE))
        assert [s for s, _ in history] == list(range(len(history))) and len(history) >= 2
        last_step, last = history[-1]
        latest = page.locator(f'tr[data-row-key="{run.run_id}"] td').nth(1)  # "value (step=N)"
        expect(latest).to_have_text(re.compile(rf"^\S+ \(step={last_step}\)$"))
        shown = float(latest.inner_text().split()[0])
        assert math.isclose(shown, last, rel_tol=1e-9, abs_tol=1e-12), (run.name, shown, last)


def check_mlflow_ui(
    base: str, experiment_id: str, compare: str, runs: Sequence[ShownRun], artifacts: Path
) -> list[Path]:
    """Open the experiment page, the compare view (``compare``: its address) and a per-epoch
    chart of ``runs`` (served at ``base``) in Chromium and check what they show; returns the
    screenshots."""
    with browser_page(artifacts) as page:
        check_experiment_page(page, base, experiment_id, runs)
        shots = [screenshot(page, "experiment", artifacts)]
        check_compare_view(page, base, compare, runs)
        shots.append(screenshot(page, "compare", artifacts))
        check_curves(page, base, runs)
        shots.append(screenshot(page, "curves", artifacts))
    return shots
