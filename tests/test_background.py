"""The routing lab's additions on tiny random models: background z-scores against their formula, mean
pooling over the user's tokens, presets, abstaining, weights of negative scores, the on-disk constants;
and on the real pool, the router against the lab's plain reference path."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from helpers import make_adapter, tiny_engine, tiny_model

from logo_core.calibration import StatsStore
from logo_core.explain import abstain_text
from logo_core.mixing import select_top_k

PROMPTS = ["What is 47 + 38?", "Translate the cat to French.", "Is this review positive? I loved it."]
N_LAYERS = 4


@pytest.fixture(scope="module")
def setup(tiny_tok, tmp_path_factory):
    model = tiny_model("llama", len(tiny_tok), n_layers=N_LAYERS)
    reference = copy.deepcopy(model)
    root = tmp_path_factory.mktemp("bg")
    adapters = {f"a{i}": make_adapter(model, root / f"a{i}", seed=i, r=4, alpha=8) for i in range(4)}
    engine = tiny_engine(model, tiny_tok, root, adapters, k=2)
    return engine, reference, adapters


def _vectors(engine, reference, prompts, block, pooling):
    """The residual stream entering `block` on a hook-free pass of the base copy: last token or the mean over
    the user's own tokens (found by tokenising the user's text alone, not with the encoder's mask)."""
    out = []
    for p in prompts:
        enc = engine.encode([p], 0, engine.placement.device)
        with torch.no_grad():
            h = reference(**enc.inputs(), output_hidden_states=True).hidden_states[block][0]  # [T, D]
        if pooling == "last":
            out.append(h[-1])
            continue
        ids = enc.input_ids[0].tolist()
        user = engine.tokenizer(p, add_special_tokens=False)["input_ids"]
        start = next(i for i in range(len(ids)) if ids[i : i + len(user)] == user)
        out.append(h[start : start + len(user)].mean(0))
    return torch.stack(out)


def _raw(engine, adapters, h, block, module="q_proj"):
    """||s B A h|| of every adapter, from its files: [P, N]."""
    from test_engine import _lora

    cols = []
    for path in adapters.values():
        A, B, s = _lora(path, block, module)
        cols.append(torch.linalg.vector_norm(s * (h @ A.T) @ B.T, dim=-1))
    return torch.stack(cols, 1)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_background_zscore_matches_the_formula(setup, pooling):
    engine, reference, adapters = setup
    block = 2
    background = list(engine.router.calibrations["background"].prompts)
    bg = _raw(engine, adapters, _vectors(engine, reference, background, block, pooling), block)
    raw = _raw(engine, adapters, _vectors(engine, reference, PROMPTS[:1], block, pooling), block)[0]
    expected = (raw - bg.mean(0)) / bg.std(0)
    r = engine.route(PROMPTS[0], calibration="background", layer=block, module="q_proj", pooling=pooling)
    torch.testing.assert_close(torch.tensor(list(r.scores.values())), expected, rtol=1e-3, atol=1e-4)


def test_background_sweep_averages_to_the_route(setup):
    """The z-score is applied per site with the stream's (mu, sigma), so per-block scores average to the route's."""
    engine, *_ = setup
    kw = dict(calibration="background", layer="1:4", module="q_proj,v_proj", pooling="both")
    per_block = engine.router.sweep([PROMPTS[1]], [engine.route_options(**kw)])[0][0]  # [L, N]
    routed = torch.tensor(list(engine.route(PROMPTS[1], **kw).scores.values()))
    torch.testing.assert_close(per_block.mean(0), routed, rtol=1e-5, atol=1e-6)


def test_both_poolings_average_the_two(setup):
    engine, *_ = setup
    kw = dict(calibration="background", layer="1:3", module="v_proj")
    one = [torch.tensor(list(engine.route(PROMPTS[2], pooling=p, **kw).scores.values())) for p in ("last", "mean")]
    both = torch.tensor(list(engine.route(PROMPTS[2], pooling="both", **kw).scores.values()))
    torch.testing.assert_close(both, torch.stack(one).mean(0), rtol=1e-5, atol=1e-6)


