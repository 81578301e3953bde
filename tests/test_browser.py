"""End to end in real headless Chromium against one served app: what a visitor sees and does.

Skipped only when /usr/bin/chromium is missing. Writes nothing to the repository (the README's
pictures come from `python scripts/screenshots.py`).
"""

from __future__ import annotations

import json

import pytest
from app_fixtures import CHROMIUM, CHROMIUM_ARGS, POOL, served

import app
from logo_core import callbacks, explain
from logo_core.options import MAX_NEW_TOKENS

pytestmark = pytest.mark.slow  # the real model, a browser or a subprocess run: `make test-fast` leaves it out

TIMEOUT_MS = 180_000  # the CPU is shared with training jobs: generous, but a hang still fails

# The signal chart as drawn: its meta (order, selected, hidden), every drawn bar's score, title and subtitle.
CHART_JS = """() => {
  const d = document.querySelector('#signal-plot .js-plotly-plot');
  if (!d || !d.layout || !d.layout.meta) return null;
  const scores = {};
  for (const t of d.data) (t.y || []).forEach((n, i) => { scores[n] = t.x[i]; });
  return {meta: d.layout.meta, scores, title: d.layout.title.text, subtitle: (d.layout.title.subtitle || {}).text};
}"""
# Notes when the status line says "generating…": the answer after it is a new one.
WATCH_JS = """() => { window.__generating = false; const s = document.querySelector('#status');
  new MutationObserver((_, o) => { if (s.innerText.includes('generating')) { window.__generating = true; o.disconnect(); } })
    .observe(s, {subtree: true, childList: true, characterData: true}); }"""
MARK_JS = "() => { window.__chart = document.querySelector('#signal-plot .js-plotly-plot')?.layout?.meta; }"
REDRAWN_JS = """() => { const m = document.querySelector('#signal-plot .js-plotly-plot')?.layout?.meta;
  return m && m !== window.__chart; }"""


