"""The app's callbacks, page build and helpers on the real model with the shipped pool (no browser)."""

from __future__ import annotations

import copy
import json
import os
import stat
import threading
import time
import zipfile
from pathlib import Path

import gradio as gr
import pytest
import torch
from app_fixtures import POOL, ROOT, values
from helpers import concurrently

import app
from logo_core import calibration, callbacks, explain, hosting, plots
from logo_core.engine import LoGoEngine
from logo_core.errors import LoGoError
from logo_core.mixing import LEAD_SHARE, attach
from logo_core.pool import AdapterPool, LoadReport
from logo_core.registry import Defaults, UnseenExample, load_config

PROMPT = "Write the number 342 in French words."  # a pool prompt: routed, not abstained


@pytest.fixture(scope="module")
def page(app_engine) -> callbacks.Page:
    with gr.Blocks():
        return app.layout(app_engine)


@pytest.fixture(scope="module")
def cb(app_engine, page) -> callbacks.Callbacks:
    return callbacks.Callbacks(app_engine, hosting.PrivateFiles(), page)


def outputs(page: callbacks.Page, result: dict) -> dict:
    """A callback's {component: value} by the page's names; what it leaves as it is reads gr.skip()."""
    named = vars(page) | page.controls
    return {n: result.get(c, gr.skip()) for n, c in named.items() if isinstance(c, gr.components.Component)}


def components(demo: gr.Blocks, kind) -> list:
    return [b for b in demo.blocks.values() if isinstance(b, kind)]


def visible_markdowns(demo: gr.Blocks) -> list[str]:
    return [b.value for b in components(demo, gr.Markdown) if b.visible and b.value]


# ------------------------------------------------------------------------------------------ page build


def test_page_starts_from_adapters_yaml_and_shows_every_view(app_engine):
    demo = app.create_demo(app_engine)
    assert {b.label for b in components(demo, gr.Tab)} >= {"How LoGo chose", "Compare", "Layer sweep", "About"}
    opts = app_engine.route_options()
    by_label = {b.label: b for b in demo.blocks.values() if getattr(b, "label", None)}
    k = by_label["k · adapters merged"]
    assert (k.minimum, k.maximum, k.value) == (1, len(POOL), opts.k)
    assert (
        by_label["Probe block(s)"].value == opts.layer_text == load_config(ROOT / "adapters.yaml").defaults.layer_text
    )
    assert by_label["Probe module(s)"].value == list(opts.module)
    assert by_label["Signal"].value == opts.signal and by_label["Calibrated"].value == opts.calibrated
    assert by_label["Signal"].choices == [
        (c, c) for c in ("norm", "entropy", "subspace", "subspace_cos")
    ]  # the options model's choices
    assert app.start_values(app_engine)["max_new_tokens"] == app_engine.defaults.max_new_tokens
    assert demo._queue.max_size == app.QUEUE_SIZE and demo._queue.default_concurrency_limit == app.CONCURRENCY
    assert any("arxiv.org/abs/2511.07129" in m for m in visible_markdowns(demo))
    assert not any("⚠️" in m for m in visible_markdowns(demo))  # a clean start shows no warning


def test_startup_problems_and_an_empty_pool_are_shown(app_engine):
    report = LoadReport({"broken": "adapter 'broken' (/x): adapter_model.safetensors is missing"})
    e = LoGoEngine(app_engine.model, app_engine.tokenizer, app_engine.pool, load_report=report)
    assert any("broken" in m for m in visible_markdowns(app.create_demo(e)))
    e = LoGoEngine(app_engine.model, app_engine.tokenizer, AdapterPool([], []))
    assert any("pool is empty" in m for m in visible_markdowns(app.create_demo(e)))
    with gr.Blocks():
        cb = callbacks.Callbacks(e, hosting.PrivateFiles(), page := app.layout(e))
    assert "pool is empty" in outputs(page, cb.route(PROMPT, None, *values(e)))["notices"]["value"]