def test_presets_name_settings_and_requests_override_them(setup):
    engine, *_ = setup
    paper = engine.route(PROMPTS[0], preset="paper").options
    assert (paper["calibrated"], paper["layer"], paper["module"], paper["k"]) == (False, -1, ["q_proj"], 4)
    for name in ("paper", "neutral"):  # the whole setting, whatever adapters.yaml's defaults (this tiny model
        o = engine.route(PROMPTS[0], preset=name, abstain_below=None, layer=-1).options  # has 4 blocks)
        assert (o["pooling"], o["abstain_below"]) == ("last", -100.0), name
    neutral = engine.route(PROMPTS[0], preset="neutral", layer=-1).options
    assert (neutral["calibration"], neutral["module"], neutral["calibrated"]) == ("neutral", ["v_proj"], True)
    assert engine.route(PROMPTS[0], preset="paper", k=1).options["k"] == 1  # the request wins, k cut to the pool
    with pytest.raises(ValueError, match=r"`preset` must be one of \['paper', 'neutral'\], got 'best'"):
        engine.route(PROMPTS[0], preset="best")


def test_abstaining_answers_with_the_base_model(setup):
    engine, *_ = setup
    routed = engine.route(PROMPTS[0], calibration="background")
    best = max(routed.scores.values())
    r = engine.route(PROMPTS[0], calibration="background", abstain_below=best + 0.01)
    assert r.selected == [] and r.weights == {} and r.options["mode"] == "abstained"
    assert "answered by the base model" in r.notices[-1]
    assert engine.route(PROMPTS[0], calibration="background", abstain_below=best - 0.01).selected  # routes again
    g = engine.generate(PROMPTS[0], calibration="background", abstain_below=best + 0.01, max_new_tokens=6)
    base = engine.generate(PROMPTS[0], adapters={}, max_new_tokens=6)
    assert g.text == base.text and g.routing.selected == []
    with pytest.raises(ValueError, match="`abstain_below` must be a finite number, got 'high'"):
        engine.route(PROMPTS[0], abstain_below="high")


def test_the_abstain_signal_decides_whether_to_route_and_the_routing_signal_what(setup):
    """`abstain_signal` names another signal whose best calibrated score `abstain_below` reads; the adapters and
    their scores still come from the routing signal, and the trace records the score that was compared."""
    engine, *_ = setup
    route = dict(calibration="background", signal="subspace", layer="1:4")
    best = {  # prompt -> (the routing, the norm signal's best calibrated score)
        p: (engine.route(p, **route), max(engine.route(p, **{**route, "signal": "norm"}).scores.values()))
        for p in PROMPTS
    }
    prompt = max(PROMPTS, key=lambda p: abs(best[p][1] - max(best[p][0].scores.values())))
    plain, gate = best[prompt]
    assert abs(gate - max(plain.scores.values())) > 0.02  # the two signals differ on this prompt
    lo, hi = sorted((gate, max(plain.scores.values())))
    mid = (lo + hi) / 2
    r = engine.route(prompt, **route, abstain_signal="norm", abstain_below=mid)
    assert r.abstain_score == pytest.approx(gate, abs=1e-5)
    assert r.scores == pytest.approx(plain.scores, abs=1e-5)  # routing scores are the subspace ones
    same = engine.route(prompt, **route, abstain_signal="same", abstain_below=mid)
    assert same.abstain_score == pytest.approx(max(plain.scores.values()), abs=1e-5)
    # exactly one of the two abstains: the one whose signal's best score is under mid
    assert (r.selected == []) == (gate < mid) and (same.selected == []) == (gate >= mid)
    routed = r if r.selected else same
    assert routed.selected == plain.selected and routed.weights == pytest.approx(plain.weights)
    gone = r if not r.selected else same
    assert gone.options["abstain_reason"] == "no_standout" and f"< abstain_below {mid:g}" in gone.notices[-1]
    assert ("best norm score" in r.notices[-1]) == (not r.selected)  # the notice names another signal
    named = engine.route(prompt, **route, abstain_signal="subspace", abstain_below=mid)  # = the routing one
    assert (named.selected, named.abstain_score) == (same.selected, same.abstain_score)
    assert engine.route(prompt, **route, abstain_below=-100).abstain_score is not None
    assert engine.route(prompt, preset="paper").options["abstain_signal"] == "same"
    with pytest.raises(ValueError, match=r"`abstain_signal` must be one of \['same', 'nearest', 'norm'.*got 'loud'"):
        engine.route(prompt, abstain_signal="loud")


