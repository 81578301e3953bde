"""The app's callbacks on the real model with the shipped pool of trained adapters: figures, messages, bad input."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import gradio as gr
import pytest
from app_fixtures import POOL

import app
from logo_core import plots
from logo_core.engine import LoGoEngine
from logo_core.pool import AdapterPool, LoadReport
from logo_core.registry import RoutingDefaults

PROMPT = "What is the capital of France?"
DEFAULTS = dict(k=2, signal="norm", calibrated=True, layer=29, module=["q_proj"], probe_input="residual")


def controls(**changes) -> list:
    """UI control values in the order the callbacks take them."""
    return list({**DEFAULTS, **changes}.values())


@pytest.fixture(scope="module")
def cb(app_engine) -> app.Callbacks:
    return app.Callbacks(app_engine)


def bars(fig) -> dict[str, list[str]]:
    """Trace name -> adapter names of a `signal_bars` figure."""
    return {t.name: list(t.y) for t in fig.data}


def download(update: dict) -> dict:
    """The JSON trace behind the 'Export routing as JSON' button."""
    return json.loads(Path(update["value"]).read_text())


def visible_markdowns(demo: gr.Blocks) -> list[str]:
    return [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown) and b.visible and b.value]


# ------------------------------------------------------------------------------------------ layout


def test_create_demo_builds_all_views(app_engine):
    demo = app.create_demo(app_engine)
    labels = {b.label for b in demo.blocks.values() if isinstance(b, gr.Tab)}
    assert labels == {"Answer & routing", "Compare", "Layer sweep", "About"}
    sliders = {b.label: b for b in demo.blocks.values() if isinstance(b, gr.Slider)}
    assert (sliders["k (adapters merged)"].minimum, sliders["k (adapters merged)"].maximum) == (1, len(POOL))
    assert (sliders["Probe block"].minimum, sliders["Probe block"].maximum) == (0, app_engine.n_layers - 1)
    assert any("arxiv.org/abs/2511.07129" in m for m in visible_markdowns(demo))
    assert not any("left out" in m for m in visible_markdowns(demo))  # a clean start shows no warning
    assert demo._queue.default_concurrency_limit == 2


def test_startup_problems_are_shown(app_engine):
    report = LoadReport({"broken": "adapter 'broken' (/x): adapter_model.safetensors is missing"})
    e = LoGoEngine(app_engine.model, app_engine.tokenizer, app_engine.pool, app_engine.defaults, load_report=report)
    assert any("'broken' was left out" in m for m in visible_markdowns(app.create_demo(e)))


def test_unusable_defaults_are_shown(app_engine):
    defaults = RoutingDefaults(k=2, module="k_proj")  # the pool adapts q_proj and v_proj only
    e = LoGoEngine(app_engine.model, app_engine.tokenizer, app_engine.pool, defaults)
    with pytest.warns(UserWarning):  # gradio: the dropdown's value is not among its choices
        demo = app.create_demo(e)
    assert any("do not fit this pool" in m and "k_proj" in m for m in visible_markdowns(demo))


def test_empty_pool_builds_and_explains(app_engine):
    e = LoGoEngine(app_engine.model, app_engine.tokenizer, AdapterPool([], []), app_engine.defaults)
    assert any("pool is empty" in m for m in visible_markdowns(app.create_demo(e)))
    out = app.Callbacks(e).route(PROMPT, *controls(k=1))
    assert out[2]["visible"] and "pool is empty" in out[2]["value"]


def test_examples_cover_every_adapter_and_unseen_tasks(app_engine):
    rows, labels = app.example_prompts(app_engine)
    assert len(rows) == len(labels)
    for name in POOL:
        assert any(label.startswith(f"{name}: ") for label in labels)
    assert any(label.startswith("unseen · ") for label in labels)


# ------------------------------------------------------------------------------------------ routing


def test_route_draws_every_adapter_and_highlights_top_k(cb, app_engine):
    fig, weights_fig, notice, timing, export = cb.route(PROMPT, *controls(k=2))
    trace = download(export)
    r = app_engine.route(PROMPT, **app.route_kwargs(*controls(k=2)))
    got = bars(fig)
    assert got[plots.SELECTED_TRACE] == r.selected  # best first, highlighted
    assert sorted(got[plots.SELECTED_TRACE] + got[plots.OTHER_TRACE]) == sorted(POOL)
    assert [s.y0 for s in fig.layout.shapes] == [1.5]  # the cut-off between rank 2 and rank 3
    descriptions = [row[0] for t in fig.data for row in t.customdata]
    assert any("capital" in d for d in descriptions)  # task descriptions on hover
    assert list(weights_fig.data[0].y) == sorted(r.weights, key=lambda n: -r.weights[n])
    assert sum(weights_fig.data[0].x) == pytest.approx(1.0)
    assert not notice["visible"]
    assert timing.startswith("probe ") and "routing only" in timing
    assert trace["selected"] == r.selected and trace["scores"] == pytest.approx(r.scores)


def test_changing_k_changes_the_highlighted_set(cb):
    sizes = {k: len(bars(cb.route(PROMPT, *controls(k=k))[0])[plots.SELECTED_TRACE]) for k in (1, 3, len(POOL))}
    assert sizes == {1: 1, 3: 3, len(POOL): len(POOL)}
    assert not cb.route(PROMPT, *controls(k=len(POOL)))[0].layout.shapes  # no cut-off when all are chosen


@pytest.mark.parametrize(
    "changes",
    [dict(signal="entropy"), dict(calibrated=False), dict(layer=10), dict(probe_input="module"), dict(module=[])],
)
def test_every_control_reroutes(cb, app_engine, changes):
    fig, _, notice, _, export = cb.route(PROMPT, *controls(**changes))
    trace = download(export)
    assert not notice["visible"] and len(trace["scores"]) == len(POOL)
    opts = trace["options"]
    for key, value in changes.items():  # the trace records the resolved lists of blocks and modules
        if key == "layer":
            assert opts["layers"] == [value]
        elif key == "module":
            assert opts["modules"] == list(app_engine.options().modules)  # no module chosen -> the default
        else:
            assert opts[key] == value


@pytest.mark.parametrize(
    ("prompt", "changes", "message"),
    [
        ("", {}, "prompt` is empty"),
        ("  \n\t ", {}, "prompt` is empty"),
        (PROMPT, {"k": len(POOL) + 1}, f"between 1 and {len(POOL)}"),
    ],
)
def test_bad_route_requests_show_a_message(cb, prompt, changes, message):
    fig, _, notice, timing, export = cb.route(prompt, *controls(**changes))
    assert notice["visible"] and message in notice["value"]
    assert message in fig.layout.annotations[0].text  # the chart says it too
    assert export["value"] is None and export["interactive"] is False and timing == ""


def test_huge_prompt_is_truncated_with_a_notice(cb):
    fig, _, notice, _, _ = cb.route("Tell me about the sea. " * 2200, *controls())  # ~50,000 characters
    assert notice["visible"] and "truncated" in notice["value"]
    assert len(bars(fig)[plots.SELECTED_TRACE]) == 2  # and it still routes


def test_odd_unicode_routes(cb):
    prompt = "¿Qué tal? 中文 עברית 😀 \u200b\u202e ﷽ e\u0301 \x07"
    fig, _, notice, _, export = cb.route(prompt, *controls())
    assert not notice["visible"] and download(export)["prompt"] == prompt


# ------------------------------------------------------------------------------------------ generation


def test_generate_streams_then_reports_timings(cb):
    steps = list(cb.generate("Count to five.", *controls(), 8))
    first, last = steps[0], steps[-1]
    assert first[0] == "" and bars(first[1])[plots.SELECTED_TRACE]  # the chart comes before the answer
    assert "generating" in first[4]
    assert download(first[5])["selected"] == bars(first[1])[plots.SELECTED_TRACE]  # the routing is downloadable
    assert len(steps) >= 3  # at least one streamed piece between the chart and the end
    text, trace = last[0], download(last[5])
    assert text and trace["text"] == text
    assert "tokens/s" in last[4] and "generation" in last[4]
    assert trace["routing"]["selected"] == download(first[5])["selected"]


@pytest.mark.parametrize(("prompt", "changes"), [("", {}), (PROMPT, {"k": 0}), (PROMPT, {"layer": 99})])
def test_bad_generate_requests_raise_gr_error(cb, prompt, changes):
    with pytest.raises(gr.Error):
        next(cb.generate(prompt, *controls(**changes), 8))


def test_generate_if_only_when_asked(cb):
    assert list(cb.generate_if(False, PROMPT, *controls(), 4)) == [(gr.skip(),) * 6]
    assert list(cb.generate_if(True, PROMPT, *controls(), 4))[-1][0]


def test_concurrent_requests_do_not_mix(cb):
    """Two users at once: each gets the answer and trace of their own prompt and settings."""
    jobs = {"a": ("What is 20 + 22?", 1), "b": ("Translate to French: the dog runs.", 3)}
    solo = {u: cb.api_generate(p, k=k, max_new_tokens=6) for u, (p, k) in jobs.items()}
    together = {}
    threads = [
        threading.Thread(target=lambda u=u, p=p, k=k: together.update({u: cb.api_generate(p, k=k, max_new_tokens=6)}))
        for u, (p, k) in jobs.items()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for u in jobs:
        assert together[u][0] == solo[u][0]
        assert together[u][1]["routing"]["weights"] == pytest.approx(solo[u][1]["routing"]["weights"])


# ------------------------------------------------------------------------------------------ compare & sweep


def test_compare_answers_four_ways_with_latencies(cb):
    steps = list(cb.compare(PROMPT, *controls(), 4))
    answers, details, latency = steps[-1][:4], steps[-1][4:8], steps[-1][8]
    assert all(isinstance(a, str) for a in answers)
    assert all(" s**" in d for d in details)
    assert "base model alone" in details[0] and "100%" in details[2]  # base model alone; top-1 adapter alone
    assert list(latency.data[0].y) == ["Base model", "LoGo", "Top-1 adapter", "Uniform mixture"]
    assert len(steps) == 5  # one update per finished variant, after the first
    assert f"all {len(POOL)} adapters, {1 / len(POOL):.0%} each" in details[3]


def test_compare_bad_input_raises(cb):
    with pytest.raises(gr.Error, match="empty"):
        list(cb.compare("", *controls(), 4))


def test_sweep_heatmap_and_cached_redraw(cb, app_engine, monkeypatch):
    fig, cache = cb.sweep(PROMPT, *controls(), True, None)
    heat = fig.data[0]
    assert len(heat.z) == app_engine.n_layers and all(len(row) == len(POOL) for row in heat.z)
    assert list(heat.x) == list(POOL)
    assert max(heat.z[5]) == pytest.approx(1.0)  # each block scaled to its best adapter
    assert [(s.y0, s.y1) for s in fig.layout.shapes] == [(28.5, 29.5)]  # the probe block in use, outlined

    def no_probe(*a, **kw):
        raise AssertionError("the sweep should come from the session cache")

    monkeypatch.setattr(app_engine, "layer_sweep", no_probe)
    fig2, cache2 = cb.sweep(PROMPT, *controls(k=1, layer=3), False, cache)  # k and layer need no new sweep
    assert cache2 is cache
    assert list(fig2.data[0].z[5]) == cache["z"][5]  # unscaled now
    assert cb.sweep_figure(None, True, 29).layout.annotations  # placeholder before any sweep


def test_sweep_bad_input_shows_message(cb):
    fig, cache = cb.sweep("", *controls(), True, None)
    assert cache is None and "empty" in fig.layout.annotations[0].text


# ------------------------------------------------------------------------------------------ API functions & helpers


def test_api_route_and_generate(cb):
    trace = cb.api_route(PROMPT, k=3)
    assert len(trace["selected"]) == 3 and sum(trace["weights"].values()) == pytest.approx(1.0)
    with pytest.raises(gr.Error, match=f"between 1 and {len(POOL)}"):
        cb.api_route(PROMPT, k=len(POOL) + 3)
    with pytest.raises(gr.Error, match="signal"):
        cb.api_generate(PROMPT, signal="loudness")


def test_timing_line():
    t = {"probe_s": 0.021, "generate_s": 2.1, "new_tokens": 64, "tokens_per_s": 30.47, "total_s": 2.13}
    assert app.timing_line(t) == "probe 21 ms · generation 2.10 s · 64 tokens · 30.5 tokens/s · total 2.13 s"
    assert app.timing_line({"probe_s": 0.5}) == "probe 500 ms"


def test_write_trace_reuses_one_file_per_content():
    a, b = app.write_trace({"x": 1}), app.write_trace({"x": 1})
    assert a == b and json.loads(Path(a).read_text()) == {"x": 1}
    assert app.write_trace({"x": 2}) != a


def test_route_kwargs_from_ui_values():
    kw = app.route_kwargs(3.0, "entropy", 1, 29.0, [], "module")
    assert kw == dict(k=3, signal="entropy", calibrated=True, layer=29, module=None, probe_input="module")
    assert app.route_kwargs(1, "norm", False, 0, "v_proj", "residual")["module"] == ["v_proj"]


def test_args_flags_and_env(monkeypatch):
    for var in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "PORT"):
        monkeypatch.delenv(var, raising=False)
    args = app.parse_args([])
    assert (args.host, args.port, args.config) == ("127.0.0.1", 7860, "adapters.yaml")
    monkeypatch.setenv("PORT", "8080")
    assert app.parse_args([]).port == 8080
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "9000")
    args = app.parse_args([])
    assert (args.host, args.port) == ("0.0.0.0", 9000)
    args = app.parse_args(["--host", "localhost", "--port", "7000", "--config", "x.yaml"])
    assert (args.host, args.port, args.config) == ("localhost", 7000, "x.yaml")


def test_missing_config_exits_with_the_message():
    with pytest.raises(SystemExit, match="cannot read the adapter pool file"):
        app.main(["--config", "/nonexistent/adapters.yaml"])