def test_unfit_defaults_are_shown_as_they_are(app_engine):
    cfg, router = copy.copy(app_engine), copy.copy(app_engine.router)
    cfg.router, cfg.defaults = router, Defaults(k=2, module=("k_proj",))  # the pool adapts q_proj and v_proj only
    router.defaults = cfg.defaults
    with pytest.warns(UserWarning):  # gradio: the dropdown's value is not among its choices
        demo = app.create_demo(cfg)
    assert any("do not fit this pool" in m and "k\\_proj" in m for m in visible_markdowns(demo))


def test_examples_by_family_with_unseen_tasks(app_engine):
    unseen = [UnseenExample(task="ordinal_words_fr", family="", prompt="Spell out the French ordinal for 71.")]
    groups = app.example_groups(app_engine, unseen)
    labels = [label for items in groups.values() for label, _ in items]
    assert all(name in labels for name in POOL)
    assert ("unseen · ordinal_words_fr", unseen[0].prompt) in groups["held-out families"]


# ------------------------------------------------------------------------------------------ routing


def test_route_draws_what_was_probed(cb, page, app_engine):
    o = outputs(page, cb.route(PROMPT, None, *values(app_engine)))
    r = app_engine.route(PROMPT)
    fig = o["chart"]
    order = fig.layout.meta["order"]  # the best TOP bars; the tail is counted in "hidden"
    assert (
        fig.layout.meta["selected"] == r.selected
        and order == sorted(r.scores, key=lambda n: -r.scores[n])[: callbacks.TOP]
    )
    assert fig.layout.meta["hidden"] == len(POOL) - callbacks.TOP
    assert fig.layout.title.text == f"Adapter signal · calibrated {r.options['signal']}"
    o_ = r.options
    where = (
        f"blocks {o_['blocks'][0]}-{o_['blocks'][-1]} (mean)" if len(o_["blocks"]) > 1 else f"block {o_['blocks'][0]}"
    )
    tokens = ""
    if o_["token_weight"]:  # the token evidence's own blocks, and how it pools (adapters.yaml's default has it)
        t = o_["token_blocks"]
        by = ", by recency" if o_["token_pooling"] == "recency" else ""
        tokens = f" · + token evidence {o_['token_weight']:g} × blocks {t[0]}-{t[-1]}{by}"
    assert (
        fig.layout.title.subtitle.text.replace("<br>", " · ")
        == f"{where} · {', '.join(o_['module'])} · {o_['probe_input']} input{tokens}"
    )
    assert o["routing"]["scores"] == pytest.approx(r.scores) and "routing only" in o["status"]
    assert o["answer"] == gr.skip()  # no answer yet: nothing to mark


@pytest.mark.parametrize(
    ("changes", "blocks"),
    [({"layer": "20:25"}, [20, 21, 22, 23, 24]), ({"layer": "3,7"}, [3, 7]), ({"layer": -1}, [29])],
)
def test_the_page_takes_every_layer_form(cb, page, app_engine, changes, blocks):
    start = app.start_values(app_engine)
    o = outputs(page, cb.settings(PROMPT, None, start, *values(app_engine, **changes)))
    assert o["routing"]["options"]["blocks"] == blocks and not o["settings_notice"]["visible"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"k": 99}, f"between 1 and {len(POOL)}"), ({"layer": "40"}, "layer"), ({"temperature": 0}, "temperature")],
)
def test_a_bad_number_goes_back_without_rerouting(cb, page, app_engine, monkeypatch, changes, message):
    valid = app.start_values(app_engine) | {"k": 3}

    def no_route(*a, **kw):
        raise AssertionError("a bad setting must not re-route")

    monkeypatch.setattr(app_engine, "route", no_route)
    o = outputs(page, cb.settings(PROMPT, None, valid, *values(app_engine, **changes)))
    assert o["settings_notice"]["visible"] and message in o["settings_notice"]["value"]
    assert o["k"] == 3 and o["layer"] == valid["layer"] and o["temperature"] == valid["temperature"]
    assert o["chart"] == gr.skip() and o["valid"] == gr.skip()