def test_the_abstain_module_reads_other_modules_for_the_abstain_check_only(setup):
    """`abstain_module` names the modules whose best calibrated score `abstain_below` reads (with `abstain_signal`);
    the adapters and their scores still come from the routing modules, and a bad module is a named error."""
    engine, *_ = setup
    route = dict(calibration="background", signal="norm", layer="1:4", module="v_proj")
    both = {p: max(engine.route(p, **{**route, "module": "q_proj,v_proj"}).scores.values()) for p in PROMPTS}
    plain = {p: engine.route(p, **route) for p in PROMPTS}
    prompt = max(PROMPTS, key=lambda p: abs(both[p] - max(plain[p].scores.values())))
    gate, own = both[prompt], max(plain[prompt].scores.values())
    assert abs(gate - own) > 0.02  # the two gates differ on this prompt
    mid = (gate + own) / 2
    r = engine.route(prompt, **route, abstain_module="q_proj,v_proj", abstain_below=mid)
    assert r.abstain_score == pytest.approx(gate, abs=1e-5)
    assert r.scores == pytest.approx(plain[prompt].scores, abs=1e-5)  # routing still reads v_proj alone
    assert (r.selected == []) == (gate < mid)
    if not r.selected:
        assert "score on q_proj,v_proj" in r.notices[-1]
    same = engine.route(prompt, **route, abstain_module="same", abstain_below=mid)
    assert same.abstain_score == pytest.approx(own, abs=1e-5) and (same.selected == []) == (own < mid)
    assert engine.route(prompt, **route, abstain_module="v_proj", abstain_below=mid).abstain_score == pytest.approx(own)
    assert engine.route(prompt, preset="paper").options["abstain_module"] == "same"
    with pytest.raises(ValueError, match=r"`abstain_module` 'o_proj' is not adapted by any adapter"):
        engine.route(prompt, abstain_module="o_proj")