@pytest.fixture(scope="module")
def server(app_engine):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing")
    from playwright.sync_api import sync_playwright

    with served(app.create_demo(app_engine)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield url, browser
        browser.close()


def open_page(server, width=1280, height=900, **kwargs):
    url, browser = server
    page = browser.new_page(viewport={"width": width, "height": height}, **kwargs)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#prompt textarea")
    return page


@pytest.fixture(scope="module")
def page(server):
    page = open_page(server)
    yield page
    page.close()


def route(page, prompt: str | None = None) -> dict:
    """Type `prompt` (if given), press Route only, wait for the new chart; returns it."""
    if prompt is not None:
        page.fill("#prompt textarea", prompt)
    page.evaluate(MARK_JS)
    page.click("#route-btn")
    page.wait_for_function(REDRAWN_JS)
    return page.evaluate(CHART_JS)


def generate(page, prompt: str | None = None, how=None) -> None:
    if prompt is not None:
        page.fill("#prompt textarea", prompt)
    page.evaluate(WATCH_JS)
    (how or (lambda: page.click("#generate-btn")))()
    page.wait_for_function(
        "() => window.__generating && document.querySelector('#status').innerText.includes('tokens/s')"
    )


def set_number(page, selector: str, value) -> None:
    box = page.locator(selector)
    box.fill(str(value))
    box.press("Enter")


def answer_label(page) -> str:
    return page.inner_text("#answer [data-testid=block-info]").strip()


def advanced(page, **numbers) -> None:
    """Open the Advanced accordion (its controls are drawn when opened), set numbers by elem id, close it."""
    page.get_by_text("Advanced: answer length and sampling").click()
    for elem_id, value in numbers.items():
        box = f"#{elem_id} input[type=number]"
        page.wait_for_selector(box, state="visible")
        # On a loaded machine the accordion may still be mounting its controls when the first number is typed,
        # and a fresh control shows the page's value again (CI, once: max-new read 12 after 1024 was typed; the
        # server had no write-back to make). Type again then; the check below still fails if a value won't stay.
        for _ in range(3):
            set_number(page, box, value)
            page.wait_for_timeout(300)
            if float(page.input_value(box)) == float(value):
                break
    for elem_id, value in numbers.items():
        assert float(page.input_value(f"#{elem_id} input[type=number]")) == float(value), elem_id
    page.get_by_text("Advanced: answer length and sampling").click()


# ---------------------------------------------------------------------------------------------- #1 defaults


def test_page_routes_like_the_api_by_default(page, server, app_engine):
    """Untouched, the page routes exactly as /route with no settings (adapters.yaml's defaults, a block range)."""
    from gradio_client import Client

    client = Client(server[0], verbose=False)
    for prompt in ("What is the capital of Peru?", "Sort these words: pear apple fig", "Is this review positive?"):
        chart = route(page, prompt)
        trace = client.predict(prompt, api_name="/route")
        assert chart["meta"]["selected"] == trace["selected"]
        best = sorted(trace["scores"], key=lambda n: -trace["scores"][n])[: len(chart["scores"])]
        assert set(chart["scores"]) == set(best)  # a long pool: the best bars, the rest behind "Show all"
        assert chart["scores"] == pytest.approx({n: trace["scores"][n] for n in best}, rel=1e-5)
        assert chart["meta"]["hidden"] == len(trace["scores"]) - len(best)
        o = trace["options"]
        assert o["signal"] in chart["title"] and ("calibrated" in chart["title"]) == o["calibrated"]
        subtitle = chart["subtitle"].replace("<br>", " ")
        where = f"blocks {o['blocks'][0]}-{o['blocks'][-1]}" if len(o["blocks"]) > 1 else f"block {o['blocks'][0]}"
        assert where in subtitle and o["probe_input"] in subtitle
        assert all(m in subtitle for m in o["module"])
    assert page.input_value("#layer textarea, #layer input") == app_engine.route_options().layer_text


def test_a_block_list_and_range_route(page):
    for text, blocks in (("3,7", "blocks 3, 7"), ("20:25", "blocks 20-24")):
        set_number(page, "#layer textarea, #layer input", text)
        page.wait_for_function(f"() => ({CHART_JS})()?.subtitle?.includes({blocks!r})")
    set_number(page, "#layer textarea, #layer input", "0:30")


# ---------------------------------------------------------------------------------------------- #2, #3, #9 answers


def test_enter_submits_and_shift_enter_adds_a_line(page):
    page.fill("#prompt textarea", "What is 12 + 30?")
    page.press("#prompt textarea", "Shift+Enter")
    page.keyboard.type("Answer briefly.")
    assert page.input_value("#prompt textarea") == "What is 12 + 30?\nAnswer briefly."
    generate(page, how=lambda: page.press("#prompt textarea", "Enter"))
    assert page.input_value("#answer textarea").strip()
    assert page.input_value("#prompt textarea") == "What is 12 + 30?\nAnswer briefly."  # Enter added no line


def test_an_old_answer_is_marked_when_the_routing_changes(page):
    generate(page, "Write the number 342 in French words.")
    assert "earlier" not in answer_label(page)
    page.evaluate(MARK_JS)
    set_number(page, "#k-slider input[type=number]", 3)
    page.wait_for_function(REDRAWN_JS)  # re-routed at once
    page.wait_for_function("() => document.querySelector('#answer').classList.contains('stale')")
    assert "earlier" in answer_label(page)
    set_number(page, "#k-slider input[type=number]", 2)  # back to the answer's settings: the answer fits again
    page.wait_for_function("() => !document.querySelector('#answer').classList.contains('stale')")
    page.fill("#prompt textarea", "Write the number 77 in Spanish words.")  # a new prompt: the old answer is marked
    page.wait_for_function("() => document.querySelector('#answer').classList.contains('stale')")


def test_stop_says_after_how_many_tokens(page):
    """Was flaky on a busy machine. The cause: a settings event still running when max-new and min-new were
    typed (the previous test's k) wrote the sliders' numbers of its start back (max-new 12), the next check
    found min-new > max-new and put min-new back to 0, so the answer could end at EOS before Stop; valid
    numbers, sliders included, are no longer written back (test_app.py::test_a_valid_setting_leaves_typed_
    numbers_alone, test_a_lenient_slider_stays_lenient_when_gradio_rebuilds_it). The answer
    is also as long as a request may ask (1024 tokens, several seconds even on a fast CPU), so a Stop that a
    loaded machine delivers late still comes before the end."""
    n_max = MAX_NEW_TOKENS
    page.fill("#prompt textarea", "Count from one to one hundred in words.")
    advanced(page, **{"max-new": n_max, "min-new": n_max})  # no early end: only Stop can end it
    page.evaluate(WATCH_JS)
    page.click("#generate-btn")
    page.wait_for_function("() => window.__generating && document.querySelector('#answer textarea').value.length > 3")
    page.click("#stop-btn")
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('tokens/s')")
    status = page.inner_text("#status")
    assert "stopped after" in status, f"the answer ran to its end before Stop: {status!r}"
    n = int(status.split("stopped after ")[1].split()[0])
    assert 0 < n < n_max
    advanced(page, **{"min-new": 0, "max-new": 12})


def test_right_to_left_answers_are_right_aligned(page):
    """A Hebrew answer starts at the right edge of the box (an English one at the left)."""
    from io import BytesIO

    from PIL import Image

    def ink_center(text: str) -> float:
        """Where the text's pixels are, from 0 (left edge of the box) to 1 (right edge)."""
        page.evaluate("(t) => { document.querySelector('#answer textarea').value = t; }", text)
        img = Image.open(BytesIO(page.locator("#answer textarea").screenshot())).convert("L")
        img = img.crop((8, 4, img.width - 8, min(img.height, 44)))  # inside the border, the first line
        lo, hi = img.getextrema()
        xs = [x for x in range(img.width) for y in range(img.height) if img.getpixel((x, y)) < (lo + hi) / 2]
        return sum(xs) / len(xs) / img.width

    assert ink_center("שלום עולם") > 0.6 and ink_center("hello world") < 0.4


# ---------------------------------------------------------------------------------------------- #4 bad numbers


def test_out_of_range_k_goes_back_with_the_range_and_does_not_reroute(page):
    route(page, "What is 47 + 38?")
    before = page.evaluate(CHART_JS)
    page.evaluate(MARK_JS)
    set_number(page, "#k-slider input[type=number]", 99)
    page.wait_for_function("() => document.querySelector('#settings-notice')?.innerText.includes('between 1 and')")
    assert f"between 1 and {len(POOL)}" in page.inner_text("#settings-notice")
    page.wait_for_function("() => document.querySelector('#k-slider input[type=number]').value === '2'")
    assert not page.evaluate(REDRAWN_JS) and page.evaluate(CHART_JS)["meta"] == before["meta"]


def test_an_empty_module_set_is_an_error_on_the_page(page, app_engine):
    modules = list(app_engine.route_options().module)
    for _ in modules:  # remove every probed module
        page.locator("#module .token-remove").first.click()
    page.wait_for_function("() => document.querySelector('#settings-notice')?.innerText.includes('module')")
    assert "empty" in page.inner_text("#settings-notice")
    for m in modules:  # back to the defaults
        page.locator("#module input[role=combobox]").click()
        page.get_by_role("option", name=m).click()
    page.wait_for_function("() => !document.querySelector('#settings-notice')?.checkVisibility()")


# ---------------------------------------------------------------------------------------------- #5, #6 notes


def test_block_0_explains_its_ties(page, app_engine):
    """At block 0 the last token reads the same embedding for every prompt (the mean over the user's tokens does
    not): with the last token alone and abstaining off, every adapter ties, and the page says why (without token
    evidence, which reads every token; the callbacks' test covers both cases)."""
    if app_engine.route_options().token_evidence:
        pytest.skip(
            "the shipped default's token evidence reads every token: block 0 no longer ties (test_app covers it)"
        )
    page.locator("#pooling label", has_text="last").click()
    set_number(page, "#abstain input[type=number]", -100)
    set_number(page, "#layer textarea, #layer input", "0")
    page.wait_for_function("() => document.querySelector('#notices')?.innerText.includes('Block 0')")
    assert "Tie at the top" in page.inner_text("#notices")
    set_number(page, "#layer textarea, #layer input", app_engine.route_options().layer_text)
    set_number(page, "#abstain input[type=number]", app_engine.route_options().abstain_below)
    page.locator("#pooling label", has_text="both").click()


def test_a_long_prompt_shows_what_was_cut(page, app_engine):
    prompt = "Story start: the keeper woke early. " + " ".join(f"Line {i}." for i in range(3000)) + " Who woke early?"
    route(page, prompt)
    page.wait_for_function("() => document.querySelector('#notices')?.innerText.includes('left out')")
    text = page.inner_text("#notices")
    head, middle, tail = explain.cut_parts(app_engine.router, prompt, 0)  # what the model saw, from the engine's ids
    assert "Prompt cut from" in text  # the library's notice, then where the cut is:
    assert head[-30:] in text and tail[:30] in text and middle[:30] in text and middle[-30:] in text


# ---------------------------------------------------------------------------------------------- #7 how LoGo chose


def test_how_logo_chose_shows_the_engines_numbers(page, app_engine):
    prompt = "Give the plural of the word child."
    route(page, prompt)
    page.get_by_role("tab", name="How LoGo chose").click()
    r = app_engine.route(prompt)
    page.wait_for_function(  # the view follows the new routing (its best adapter first)
        "(top) => document.querySelector('#how-table tbody tr')?.cells[1].innerText === top", arg=r.selected[0]
    )
    rows = page.evaluate(
        "() => [...document.querySelectorAll('#how-table tbody tr')].map(r => [...r.cells].map(c => c.innerText))"
    )
    x = explain.explain(app_engine.router, r)
    ranked = sorted(r.scores, key=lambda n: -r.scores[n])
    if len(rows) < len(ranked):  # a long pool: the best ones, then one row counting the rest
        assert rows[-1][1] == f"{len(ranked) - len(rows) + 1} more" and len(rows) - 1 >= len(r.selected)
        rows = rows[:-1]
    assert [row[1] for row in rows] == ranked[: len(rows)]  # best first
    opts = app_engine.route_options()
    assert x.background  # adapters.yaml's default: columns raw, background mean, background spread (then z)
    for row in rows:
        _, name, raw, mu, sd, *mid, score, chosen, weight = row
        # a z column exactly when the scores are decorrelated, a token t column when the token evidence is on
        assert len(mid) == bool(x.decorrelation) + bool(x.tokens)
        z = mid[:1] if x.decorrelation else []
        i = x.names.index(name)
        if x.tokens:
            assert float(mid[-1]) == pytest.approx(x.tokens[2][i], rel=1e-3, abs=1e-3)
        if z:
            assert float(z[0]) == pytest.approx(sum(s[i] for s in x.per_site) / len(x.sites), rel=1e-3, abs=1e-3)
        raw_engine = [s[i] for s in x.raw]
        stats = [[t[i].item() for t in app_engine.router.background_stats(opts, m, p)] for _, m, p in x.sites]
        assert float(raw) == pytest.approx(sum(raw_engine) / len(raw_engine), rel=1e-3)
        assert float(mu) == pytest.approx(sum(s[0] for s in stats) / len(stats), rel=1e-3, abs=1e-3)
        assert float(sd) == pytest.approx(sum(s[1] for s in stats) / len(stats), rel=1e-3, abs=1e-3)
        assert float(score) == pytest.approx(r.scores[name], rel=1e-3, abs=1e-3)
        assert (chosen == "✔") == (name in r.selected)
        if weight:
            assert float(weight) == pytest.approx(r.weights[name], abs=1e-3)
    summary = page.inner_text("#how-summary")
    assert f"k = {len(r.selected)} of {len(POOL)}" in summary
    assert all(f"= {r.weights[name]:.3f}" in summary for name in r.selected)  # each chosen adapter's weight


def test_how_summary_fits_a_lecture_screen(server):
    page = open_page(server, 1280, 720)
    route(page, "How many grams are in 2.5 kg?")
    page.get_by_role("tab", name="How LoGo chose").click()
    page.wait_for_function("() => document.querySelector('#how-summary')?.innerText.includes('Mixture')")
    box = page.locator("#how-summary").bounding_box()
    assert box["height"] <= 720 and box["width"] <= 1280
    sizes = page.evaluate(
        "() => [...document.querySelectorAll('#how-summary p')].map(p => parseFloat(getComputedStyle(p).fontSize))"
    )
    assert sizes and min(sizes) >= 18
    page.close()


def test_a_setting_links_to_its_step(page):
    page.get_by_role("link", name="k: step 4").click()
    page.wait_for_function(
        "() => { const r = document.getElementById('how-4')?.getBoundingClientRect(); "
        "return r && r.top >= 0 && r.bottom <= innerHeight; }"
    )


# ---------------------------------------------------------------------------------------------- #8 layout


def test_first_screen_shows_prompt_answer_and_chart(server):
    page = open_page(server, 1280, 900)
    for sel in ("#prompt", "#answer", "#signal-plot .main-svg"):
        box = page.locator(sel).first.bounding_box()
        assert box and box["y"] >= 0 and box["y"] + min(box["height"], 200) <= 900, sel
    page.close()


def test_phone_answer_follows_the_prompt_and_title_clears_the_legend(server):
    page = open_page(server, 390, 844, is_mobile=True, has_touch=True, device_scale_factor=2)
    generate(page, "How many grams are in 2.5 kg?")
    prompt, answer = page.locator("#prompt").bounding_box(), page.locator("#answer").bounding_box()
    chart = page.locator("#signal-plot").bounding_box()
    assert prompt["y"] + prompt["height"] <= answer["y"] < chart["y"]
    title = page.locator("#signal-plot .gtitle").first.bounding_box()
    legend = page.locator("#signal-plot .legend").first.bounding_box()
    overlap = not (
        title["x"] + title["width"] <= legend["x"]
        or legend["x"] + legend["width"] <= title["x"]
        or title["y"] + title["height"] <= legend["y"]
        or legend["y"] + legend["height"] <= title["y"]
    )
    assert not overlap
    assert title["x"] + title["width"] <= chart["x"] + chart["width"]  # the title is not cut off either
    page.close()


# ---------------------------------------------------------------------------------------------- #9, #10 downloads


def download(page, selector: str):
    """Click a download button; returns (its URL, its bytes)."""
    with page.expect_download() as info:
        page.click(selector)
    return info.value.url, open(info.value.path(), "rb").read()


def test_trace_download_is_private_and_complete(page, server):
    generate(page, "What is 2 + 2?")
    url, data = download(page, "#trace")
    trace = json.loads(data)
    assert "/gradio_api/file=" in url and trace["text"] == page.input_value("#answer textarea")
    assert trace["provenance"]["adapters"] and set(trace["routing"]["scores"]) == set(POOL)
    generate(page, "What is 2 + 2?")  # the same answer again: a new random name, not a content hash
    url2, data2 = download(page, "#trace")
    assert url2 != url and json.loads(data2)["text"] == trace["text"]
    folder = url.rsplit("/", 1)[0]
    other = server[1].new_context()  # another visitor: the folder, or a guessed name, gives nothing
    for guess in (
        folder + "/",
        folder.rsplit("/", 1)[0] + "/",
        folder.rsplit("/", 1)[0] + "/" + "x" * 24 + "/logo_trace.json",
    ):
        assert other.request.get(guess).status >= 400, guess
    other.close()


# the Compare tab's own blocks (gradio nests a Markdown's class on two elements: the outer one counts)
IN_COMPARE = "(sel) => [...document.querySelector('#compare-btn').closest('[role=tabpanel]').querySelectorAll(sel)]"
TIMINGS = f"({IN_COMPARE})('.logo-timings').filter(e => !e.parentElement.closest('.logo-timings'))"


def test_compare_shows_logo_arrow_and_retrieval_side_by_side(page, app_engine):
    """One click: four answers, each with the adapters it used, its weights and its speed."""
    page.fill("#prompt textarea", "Spell out 19 in German.")
    page.get_by_role("tab", name="Compare").click()
    page.click("#compare-btn")
    page.wait_for_function(
        f"() => {TIMINGS}.filter(e => e.innerText.includes('tokens/s')).length === 4",
        timeout=240_000,  # Arrow's model and the retriever are built on the first Compare
    )
    labels = page.evaluate(f"() => ({IN_COMPARE})('.answer label span').map(e => e.innerText)")
    assert [x for x in labels if x in callbacks.COMPARE] == list(callbacks.COMPARE)
    details = page.evaluate(f"() => {TIMINGS}.map(e => e.innerText)")
    assert "base model alone" in details[0]
    assert "top_k 2 per token" in details[2] and any(n in details[2] for n in POOL)
    assert details[3].count("50%") == 2  # retrieval at the page's k = 2, uniform weights
    answers = page.evaluate(f"() => ({IN_COMPARE})('.answer textarea').map(e => e.value)")
    assert len([a for a in answers if a.strip()]) >= 4