def test_a_valid_setting_leaves_typed_numbers_alone(cb, page, app_engine):
    """A settings event answers after the visitor may have typed more: it writes no number back, sliders
    included (a slow k event wrote the old max-new back over a newer one), so nothing typed meanwhile is undone."""
    o = outputs(page, cb.settings(PROMPT, None, app.start_values(app_engine), *values(app_engine, max_new_tokens=200)))
    assert o["valid"]["max_new_tokens"] == 200 and not o["settings_notice"]["visible"]
    numbers = ("k", "max_new_tokens", "min_new_tokens", "layer", "temperature", "top_p", "top_k", "seed")
    assert all(o[f] == gr.skip() for f in numbers)


def test_a_lenient_slider_stays_lenient_when_gradio_rebuilds_it(page):
    """An update of an output (even a skip) rebuilds the slider for the session from its constructor
    arguments (gradio's `postprocess_data`); the rebuilt k still lets an out-of-range number through."""
    k = page.controls["k"]
    rebuilt = k.__class__(**{**k.constructor_args, "render": False})
    assert rebuilt.preprocess(999) == 999 == k.preprocess(999)
    with pytest.raises(gr.Error):
        gr.Slider(1, 5, render=False).preprocess(999)  # other sliders keep gradio's check


def test_an_empty_module_set_is_an_error(cb, page, app_engine):
    o = outputs(page, cb.settings(PROMPT, None, app.start_values(app_engine), *values(app_engine, module=[])))
    assert "module\\` is empty" in o["settings_notice"]["value"]


def test_block_0_explains_its_ties(cb, page, app_engine):
    block0 = dict(layer="0", pooling="last", abstain_below=-100)
    o = outputs(page, cb.route(PROMPT, None, *values(app_engine, **block0, token_weight=0)))
    assert "Block 0 routes every prompt alike" in o["notices"]["value"] and "Tie at the top" in o["notices"]["value"]
    assert o["routing"]["ties"] and o["chart"].data[0].marker.pattern.shape  # tied bars hatched
    # the token evidence reads every token of the prompt: no longer alike, so no such note
    o = outputs(page, cb.route(PROMPT, None, *values(app_engine, **block0, token_weight=1.0)))
    assert "Block 0 routes every prompt alike" not in (o["notices"].get("value") or "") and not o["routing"]["ties"]


def test_a_greeting_abstains_and_how_logo_chose_says_it_was_too_short(cb, page, app_engine):
    routing = outputs(page, cb.route("Hi!", None, *values(app_engine)))["routing"]
    assert routing["selected"] == [] and routing["options"]["abstain_reason"] == "short"
    how = cb.explain(routing)[0]
    m = app_engine.route_options().abstain_min_tokens  # adapters.yaml's, the lab's dev choice
    assert f"shorter than `abstain_min_tokens` = {m}" in how and "No adapter stands out" not in how
    off = outputs(page, cb.route("Hi!", None, *values(app_engine, abstain_min_tokens=0, abstain_below=-100)))
    assert off["routing"]["options"]["mode"] == "routed"  # the control turns it off


def test_the_weighting_control_sets_the_merge_weights(cb, page, app_engine):
    """adapters.yaml's `lead`: the best adapter at full strength; the paper's `proportional`: weights summing to 1.
    The same adapters either way, and How LoGo chose names the formula used."""
    lead = outputs(page, cb.route(PROMPT, None, *values(app_engine, k=3)))["routing"]
    paper = outputs(page, cb.route(PROMPT, None, *values(app_engine, k=3, weighting="proportional")))["routing"]
    assert lead["options"]["weighting"] == "lead" and paper["options"]["weighting"] == "proportional"
    assert lead["selected"] == paper["selected"] and len(lead["selected"]) == 3
    first, *rest = lead["selected"]
    assert lead["weights"][first] == 1.0 and sum(paper["weights"].values()) == pytest.approx(1.0)
    assert all(lead["weights"][n] == pytest.approx(LEAD_SHARE * paper["weights"][n]) for n in rest)
    assert "(`lead`)" in cb.explain(lead)[0] and "(`lead`)" not in cb.explain(paper)[0]


def test_a_long_prompt_says_which_part_was_cut(cb, page, app_engine):
    prompt = "Start here. " + " ".join(f"item{i}" for i in range(3000)) + " Finally: what came first?"
    head, middle, tail = explain.cut_parts(app_engine.router, prompt, 0)
    assert head + middle + tail == prompt and prompt.startswith(head) and middle  # the cut is the middle
    assert tail.endswith("what came first?") and head.startswith("Start here.")
    note = outputs(page, cb.route(prompt, None, *values(app_engine)))["notices"]["value"]
    assert "Prompt cut from" in note and callbacks.plain(middle[:30]) in note and callbacks.plain(tail[:30]) in note
    assert explain.cut_parts(app_engine.router, PROMPT, 0) is None