def test_the_nearest_gate_reads_the_similarity_to_the_nearest_background_prompt(setup):
    """`abstain_signal` nearest: `abstain_below` reads the cosine similarity of the prompt's residual input at
    `abstain_layer` (mean over the user's tokens) to the nearest background prompt's, computed here from a hook-free
    pass of the base copy; the adapters and their scores are the routing ones; the middle block by default."""
    engine, reference, _ = setup
    background = list(engine.router.calibrations["background"].prompts)
    route = dict(calibration="background", signal="norm", layer="1:4")
    for layer, block in ((None, N_LAYERS // 2), (-1, N_LAYERS - 1), (1, 1)):
        bank = torch.nn.functional.normalize(_vectors(engine, reference, background, block, "mean"), dim=-1)
        h = torch.nn.functional.normalize(_vectors(engine, reference, PROMPTS, block, "mean"), dim=-1)
        want = (h @ bank.T).max(-1).values.tolist()
        for p, sim in zip(PROMPTS, want, strict=True):
            plain = engine.route(p, **route)
            for below, abstains in ((sim - 0.01, False), (sim + 0.01, True)):
                r = engine.route(p, **route, abstain_signal="nearest", abstain_layer=layer, abstain_below=below)
                assert r.abstain_score == pytest.approx(sim, abs=1e-4)
                assert r.options["abstain_layer"] == block and r.scores == pytest.approx(plain.scores, abs=1e-5)
                assert (r.selected == []) == abstains
                verdict = "<" if abstains else "≥"
                assert (
                    "nearest background prompt" in abstain_text(r)
                    and f"(block {block})" in abstain_text(r)
                    and verdict in abstain_text(r)
                )
                if abstains:
                    assert r.options["abstain_reason"] == "unlike_pool"
                    assert f"nearest background prompt at block {block}" in r.notices[-1]
                else:
                    assert r.selected == plain.selected
    batch = engine.route_batch(PROMPTS, **route, abstain_signal="nearest", abstain_below=0.5)  # padded together
    single = [engine.route(p, **route, abstain_signal="nearest", abstain_below=0.5).abstain_score for p in PROMPTS]
    assert [r.abstain_score for r in batch] == pytest.approx(single, abs=1e-4)
    assert engine.route(PROMPTS[0], abstain_signal="nearest").options["abstain_layer"] is None  # never abstains
    for bad, msg in (
        (N_LAYERS, f"must be a block between -{N_LAYERS} and {N_LAYERS - 1}"),
        ("2", "must be an integer, got .2."),
    ):
        with pytest.raises(ValueError, match=f"`abstain_layer` {msg}"):
            engine.route(PROMPTS[0], abstain_signal="nearest", abstain_layer=bad, abstain_below=0.5)


def test_a_prompt_shorter_than_abstain_min_tokens_goes_to_the_base_model(setup):
    """`abstain_min_tokens` counts the user's own tokens (not the chat template's), whatever the scores."""
    engine, *_ = setup
    n = len(engine.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"])
    r = engine.route(PROMPTS[0], abstain_min_tokens=n + 1, abstain_below=-100)
    assert r.selected == [] and r.options["mode"] == "abstained" and r.options["abstain_reason"] == "short"
    assert f"The prompt has {n} tokens, fewer than abstain_min_tokens {n + 1}" in r.notices[-1]
    assert len(r.scores) == 4  # the scores are still reported
    assert engine.route(PROMPTS[0], abstain_min_tokens=n, abstain_below=-100).selected  # n tokens: not short
    assert engine.route(PROMPTS[0], abstain_min_tokens=0, abstain_below=-100).selected  # 0: never
    g = engine.generate(PROMPTS[0], abstain_min_tokens=n + 1, max_new_tokens=6)
    assert g.text == engine.generate(PROMPTS[0], adapters={}, max_new_tokens=6).text
    mixed = engine.route_batch([PROMPTS[0], PROMPTS[2]], abstain_min_tokens=n + 1, abstain_below=-100)
    assert [r.options["mode"] for r in mixed] == ["abstained", "routed"]  # each row counts its own tokens
    for bad, msg in ((-1, "must be >= 0, got -1"), ("3", "must be an integer, got '3'"), (2.5, "must be an integer")):
        with pytest.raises(ValueError, match=f"`abstain_min_tokens` {msg}"):
            engine.route(PROMPTS[0], abstain_min_tokens=bad)


def test_negative_scores_get_no_weight():
    idx, w = select_top_k(torch.tensor([3.0, -1.0, 0.5]), 3)
    assert idx == [0, 2, 1] and w[2] == 0.0 and abs(sum(w) - 1) < 1e-9 and min(w) >= 0
    _, w = select_top_k(torch.tensor([-2.0, -1.0]), 2)  # nothing positive: uniform
    assert w == [0.5, 0.5]


def test_constants_are_kept_on_disk_and_keyed_by_the_pool(tmp_path):
    store = StatsStore({"model": "m", "adapters": ["sha-a"]}, [tmp_path / "shipped"], tmp_path / "cache")
    key = ((1, 2), "v_proj", "last", "norm", "residual")
    stats = (torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.25]))
    assert store.load(key) is None
    store.save(key, stats)
    torch.testing.assert_close(store.load(key), stats)
    other = StatsStore({"model": "m", "adapters": ["sha-b"]}, [tmp_path / "shipped"], tmp_path / "cache")
    assert other.load(key) is None  # another pool never reads these constants
    assert store.load(((1, 3), "v_proj", "last", "norm", "residual")) is None  # nor another setting
    (tmp_path / "cache" / store.name(key)).write_bytes(b"not safetensors")
    assert store.load(key) is None  # a broken file is recomputed, not fatal


@pytest.mark.slow
def test_router_matches_the_lab_reference(real_engine):
    """The shipped default, fast path (r x r matrices, cached constants) against the lab's path (the adapters'
    files stacked by the lab, the background probed here, the setting read back from adapters.yaml) on the real
    pool."""
    from logo_core import lab
    from logo_core.prompts import PromptEncoder
    from logo_core.registry import load_config

    cfg = load_config("adapters.yaml")
    st = lab.library_setting(cfg.defaults)
    prompts = ["A bag of flour weighs 1.5 kg. How many grams is that?", "Spell out 19 in German.", "Hi!"]
    rows = [lab.Prompt(p, "", "", False, "test") for p in prompts]
    rows += [lab.Prompt(p, "", "", False, "background") for p in cfg.background()]
    rows += [lab.Prompt(p, "", "", False, "neutral") for p in cfg.neutral_prompts]
    encoder = PromptEncoder(real_engine.tokenizer, cfg.engine.max_prompt_tokens, 8192)
    x = lab.collect(real_engine.router.model, encoder, [r.text for r in rows])  # [P, L, 2, 2, D]
    pool = lab.pool_factors(cfg, real_engine.model)
    texts = [r.text for r in rows]
    tokens = lambda v, i: lab.collect_token_signals(real_engine.router.model, encoder, texts, pool, v, i)  # noqa: E731
    the_lab = lab.Lab(rows, x, pool, token_signals=tokens)
    expected = the_lab.scores(st, the_lab.index["test"])
    routed = real_engine.route_batch(prompts)
    got = torch.tensor([[r.scores[n] for n in real_engine.adapters] for r in routed])
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=2e-3)
    family = {a.name: a.family for a in cfg.adapters}
    # per-prompt accuracy is the lab's figure (docs/lab); here only that both land in their family
    # (the flour prompt's own adapter, units_kg_g, is second on the retrained pool: 1.48 vs 1.62), read off the scores:
    # the gate may send the flour prompt, a word problem, to the base model (0.9346 against 0.935 at block 16)
    tops = [max(r.scores, key=r.scores.get) for r in routed[:2]]
    assert [family[t] for t in tops] == [family["units_kg_g"], family["number_words_de"]]


