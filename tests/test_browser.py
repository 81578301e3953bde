"""End to end in real headless Chromium: type, generate, read the plotly chart from the DOM, change k.

Saves a full-page screenshot to docs/screenshot.png. Skipped only when /usr/bin/chromium is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from app_fixtures import POOL, served

import app

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "screenshot.png"
TIMEOUT_MS = 180_000  # the CPU is shared with training jobs: generous, but a hang still fails

# The signal chart's traces, read from the plotly div: {trace name: [adapter, ...]}.
BARS_JS = """() => {
  const div = document.querySelector('#signal-plot .js-plotly-plot');
  if (!div || !div.data) return null;
  return Object.fromEntries(div.data.map(t => [t.name, Array.from(t.y || [])]));
}"""
SELECTED = "selected (top-k)"


@pytest.fixture(scope="module")
def page(app_engine):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing")
    from playwright.sync_api import sync_playwright

    with served(app.create_demo(app_engine)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        page.wait_for_selector("#prompt textarea")
        yield page
        browser.close()


def selected_count_is(page, k: int) -> None:
    page.wait_for_function(
        f"() => {{ const b = ({BARS_JS})(); return b && b[{SELECTED!r}] && b[{SELECTED!r}].length === {k}; }}"
    )


def test_generate_streams_an_answer_and_draws_the_pool(page):
    page.fill("#prompt textarea", "What is the capital of Peru?")
    page.click("#generate-btn")
    page.wait_for_function("() => document.querySelector('#answer textarea').value.trim().length > 0")
    page.wait_for_function("() => document.querySelector('#timings').innerText.includes('tokens/s')")
    bars = page.evaluate(BARS_JS)
    assert sorted(sum(bars.values(), [])) == sorted(POOL)  # the chart names every adapter of the pool
    assert len(bars[SELECTED]) == 2  # adapters.yaml default k
    weights = page.evaluate("() => Array.from(document.querySelector('#weight-plot .js-plotly-plot').data[0].x)")
    assert sum(weights) == pytest.approx(1.0)
    assert page.locator("#export-btn").is_enabled()


def test_changing_k_reroutes_without_regenerating(page):
    answer = page.input_value("#answer textarea")
    for k in (3, 1):
        box = page.locator("#k-slider input[type=number]")
        box.fill(str(k))
        box.press("Enter")
        selected_count_is(page, k)
    assert "routing only" in page.inner_text("#timings")
    assert page.input_value("#answer textarea") == answer  # the answer was left alone


def test_example_click_loads_and_routes(page, app_engine):
    page.fill("#prompt textarea", "")
    page.click("#route-btn")  # an empty prompt: the timings line is cleared
    page.wait_for_function("() => document.querySelector('#timings').innerText.trim() === ''")
    page.get_by_role("button", name="capitals:").first.click()
    example = app_engine.pool.specs[POOL.index("capitals")].examples[0]
    page.wait_for_function("(p) => document.querySelector('#prompt textarea').value === p", arg=example)
    page.wait_for_function("() => document.querySelector('#timings').innerText.includes('routing only')")


def test_empty_prompt_shows_a_message_and_the_app_keeps_serving(page):
    page.fill("#prompt textarea", "")
    page.click("#route-btn")
    page.wait_for_function("() => document.querySelector('#notices')?.innerText?.includes('empty')")
    page.fill("#prompt textarea", "Is this review positive? Lovely screen, fast delivery.")
    page.click("#generate-btn")
    page.wait_for_function("() => document.querySelector('#timings').innerText.includes('tokens/s')")
    assert not page.locator("#notices").is_visible()


def test_layer_sweep_tab_draws_a_heatmap(page):
    page.get_by_role("tab", name="Layer sweep").click()
    page.wait_for_function(
        "() => { const d = document.querySelector('#sweep-plot .js-plotly-plot'); "
        "return d && d.data && d.data[0].type === 'heatmap'; }"
    )
    n_rows = page.evaluate("() => document.querySelector('#sweep-plot .js-plotly-plot').data[0].z.length")
    assert n_rows == 30  # SmolLM2's blocks
    page.get_by_role("tab", name="Answer & routing").click()


def test_screenshot(page):
    """Last: a readable full-page screenshot of the main view for the README."""
    # a prompt of the translation adapter's task (its closed vocabulary): the real pool routes it to that adapter
    page.fill("#prompt textarea", "Translate the following English sentence into French: the dog sees the cat")
    box = page.locator("#k-slider input[type=number]")
    box.fill("2")
    box.press("Enter")
    selected_count_is(page, 2)
    page.click("#generate-btn")
    page.wait_for_function("() => document.querySelector('#timings').innerText.includes('tokens/s')")
    page.wait_for_timeout(500)  # let plotly finish its transition
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 20_000