def test_user_text_never_becomes_markup():
    text = "<img src=x onerror=alert(1)> **bold** [link](http://x) `code` $x$ # head"
    shown = callbacks.plain(text)
    assert "<" not in shown.replace("\\<", "") and "[" not in shown.replace("\\[", "")
    assert all(f"\\{c}" in shown for c in "<*[`$#")


# ------------------------------------------------------------------------------------------ answers


def test_generate_streams_marks_and_records(cb, page, app_engine):
    vals = values(app_engine, max_new_tokens=6)
    steps = [outputs(page, s) for s in cb.generate("v1", PROMPT, *vals)]
    first, last = steps[0], steps[-1]
    assert first["answer"]["value"] == "" and first["chart"].layout.meta["selected"]  # chart before the answer
    assert first["status"] == "generating…" and first["trace"]["value"] is None
    assert len(steps) >= 3 and last["answer"]
    assert "tokens/s" in last["status"] and "first token" in last["status"] and "stopped" not in last["status"]
    trace = json.loads(Path(last["trace"]["value"]).read_text())
    assert trace["text"] == last["answer"] and trace["routing"]["selected"] == first["routing"]["selected"]
    answered = last["answered"]  # the answer now belongs to this prompt and these settings
    assert cb.answer_label(PROMPT, answered, *vals)["label"] == "Answer"
    stale = cb.answer_label(PROMPT, answered, *values(app_engine, max_new_tokens=6, k=3))
    assert stale["label"] == callbacks.STALE and "stale" in stale["elem_classes"]
    assert cb.answer_label(PROMPT + " Now.", answered, *vals)["label"] == callbacks.STALE


def test_stop_says_after_how_many_tokens(cb, page, app_engine):
    vals = values(app_engine, max_new_tokens=40, min_new_tokens=40)  # only Stop can end it early
    run = cb.generate("v2", "Count from one to fifty.", *vals)
    next(run)
    for step in run:
        if step.get(page.answer):  # the first piece of the answer
            cb.stop("v2")
            break
    last = outputs(page, list(run)[-1])
    n = int(last["status"].split("stopped after ")[1].split()[0])
    assert 0 < n < 40 and json.loads(Path(last["trace"]["value"]).read_text())["stopped"]
    cb.stop("nobody")  # Stop with nothing running does nothing


def test_bad_generate_requests_show_the_message(cb, page, app_engine):
    o = outputs(page, next(cb.generate("v3", "  ", *values(app_engine))))
    assert "prompt\\` is empty" in o["notices"]["value"] and o["answer"] == gr.skip()


def test_the_trace_replays_to_the_same_answer(cb, page, app_engine, capsys):
    from logo_core.__main__ import main as cli

    vals = values(app_engine, max_new_tokens=8, do_sample=True, temperature=0.9, seed=1234)
    last = outputs(page, list(cb.generate("v4", "Name a colour.", *vals))[-1])
    path = last["trace"]["value"]
    trace = json.loads(Path(path).read_text())
    assert trace["generation"]["seed"] == 1234 and trace["provenance"]["adapters"]
    assert cli(["replay", path]) == 0  # a new engine from adapters.yaml, the trace's settings, the same text
    assert "identical answer" in capsys.readouterr().out