@pytest.mark.slow
def test_shipped_constants_fit_the_shipped_pool(real_engine):
    """assets/calibration holds the default setting's constants for exactly this model and pool, so start-up
    reads them and never probes the background, for the routing signal and the abstain signal alike (rerun
    scripts/ship_calibration.py after retraining or choosing another default)."""
    router, opts = real_engine.router, real_engine.route_options()
    shipped = router.stats_store.read_dirs[0]
    for o in [opts] if opts.gate is None else [opts, opts.gate]:  # the routing signal's and the abstain signal's
        for m, p in itertools.product(o.module, o.poolings):
            key = (o.blocks, m, p, o.signal, o.probe_input)
            assert (shipped / router.stats_store.name(key)).is_file(), f"no shipped constants for {key}"
    if opts.decorrelation:
        from logo_core.router import decorrelation_key

        assert (shipped / router.stats_store.name(decorrelation_key(opts))).is_file(), "no shipped decorrelation"
    if opts.token_evidence:
        from logo_core.router import token_key

        for m in opts.module:
            assert (shipped / router.stats_store.name(token_key(opts, m))).is_file(), "no shipped token evidence"
    assert "background" not in router._vectors  # warm-up found them: no background probe ran


@pytest.mark.parametrize(
    "route",
    [
        {"calibration": "background", "pooling": "both", "module": "q_proj,v_proj"},
        {"calibration": "neutral", "pooling": "last", "module": "q_proj"},
        {"calibration": "neutral", "pooling": "mean", "module": "v_proj", "calibrated": False},
        {"calibration": "background", "pooling": "mean", "module": "q_proj", "layer": "1:3"},
    ],
)
@pytest.mark.parametrize("signal", ["norm", "subspace", "subspace_cos"])
def test_fast_quadratic_path_equals_the_per_site_reference(setup, route, signal):
    """The router's fast path (each stream's blocks in one einsum) gives the reference path's scores."""
    from logo_core.router import fast_quadratic_score, route_scores

    engine, *_ = setup
    router = engine.router
    opts = router.options(**{"layer": "0:4", **route, "signal": signal})
    enc = engine.encode(PROMPTS, 0, engine.placement.device)
    hs = router._probe(enc, [opts])
    reference = __import__("logo_core.signals", fromlist=["score"]).score(router._sites(hs, opts), signal)
    fast = fast_quadratic_score(router, hs, opts)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(route_scores(router, hs, opts), reference, rtol=1e-5, atol=1e-6)
    entropy = router.options(**{"layer": "0:4", **route, "signal": "entropy"})
    assert fast_quadratic_score(router, router._probe(enc, [entropy]), entropy) is None  # entropy: the reference path


def test_fast_path_with_adapters_on_different_modules_and_ranks(tiny_tok, tmp_path):
    """An adapter that does not adapt a module scores 0 there on both paths (the mask), ranks zero-padded."""
    from logo_core.router import fast_quadratic_score
    from logo_core.signals import score

    model = tiny_model("llama", len(tiny_tok), n_layers=N_LAYERS)
    adapters = {
        "both": make_adapter(model, tmp_path / "both", seed=1, r=4),
        "q_only": make_adapter(model, tmp_path / "q", seed=2, r=2, targets=("q_proj",)),
        "v_only": make_adapter(model, tmp_path / "v", seed=3, r=8, targets=("v_proj",)),
    }
    engine = tiny_engine(model, tiny_tok, tmp_path, adapters, k=1)
    router = engine.router
    for cal, signal in itertools.product(("background", "neutral"), ("norm", "subspace")):
        opts = router.options(layer="0:4", module="q_proj,v_proj", pooling="both", calibration=cal, signal=signal)
        hs = router._probe(engine.encode(PROMPTS, 0, engine.placement.device), [opts])
        torch.testing.assert_close(fast_quadratic_score(router, hs, opts), score(router._sites(hs, opts), signal))


def test_decorrelation_whitens_the_background_correlation_of_the_z_scores(setup):
    """`decorrelate` a: score = ((z - m) / d) W with m, d the background's mean and spread of the z-scores and W the
    inverse square root of (1 - a) I + a R, R their correlation over the background (numpy's, computed here); the
    abstain check still reads the z-scores, a per-block sweep still averages to the route, and other calibrations
    leave it inert."""
    import numpy as np

    engine, *_ = setup
    route = dict(calibration="background", signal="subspace", layer="1:4", module="q_proj,v_proj", pooling="both")
    background = list(engine.router.calibrations["background"].prompts)
    z_bg = np.array([[r.scores[n] for n in engine.adapters] for r in engine.route_batch(background, **route)])
    m, d = z_bg.mean(0), z_bg.std(0, ddof=1)
    a = 0.6
    c = (1 - a) * np.eye(len(m)) + a * np.corrcoef(z_bg.T)
    plain = engine.route(PROMPTS[1], **route)
    r = engine.route(PROMPTS[1], **route, decorrelate=a, abstain_below=-50)
    w = engine.router.decorrelation(engine.route_options(**route, decorrelate=a))[2].double().numpy()
    np.testing.assert_allclose(w, w.T, atol=1e-5)
    np.testing.assert_allclose(w @ c @ w, np.eye(len(m)), atol=1e-3)  # W = C^(-1/2)
    z = np.array([plain.scores[n] for n in engine.adapters])
    np.testing.assert_allclose([r.scores[n] for n in engine.adapters], ((z - m) / d) @ w, rtol=1e-3, atol=1e-3)
    assert r.abstain_score == pytest.approx(max(z), abs=1e-5)  # the gate reads the z-scores, not the decorrelated
    assert r.options["decorrelate"] == a
    per_block = engine.router.sweep([PROMPTS[1]], [engine.route_options(**route, decorrelate=a)])[0][0]
    torch.testing.assert_close(
        per_block.mean(0), torch.tensor([r.scores[n] for n in engine.adapters]), atol=1e-4, rtol=1e-4
    )
    neutral = engine.route(PROMPTS[1], **{**route, "calibration": "neutral"}, decorrelate=a)
    assert neutral.scores == engine.route(PROMPTS[1], **{**route, "calibration": "neutral"}).scores
    assert neutral.options["decorrelate"] == 0.0  # the trace says it did not act
    assert engine.route(PROMPTS[1], preset="neutral", layer=-1).options["decorrelate"] == 0.0
    for bad, msg in ((1.5, "must be between 0 and 1, got 1.5"), ("half", "must be a finite number, got 'half'")):
        with pytest.raises(ValueError, match=f"`decorrelate` {msg}"):
            engine.route(PROMPTS[1], **route, decorrelate=bad)


def _user_rows(engine, reference, prompt, block):
    """[T_user, D] the residual stream entering `block` at each of the user's own tokens, from a hook-free pass of the
    base copy (the user's tokens found by tokenising the user's text alone)."""
    enc = engine.encode([prompt], 0, engine.placement.device)
    with torch.no_grad():
        h = reference(**enc.inputs(), output_hidden_states=True).hidden_states[block][0]
    ids, user = enc.input_ids[0].tolist(), engine.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    start = next(i for i in range(len(ids)) if ids[i : i + len(user)] == user)
    return h[start : start + len(user)]