def test_exported_mixture_is_a_peft_adapter_with_the_engines_logits(cb, app_engine, tmp_path):
    from peft import PeftModel

    r = app_engine.route(PROMPT, k=3)
    update = cb.export(r.to_dict())
    with zipfile.ZipFile(update["value"]) as z:
        z.extractall(tmp_path)
    peft = PeftModel.from_pretrained(copy.deepcopy(app_engine.model), str(tmp_path / "logo_mixture")).eval()
    enc = app_engine.encode([PROMPT], 0, app_engine.placement.device)
    view = attach(app_engine.model, app_engine.decoder.mixture_for([r]), fold_weights=app_engine.decoder.fold)
    with torch.inference_mode():
        ours, theirs = view(**enc.inputs()).logits, peft(**enc.inputs()).logits
        base = app_engine.model(**enc.inputs()).logits
    # float32 summation order differs (rank-concatenated vs per-adapter sums) by ~1e-4 on logits up to ~40;
    # a wrong weight or scaling moves them by far more than the mixture's own distance from the base model
    assert (ours - base).abs().max() > 100 * (ours - theirs).abs().max()
    assert torch.allclose(ours, theirs, atol=1e-3, rtol=1e-4)
    assert cb.export(None) == gr.update(visible=False)
    # top-k keeps a chosen adapter whose score is not positive at weight 0: the export leaves it out
    first, second = POOL[:2]

    def exported(weights: dict) -> bytes:
        with zipfile.ZipFile(cb.export({**r.to_dict(), "weights": weights})["value"]) as z:
            return z.read("logo_mixture/adapter_model.safetensors")

    assert exported({first: 1.0, second: 0.0}) == exported({first: 1.0}) != exported({first: 0.5, second: 0.5})


# ------------------------------------------------------------------------------------------ how LoGo chose


def test_explanation_numbers_are_the_engines(cb, app_engine):
    r = app_engine.route(PROMPT)
    x = explain.explain(app_engine.router, r)
    o_ = r.options
    poolings = ["last", "mean"] if o_["pooling"] == "both" else [o_["pooling"]]
    assert sorted(x.sites) == sorted((b, m, p) for b in o_["blocks"] for m in o_["module"] for p in poolings)
    assert o_["calibration"] == "background"  # adapters.yaml's default: z-scores against the background
    stats = app_engine.router.background_stats
    opts = app_engine.route_options()
    z = torch.tensor([[sum(s[i] for s in x.per_site) / len(x.sites) for i in range(len(x.names))]])
    if opts.decorrelation:  # the mean over sites is z; the score is z decorrelated (`calibration.decorrelate`)
        assert x.decorrelation[0] == opts.decorrelation and "decorrelation" in explain.summary_markdown(x)
        z = calibration.decorrelate(z, app_engine.router.decorrelation(opts))
    if opts.token_evidence:  # then the token evidence, w t (`Router.token_scores`), recomputed here from a new probe
        from logo_core.router import user_weights

        assert x.tokens[:2] == (
            opts.token_evidence,
            list(opts.token_blocks),
        ) and "token evidence" in explain.summary_markdown(x)
        enc = app_engine.encode([PROMPT], 0, app_engine.placement.device)
        hs = app_engine.router._probe(enc, [opts])
        t = app_engine.router.token_scores(hs, user_weights(enc, opts.token_pooling), opts)
        assert t[0].tolist() == pytest.approx(x.tokens[2], rel=1e-4, abs=1e-4)
        z = z + opts.token_evidence * t
    assert z[0].tolist() == pytest.approx([r.scores[n] for n in x.names], rel=1e-4, abs=1e-4)
    for i in range(len(x.names)):
        for s, (_b, m, p) in enumerate(x.sites):
            mu, sd = (t[i].item() for t in stats(opts, m, p))
            assert (x.shifts[s][i], x.constants[s][i]) == (pytest.approx(mu), pytest.approx(sd))
            assert (x.raw[s][i] - mu) / sd == pytest.approx(x.per_site[s][i], rel=1e-4, abs=1e-5)
    b0, m0, p0 = x.sites[0]
    raw = app_engine.route(PROMPT, calibrated=False, layer=b0, module=m0, pooling=p0, k=1)  # one site, raw
    assert raw.scores[x.names[0]] == pytest.approx(x.raw[0][0], rel=1e-5)
    summary, table, sites = cb.explain(r.to_dict())
    assert all(f'id="how-{i}"' in summary for i in range(1, 7))
    rows = len(POOL) if len(POOL) <= 2 * callbacks.TOP else callbacks.TOP + 1  # a long pool: the best TOP and "N more"
    assert f"k = {len(r.selected)} of {len(POOL)}" in summary and table.count("\n") == rows + 1
    first, last = o_["blocks"][0], o_["blocks"][-1]
    m_first, m_last = o_["module"][0], o_["module"][-1]  # adapters.yaml's probed modules
    assert f"| {first} · {m_first} · last |" in sites and f"| {last} · {m_last} · mean |" in sites
    assert "μ (background mean)" in sites and "background prompts" in summary