def test_token_evidence_adds_the_z_scored_mean_of_per_token_signals(setup):
    """`token_weight` w, `token_layer` blocks: score + w * z, z the z-score against the background prompts of each
    adapter's ||s B A h_t|| averaged over the user's tokens t and the blocks (computed here from a hook-free pass and
    the adapters' files); padding in a batch changes nothing, a sweep still averages to the route, the trace names the
    blocks, other calibrations leave it inert, and bad values name the field."""
    engine, reference, adapters = setup
    route = dict(calibration="background", signal="norm", layer="1:4", module="q_proj", pooling="last")
    blocks = (0, 2)

    def raw(p, recency=False):
        rows = [_raw(engine, adapters, _user_rows(engine, reference, p, b), b) for b in blocks]  # [T, N] each
        w = torch.arange(1, rows[0].shape[0] + 1).float() if recency else torch.ones(rows[0].shape[0])
        return torch.stack([(w[:, None] * r).sum(0) / w.sum() for r in rows]).mean(0)

    bg = torch.stack([raw(p) for p in engine.router.calibrations["background"].prompts])
    mu, sd = bg.mean(0), bg.std(0)
    w = 0.7
    for p in PROMPTS:
        plain = engine.route(p, **route)
        r = engine.route(p, **route, token_weight=w, token_layer="0,2")
        want = torch.tensor([plain.scores[n] for n in engine.adapters]) + w * (raw(p) - mu) / sd
        torch.testing.assert_close(torch.tensor([r.scores[n] for n in engine.adapters]), want, atol=2e-4, rtol=2e-4)
        assert r.options["token_weight"] == w and r.options["token_blocks"] == list(blocks)
    batch = engine.route_batch(PROMPTS, **route, token_weight=w, token_layer="0,2")  # padded together
    for p, b in zip(PROMPTS, batch, strict=True):
        assert b.scores == pytest.approx(engine.route(p, **route, token_weight=w, token_layer="0,2").scores, abs=1e-4)
    # `recency`: the t-th of the user's T tokens weighs t
    bg_r = torch.stack([raw(p, True) for p in engine.router.calibrations["background"].prompts])
    for p in PROMPTS:
        plain = torch.tensor([engine.route(p, **route).scores[n] for n in engine.adapters])
        r = engine.route(p, **route, token_weight=w, token_layer="0,2", token_pooling="recency")
        want = plain + w * (raw(p, True) - bg_r.mean(0)) / bg_r.std(0)
        torch.testing.assert_close(torch.tensor([r.scores[n] for n in engine.adapters]), want, atol=2e-4, rtol=2e-4)
        assert r.options["token_pooling"] == "recency"
    batch_r = engine.route_batch(PROMPTS, **route, token_weight=w, token_layer="0,2", token_pooling="recency")
    for p, b in zip(PROMPTS, batch_r, strict=True):
        single = engine.route(p, **route, token_weight=w, token_layer="0,2", token_pooling="recency")
        assert b.scores == pytest.approx(single.scores, abs=1e-4)
    opts = engine.route_options(**route, token_weight=w, token_layer="0,2")
    per_block = engine.router.sweep([PROMPTS[1]], [opts])[0][0]
    torch.testing.assert_close(
        per_block.mean(0), torch.tensor([batch[1].scores[n] for n in engine.adapters]), atol=1e-4, rtol=1e-4
    )
    neutral = {**route, "calibration": "neutral"}
    r = engine.route(PROMPTS[1], **neutral, token_weight=w)
    assert r.scores == engine.route(PROMPTS[1], **neutral).scores and r.options["token_weight"] == 0.0
    assert engine.route(PROMPTS[1], preset="paper").options["token_weight"] == 0.0
    for field, bad, msg in (
        ("token_weight", -1, "must be between 0 and 10, got -1"),
        ("token_weight", "lots", "must be a finite number, got 'lots'"),
        ("token_layer", "2:9", "range '2:9' reaches outside the model"),
        ("token_layer", "x", "must be an int, 'a:b' or a list of ints"),
        ("token_pooling", "last", "must be one of \\['mean', 'recency'\\], got 'last'"),
    ):
        with pytest.raises(ValueError, match=f"`{field}` {msg}"):
            engine.route(PROMPTS[1], **route, **{field: bad})