# ------------------------------------------------------------------------------------------ compare & sweep


def test_compare_shows_each_peer_its_adapters_and_speed_and_leaves_the_shared_model_alone(cb, app_engine):
    before = {n: p.clone() for n, p in app_engine.model.named_parameters() if n.endswith("q_proj.weight")}
    steps = list(cb.compare(PROMPT, *values(app_engine, max_new_tokens=3)))
    n = len(callbacks.COMPARE)
    answers, details, latency = steps[-1][:n], steps[-1][n : 2 * n], steps[-1][2 * n]
    assert callbacks.COMPARE == ("Base model", "LoGo", "Arrow (PEFT)", "Retrieval")
    assert all(isinstance(a, str) and a for a in answers)
    assert all("first token" in d and "tokens/s" in d for d in details)
    assert "base model alone" in details[0]
    arrow, retrieval = details[2], details[3]
    assert "top\\_k 2 per token" in arrow and any(name in arrow.replace("\\", "") for name in POOL)
    assert retrieval.count("50\\%") == 2  # k=2, uniform
    assert [list(t.y) for t in latency.data] == [list(callbacks.COMPARE)] * 2  # time to first token | tokens per second
    assert all(v > 0 for t in latency.data for v in t.x)
    # Arrow runs on its own copy: the engine's model has no PEFT layers and the same weights
    assert not any("lora" in n or "arrow" in n for n, _ in app_engine.model.named_modules())
    assert all(torch.equal(p, before[n]) for n, p in app_engine.model.named_parameters() if n in before)


def test_compare_says_why_logo_answered_with_the_base_model(cb, app_engine):
    """An off-pool question is unlike every background prompt (the shipped `nearest` gate): LoGo's row says so."""
    steps = list(cb.compare("Who wrote Hamlet?", *values(app_engine, max_new_tokens=3)))
    logo = steps[-1][len(callbacks.COMPARE) + 1]
    assert "LoGo abstained" in logo and "unlike the prompts this pool is for" in logo


def test_sweep_outlines_the_probed_blocks_and_redraws_from_the_cache(cb, app_engine, monkeypatch):
    fig, cache = cb.sweep(PROMPT, None, True, *values(app_engine))
    assert len(fig.data[0].z) == app_engine.n_layers and list(fig.data[0].x) == list(POOL)
    blocks = app_engine.route_options().blocks  # a contiguous range or one block: one box
    assert [(s.y0, s.y1) for s in fig.layout.shapes] == [(blocks[0] - 0.5, blocks[-1] + 0.5)]
    monkeypatch.setattr(app_engine.router, "layer_sweep", lambda *a, **k: pytest.fail("should come from the cache"))
    fig2, cache2 = cb.sweep(PROMPT, cache, False, *values(app_engine, k=1, layer="3,5"))
    assert cache2 is cache and [(s.y0, s.y1) for s in fig2.layout.shapes] == [(2.5, 3.5), (4.5, 5.5)]


# ------------------------------------------------------------------------------------------ serving


def test_private_files_random_names_private_modes_and_ttl(tmp_path):
    files = hosting.PrivateFiles(ttl_s=3600)
    a, b = Path(files.write("t.json", b"{}")), Path(files.write("t.json", b"{}"))
    assert a != b and a.parent.parent == b.parent.parent == files.root  # same content, different random folders
    assert len(a.parent.name) >= 24 and a.read_bytes() == b"{}"
    assert stat.S_IMODE(a.stat().st_mode) == 0o600 and stat.S_IMODE(a.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(files.root.stat().st_mode) == 0o700
    assert files.root.is_relative_to(gr.utils.get_upload_folder())  # served in place, not copied by content hash
    old = time.time() - 7200
    os.utime(a.parent, (old, old))
    files.write("t.json", b"{}")  # a new file prunes the expired ones
    assert not a.exists() and b.exists()


def test_zero_gpu_refusals_become_sentences():
    """As `spaces` 0.51.3 raises them: gr.Error titled "ZeroGPU ...", its message with links."""
    quota = gr.Error(
        "You have exceeded your GPU quota (60s requested vs. 12s left). Try again in 0:04:12. "
        '<a href="https://huggingface.co/settings/tokens">Authenticate</a> for more quota',
        title="ZeroGPU quota exceeded",
    )

    def run():
        yield "a"
        raise quota

    with pytest.raises(gr.Error, match="used up for now: try again in 0:04:12, or log in"):
        list(hosting.gpu(run)())
    aborted = hosting.zero_gpu_error(gr.Error("GPU task aborted", title="ZeroGPU worker error"))
    assert "ask for fewer tokens" in aborted.message
    assert hosting.zero_gpu_error(ValueError("plain")) is None
    with pytest.raises(gr.Error, match="got '&lt;b&gt;x'"):  # the page's modal renders HTML: escaped
        app.gpu(app_error)()
    with pytest.raises(gr.Error, match="got '<b>x'"):  # an API client gets the text as it is
        hosting.gpu(app_error, known=(LoGoError,))()


def test_gate_bounds_work_in_flight_and_is_released_whatever_happens():
    """A heavy call holds the gate to its end: an error, a stream closed early (a visitor who left) free it."""
    gate, now, peak = threading.BoundedSemaphore(2), [0], [0]
    lock = threading.Lock()

    def work(fail=False):
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.05)
        with lock:
            now[0] -= 1
        if fail:
            raise ValueError("bad")
        return "ok"

    gated = hosting.gpu(work, gate=gate)
    concurrently(lambda i: gated(), 6)
    assert peak[0] == 2
    with pytest.raises(ValueError):
        gated(fail=True)

    def tokens():
        yield from "abc"

    stream = hosting.gpu(tokens, gate=gate)()
    assert next(stream) == "a"
    assert gate.acquire(blocking=False) and not gate.acquire(blocking=False)  # the open stream holds one
    gate.release()
    stream.close()
    assert gate.acquire(blocking=False) and gate.acquire(blocking=False)  # both free again
    gate.release(), gate.release()


def test_every_generation_waits_on_the_one_gate(app_engine):
    """The API's generate, the page's generate, compare and sweep share app.HEAVY: a cancelled API call's
    thread keeps its place until its generation ends, so abandoned requests cannot pile up."""
    demo = app.create_demo(app_engine)
    fns = {f.api_name: f.fn for f in demo.fns.values()}
    assert {name for name, fn in fns.items() if getattr(fn, "gate", None) is app.HEAVY} == {
        "generate",
        "ui_generate",
        "ui_compare",
        "ui_sweep",
    }
    assert getattr(fns["route"], "gate", "missing") is None
    held = 0
    while app.HEAVY.acquire(blocking=False):
        held += 1
    assert held == 2 * app.CONCURRENCY
    out = []
    t = threading.Thread(target=lambda: out.append(fns["generate"](PROMPT, max_new_tokens=2)))
    try:
        t.start()
        t.join(1.0)
        assert t.is_alive() and not out  # waiting for a place
    finally:
        for _ in range(held):
            app.HEAVY.release()
    t.join(120)
    assert out and isinstance(out[0][0], str)


def app_error():
    from logo_core.errors import RequestError

    raise RequestError("`layer` must be an int, 'a:b' or a list of ints, got '<b>x'")


def test_typed_endpoint_signature_and_doc():
    params = {"prompt": (str, "the text"), "k": (int | None, "how many")}
    fn = hosting.typed_endpoint(lambda prompt, k: (prompt, k), "route", "Route it.", params, tuple[str, int])
    assert fn("hi") == ("hi", None) and fn("hi", 3) == ("hi", 3)
    assert "Args:\n    prompt: the text\n    k: how many" in fn.__doc__
    assert list(gr.utils.get_function_params(fn)) == [("prompt", False, None, str), ("k", True, None, int | None)]


# ------------------------------------------------------------------------------------------ plots for big pools


def test_show_all_redraws_the_long_tail(cb):
    names = [f"task{i:02d}" for i in range(40)]
    routing = {
        "scores": {n: 40.0 - i for i, n in enumerate(names)},
        "selected": names[:2],
        "ties": [],
        "weights": {names[0]: 0.6, names[1]: 0.4},
        "options": {
            "signal": "norm",
            "calibrated": True,
            "k": 2,
            "blocks": [15, 16],
            "module": ["v_proj"],
            "probe_input": "residual",
        },
    }
    assert cb.redraw(routing, False).layout.meta["hidden"] == 40 - callbacks.TOP
    assert cb.redraw(routing, True).layout.meta["order"] == names
    assert cb.redraw(None, True) == gr.skip()


def test_a_big_pool_stays_readable():
    names = [f"task{i:02d}" for i in range(60)]
    scores = {n: float(i % 17) + i / 100 for i, n in enumerate(names)}
    ranked = sorted(scores, key=lambda n: -scores[n])
    families = {n: f"family{i % 6}" for i, n in enumerate(names)}
    fig = plots.signal_bars(scores, ranked[:4], {n: 0.25 for n in ranked[:4]}, families=families, top=15)
    assert fig.layout.meta["order"] == ranked[:15] and fig.layout.meta["hidden"] == 45
    assert {t.name for t in fig.data} <= {f"family{i}" for i in range(6)}  # families are colours and legend entries
    assert any("45 more" in a.text for a in fig.layout.annotations)
    assert len(plots.signal_bars(scores, ranked[:20], families=families, top=15).layout.meta["order"]) == 20


def test_negative_scores_are_drawn_to_their_end():
    """Calibrated scores below the background's mean are negative: the axis must show them, not cut them at 0."""
    scores = {"a": 1.5, "b": 0.4, "c": -0.3, "d": -1.2}
    lo, hi = plots.signal_bars(scores, ["a"], {"a": 1.0}).layout.xaxis.range
    assert lo < -1.2 and hi > 1.5
    lo, hi = plots.signal_bars({"a": -0.2, "b": -0.9}, ["a"], {"a": 1.0}).layout.xaxis.range  # all negative
    assert lo < -0.9 and hi >= 0
    assert plots.signal_bars({"a": 2.0, "b": 1.0}, ["a"]).layout.xaxis.range[0] == 0  # none negative: from 0


def test_args_flags_and_env(monkeypatch):
    for var in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "PORT"):
        monkeypatch.delenv(var, raising=False)
    args = app.parse_args([])
    assert (args.host, args.port, args.config) == ("127.0.0.1", 7860, "adapters.yaml")
    monkeypatch.setenv("PORT", "8080")
    assert app.parse_args([]).port == 8080
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "9000")
    assert (app.parse_args([]).host, app.parse_args([]).port) == ("0.0.0.0", 9000)


def test_missing_config_exits_with_the_message():
    with pytest.raises(SystemExit, match="cannot read the adapter pool file"):
        app.main(["--config", "/nonexistent/adapters.yaml"])


def test_timing_line():
    t = {"probe_s": 0.021, "new_tokens": 12, "tokens_per_s": 30.47, "total_s": 0.52}
    assert (
        callbacks.timing_line(t, 0.31, False)
        == "12 tokens · probe 21 ms · first token 0.31 s · 30.5 tokens/s · total 0.52 s"
    )
    assert callbacks.timing_line(t, None, True).startswith("stopped after 12 tokens · probe 21 ms · 30.5")


def test_a_preset_fills_every_routing_control_it_names(cb, page, app_engine):
    """Loading `neutral` gives this project's earlier setting whole (last token, never abstaining), whatever
    adapters.yaml's defaults; `adapters.yaml` brings the defaults back."""
    got = outputs(page, cb.preset("neutral"))
    assert (got["calibration"], got["layer"], got["module"], got["pooling"], got["abstain_below"]) == (
        "neutral",
        "15:30",
        ["v_proj"],
        "last",
        -100.0,
    )
    assert got["weighting"] == "proportional"
    back = outputs(page, cb.preset("adapters.yaml"))
    d = app_engine.defaults
    assert (back["pooling"], back["abstain_below"], back["calibration"]) == (d.pooling, d.abstain_below, d.calibration)
    assert back["weighting"] == d.weighting == "lead"
