"""Engine math on tiny random Llama and Qwen2 models and a tiny tokenizer: signals against the formulas,
probe, the mixture against PEFT (low-rank and folded), batching, order independence, concurrency."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from helpers import ARCHS, concurrently, make_adapter, tiny_engine, tiny_model
from safetensors.torch import load_file

from logo_core import signals
from logo_core.mixing import (
    LEAD_SHARE,
    MixedLinear,
    attach,
    merge_weights,
    reference_delta,
    select_top_k,
    ties_at_cut,
)
from logo_core.probe import RESIDUAL, run_probe
from logo_core.results import Routing

PROMPTS = ["What is 47 + 38?", "Translate the cat to French.", "Is this review positive? I loved it.", "Hi"]
N_LAYERS = 4


@pytest.fixture(scope="module", params=ARCHS)
def setup(request, tiny_tok, tmp_path_factory):
    """A tiny model, an untouched copy of it (for references), and an engine over 4 adapters."""
    model = tiny_model(request.param, len(tiny_tok), n_layers=N_LAYERS)
    reference = copy.deepcopy(model)
    root = tmp_path_factory.mktemp(request.param)
    # Different ranks, alphas, targets and scales on purpose: padding and per-adapter scale must be right.
    adapters = {
        "a0": make_adapter(model, root / "a0", seed=0, r=4, alpha=8),
        "a1": make_adapter(model, root / "a1", seed=1, r=6, alpha=6),
        "a2": make_adapter(model, root / "a2", seed=2, r=2, alpha=8, targets=("q_proj", "v_proj", "o_proj")),
        "a3": make_adapter(model, root / "a3", seed=3, r=4, alpha=16, targets=("v_proj",), use_rslora=True),
    }
    engine = tiny_engine(model, tiny_tok, root, adapters, k=2)
    return engine, reference, adapters


def encode(engine, prompts):
    return engine.encode(prompts, 0, engine.placement.device).inputs()


def _lora(path, block: int, module: str):
    """(A, B, scale) of one adapter at one module, read straight from its files (rsLoRA: alpha / sqrt(r))."""
    weights = load_file(path / "adapter_model.safetensors")
    cfg = json.loads((path / "adapter_config.json").read_text())
    find = {k.split(".lora_")[1][0]: v for k, v in weights.items() if f"layers.{block}.self_attn.{module}.lora_" in k}
    if not find:
        return None
    scale = cfg["lora_alpha"] / (cfg["r"] ** 0.5 if cfg.get("use_rslora") else cfg["r"])
    return find["A"].float(), find["B"].float(), scale


def _direct_scores(engine, reference, adapters, prompt, block, module, signal, probe_input):
    """Signals computed from the formulas of docs/method.md §1-2 on a full, hook-free pass of the base copy."""
    inputs = {}
    target = getattr(reference.model.layers[block].self_attn, module)
    handle = target.register_forward_pre_hook(lambda m, a: inputs.update(x=a[0][:, -1]))
    with torch.no_grad():
        out = reference(**encode(engine, [prompt]), output_hidden_states=True)
    handle.remove()
    h = out.hidden_states[block][0, -1] if probe_input == "residual" else inputs["x"][0]
    scores = []
    for path in adapters.values():
        lora = _lora(path, block, module)
        if lora is None:
            scores.append(0.0)
            continue
        A, B, s = lora
        o = s * B @ (A @ h)
        if signal.startswith("subspace"):  # h projected onto the row space of A (an orthonormal basis by QR)
            Q, _ = torch.linalg.qr(A.T.double())
            proj = float(torch.linalg.vector_norm(Q.T @ h.double()))
            scores.append(proj / float(torch.linalg.vector_norm(h.double())) if signal == "subspace_cos" else proj)
        elif signal == "norm":
            scores.append(float(torch.sqrt((o**2).sum())))
        else:
            p = torch.exp(o) / torch.exp(o).sum()
            scores.append(float(1 / (-(p * torch.log(p + 1e-8)).sum() + 1e-6)))
    return torch.tensor(scores)


@pytest.mark.parametrize("signal", ["norm", "entropy", "subspace", "subspace_cos"])
@pytest.mark.parametrize("probe_input", ["residual", "module"])
@pytest.mark.parametrize(("block", "module"), [(N_LAYERS - 1, "q_proj"), (1, "v_proj"), (2, "o_proj")])
def test_signals_match_the_formulas(setup, signal, probe_input, block, module):
    engine, reference, adapters = setup
    for prompt in PROMPTS[:2]:
        r = engine.route(prompt, signal=signal, calibrated=False, layer=block, module=module, probe_input=probe_input)
        expected = _direct_scores(engine, reference, adapters, prompt, block, module, signal, probe_input)
        torch.testing.assert_close(torch.tensor(list(r.scores.values())), expected, rtol=1e-4, atol=1e-6)


def test_norm_routing_never_loads_the_up_projections(tiny_tok, tmp_path):
    """`norm` and `subspace` scores come from A and r x r matrices alone: the stacked B of a site is read only
    when a signal of whole outputs asks for it, and then gives the same norms."""
    model = tiny_model(ARCHS[0], len(tiny_tok), n_layers=N_LAYERS)
    adapters = {f"a{i}": make_adapter(model, tmp_path / f"a{i}", seed=i, r=2 + 2 * i, alpha=8) for i in range(3)}
    engine = tiny_engine(model, tiny_tok, tmp_path, adapters, k=2)
    opts = dict(layer=f"0:{N_LAYERS}", module="q_proj", calibrated=False)
    norms = engine.route(PROMPTS[0], signal="norm", **opts).scores
    sub = engine.route(PROMPTS[0], signal="subspace_cos", **opts).scores  # A and r x r matrices only, too
    assert not engine.pool._ups and sub != norms
    with_gram = engine.pool.stacked_bytes
    A, G, _ = engine.pool.probe_stack((1, "q_proj"))
    assert G.shape == (3, A.shape[1], A.shape[1])  # r x r per adapter, never D_out x r
    engine.route(PROMPTS[0], signal="entropy", **opts)
    B = engine.pool.probe_up((1, "q_proj"))
    assert engine.pool.stacked_bytes - with_gram == N_LAYERS * B.nbytes  # B of each probed block, read now
    h = torch.randn(5, A.shape[2])
    torch.testing.assert_close(
        signals.output_norms(h, A, G), signals.norm_signal(signals.lora_outputs(h, A, B)), rtol=1e-5, atol=1e-6
    )
    assert engine.route(PROMPTS[0], signal="norm", **opts).scores == norms


def test_rslora_scale_is_alpha_over_sqrt_r(setup):
    engine = setup[0]
    assert engine.pool.files[3].scale == pytest.approx(16 / 4**0.5)  # a3: rsLoRA, r 4, alpha 16
    assert engine.pool.files[1].scale == pytest.approx(6 / 6)


def test_module_input_is_the_normed_residual(setup):
    """`module` reads the module's own input, which is the block's input norm of what `residual` reads; the
    norm rescales the vector, so the two probe inputs score the adapters differently (not by round-off)."""
    engine, *_ = setup
    block, ids = N_LAYERS - 1, encode(engine, PROMPTS[:1])
    hs = run_probe(engine.model, ids["input_ids"], ids["attention_mask"], {(block, RESIDUAL), (block, "q_proj")})
    norm = engine.model.model.layers[block].input_layernorm
    with torch.no_grad():
        torch.testing.assert_close(hs[(block, "q_proj")], norm(hs[(block, RESIDUAL)]), rtol=1e-5, atol=1e-6)
    opts = dict(calibrated=False, layer=block, module="q_proj")
    a = torch.tensor(list(engine.route(PROMPTS[0], probe_input="residual", **opts).scores.values()))
    b = torch.tensor(list(engine.route(PROMPTS[0], probe_input="module", **opts).scores.values()))
    assert ((a - b).abs() / a.abs().clamp_min(1e-6)).max() > 0.01


def test_calibration_divides_by_the_neutral_mean(setup):
    engine, reference, adapters = setup
    block, module = N_LAYERS - 1, "q_proj"
    neutral = torch.stack(
        [
            _direct_scores(engine, reference, adapters, p, block, module, "norm", "residual")
            for p in engine.router.neutral_prompts
        ]
    ).mean(0)
    raw = _direct_scores(engine, reference, adapters, PROMPTS[0], block, module, "norm", "residual")
    expected = torch.where(neutral > 0, raw / neutral, raw)
    r = engine.route(PROMPTS[0], calibrated=True, layer=block, module=module)
    torch.testing.assert_close(torch.tensor(list(r.scores.values())), expected, rtol=1e-4, atol=1e-6)


def test_multi_block_averages_single_blocks(setup):
    engine, *_ = setup
    singles = [
        torch.tensor(list(engine.route(PROMPTS[2], layer=b, module=m).scores.values()))
        for b in (1, 2)
        for m in ("q_proj", "v_proj")
    ]
    multi = engine.route(PROMPTS[2], layer="1:3", module="q_proj,v_proj").scores
    torch.testing.assert_close(torch.tensor(list(multi.values())), torch.stack(singles).mean(0))


@pytest.mark.parametrize("probe_input", ["residual", "module"])
def test_early_exit_stops_at_the_probe_block(setup, probe_input):
    """Blocks after the probe block never run (the probe block itself does not finish); the
    scores still equal a full pass's (test_signals_match_the_formulas)."""
    engine, *_ = setup
    finished = []
    layers = engine.model.model.layers
    handles = [layer.register_forward_hook(lambda m, a, o, i=i: finished.append(i)) for i, layer in enumerate(layers)]
    try:
        engine.route(PROMPTS[0], layer=1, probe_input=probe_input)
    finally:
        for h in handles:
            h.remove()
    assert finished == [0]


def test_select_top_k_ties_weights_and_broken_scores():
    idx, w = select_top_k(torch.tensor([1.0, 3.0, 3.0, 2.0]), 3)
    assert idx == [1, 2, 3]  # tie between 1 and 2 broken by pool order
    assert w == pytest.approx([3 / 8, 3 / 8, 2 / 8])
    assert select_top_k(torch.tensor([2.0, 2.0, 2.0]), 2)[0] == [0, 1]
    # NaN and inf (a poisoned adapter) are never selected, even when they would rank first
    assert select_top_k(torch.tensor([float("nan"), 1.0, float("inf"), 0.5]), 2)[0] == [1, 3]
    assert select_top_k(torch.tensor([float("nan"), 1.0]), 2) == ([1], [1.0])


def test_lead_weighting_keeps_the_best_at_full_strength():
    idx, w = select_top_k(torch.tensor([1.0, 3.0, -1.0, 2.0]), 3, "lead")
    assert idx == [1, 3, 0]
    # the best at 1; the others at LEAD_SHARE x their proportional weight (3/6, 2/6, 1/6 -> 2/6, 1/6)
    assert w == pytest.approx([1.0, LEAD_SHARE * 2 / 6, LEAD_SHARE * 1 / 6])
    assert select_top_k(torch.tensor([0.5, 2.0]), 1, "lead") == ([1], [1.0])  # k = 1: the same as proportional
    assert merge_weights([-1.0, -2.0], "lead") == pytest.approx([1.0, LEAD_SHARE / 2])  # none positive: shares even
    assert merge_weights([], "lead") == []
    with pytest.raises(ValueError, match="weighting='sharp'.*proportional, lead"):
        merge_weights([1.0], "sharp")


def test_the_merge_lab_scores_the_librarys_lead_weighting():
    """The merge lab's scheme and the library's formula are one: the lab's table is what `lead` ships."""
    from logo_core.merges import SCHEMES

    k, fn = SCHEMES[f"k3 top full + {LEAD_SHARE:g} shares"]
    for scores in ([3.0, 2.0, 1.0], [2.5, 0.4, -0.3], [-0.1, -0.2, -0.5]):
        assert fn(scores) == pytest.approx(merge_weights(scores, "lead"))


def test_ties_at_the_cut_are_found_up_to_round_off():
    # block 0: every score is 1 up to fp32 round-off of the probe and its calibration; the cut is noise
    scores = torch.tensor([1.0 + 6e-7, 1.0 - 7e-7, 1.0, 0.9])
    assert ties_at_cut(scores, [0, 2]) == [0, 1, 2]
    assert ties_at_cut(scores, [0, 2, 1]) == []  # all tied ones are in: a clean cut
    assert ties_at_cut(torch.tensor([1.0, 0.999, 0.5]), [0]) == []  # a real gap of 1e-3 is no tie


def test_routing_trace(setup):
    engine, *_ = setup
    r = engine.route(PROMPTS[0], k=3)
    assert list(r.scores) == engine.adapters
    assert len(r.selected) == 3 and list(r.weights) == r.selected
    ordered = sorted(r.scores.values(), reverse=True)
    assert [r.scores[n] for n in r.selected] == ordered[:3]
    top = [r.scores[n] for n in r.selected]
    assert list(r.weights.values()) == pytest.approx([s / sum(top) for s in top])
    assert r.options["blocks"] == [N_LAYERS - 1] and r.options["mode"] == "routed"


def _peft(reference, adapters, names, weights):
    from peft import PeftModel

    model = PeftModel.from_pretrained(copy.deepcopy(reference), str(adapters[names[0]]), adapter_name=names[0])
    for n in names[1:]:
        model.load_adapter(str(adapters[n]), adapter_name=n)
    if len(names) == 1:
        model.set_adapter(names[0])
    else:
        model.add_weighted_adapter(names, weights, "mix", combination_type="cat")
        model.set_adapter("mix")
    return model.eval()


@pytest.mark.parametrize("fold", [False, True])
@pytest.mark.parametrize(
    # a3 (rsLoRA) not first: PEFT's cat merge copies the first adapter's use_rslora into the merged config
    ("names", "weights"),
    [(["a1"], [1.0]), (["a0", "a2"], [0.7, 0.3]), (["a0", "a3", "a1"], [0.5, 0.2, 0.3])],
)
def test_mixture_equals_peft_prefill_and_decoding(setup, names, weights, fold):
    """Our mixture (low-rank pairs, or folded into private weights) computes PEFT's `cat` merge,
    in prefill and in KV-cached decoding, and leaves the shared model untouched."""
    engine, reference, adapters = setup
    peft_model = _peft(reference, adapters, names, weights)
    enc = encode(engine, PROMPTS[:2])  # a padded batch
    mixture = engine.decoder.mixture_for([Routing("", {}, names, dict(zip(names, weights)), {})])
    view = attach(engine.model, mixture, fold_weights=fold)
    gen = dict(max_new_tokens=6, do_sample=False, output_logits=True, return_dict_in_generate=True, pad_token_id=0)
    with torch.no_grad():
        ours = view(**enc).logits
        ours_gen = view.generate(**enc, **gen)
        theirs = peft_model(**enc).logits
        theirs_gen = peft_model.generate(**enc, **gen)
        base = reference(**enc).logits
        shared = engine.model(**enc).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert (ours - base).abs().max() > 1e-2  # the adapters really change the output
    torch.testing.assert_close(shared, base)  # ... of the view only
    assert torch.equal(ours_gen.sequences, theirs_gen.sequences)
    for a, b in zip(ours_gen.logits, theirs_gen.logits):  # decoding steps, with the KV cache
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_per_module_rank_and_alpha_apply_as_peft_applies_them(tiny_tok, tmp_path):
    """PEFT's `rank_pattern` / `alpha_pattern` (a module with its own r and alpha: here a rank-2 down_proj beside
    rank-4 q_proj and v_proj) load with each module's own rank and scale, and the mixture computes PEFT's model."""
    from peft import PeftModel

    model = tiny_model(ARCHS[0], len(tiny_tok), n_layers=N_LAYERS)
    reference = copy.deepcopy(model)
    path = make_adapter(
        model,
        tmp_path / "p",
        seed=4,
        r=4,
        alpha=8,
        targets=("q_proj", "v_proj", "down_proj"),
        rank_pattern={"down_proj": 2},
        alpha_pattern={"down_proj": 6},
    )
    engine = tiny_engine(model, tiny_tok, tmp_path, {"p": path}, k=1)
    f = engine.pool.files[0]
    assert (f.rank, f.scale, f.scales[(1, "q_proj")], f.scales[(1, "down_proj")]) == (4, 2.0, 2.0, 3.0)
    assert f.read([(1, "down_proj")])[(1, "down_proj")][0].shape[0] == 2
    peft_model = PeftModel.from_pretrained(reference, str(path)).eval()
    view = attach(engine.model, engine.decoder.mixture_for([Routing("", {}, ["p"], {"p": 1.0}, {})]))
    enc = encode(engine, PROMPTS[:2])
    with torch.no_grad():
        ours, theirs = view(**enc).logits, peft_model(**enc).logits
        with peft_model.disable_adapter():
            without = peft_model(**enc).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert (ours - without).abs().max() > 1e-2


def test_mixture_equals_reference_loop(setup):
    """The concatenated fast path equals sum_i w_i s_i B_i A_i x computed adapter by adapter."""
    engine, _, adapters = setup
    names, weights = ["a0", "a1", "a2"], [0.5, 0.3, 0.2]
    mixture = engine.decoder.mixture_for([Routing("", {}, names, dict(zip(names, weights)), {})])
    layer = attach(engine.model, mixture).model.layers[2].self_attn.q_proj
    assert isinstance(layer, MixedLinear)
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        fast = layer(x) - layer.base(x)
    loras = [_lora(adapters[n], 2, "q_proj") for n in names]
    expected = reference_delta(x, [(A, B, w * s) for (A, B, s), w in zip(loras, weights)])
    torch.testing.assert_close(fast, expected, rtol=1e-5, atol=1e-5)


def test_route_batch_equals_single_routes(setup):
    engine, *_ = setup
    batch = engine.route_batch(PROMPTS, k=2, probe_input="module")
    for prompt, r in zip(PROMPTS, batch):
        single = engine.route(prompt, k=2, probe_input="module")
        assert r.selected == single.selected
        torch.testing.assert_close(torch.tensor(list(r.scores.values())), torch.tensor(list(single.scores.values())))


def test_generate_batch_rows_with_different_mixtures(setup):
    engine, *_ = setup
    mixtures = [{"a0": 1.0}, {"a1": 0.5, "a2": 0.5}, {}, {"a3": 0.4, "a0": 0.6}]
    batch = engine.generate_batch(PROMPTS, adapters=mixtures, max_new_tokens=6)
    for prompt, mix, g in zip(PROMPTS, mixtures, batch):
        assert g.text == engine.generate(prompt, adapters=mix, max_new_tokens=6).text
    assert len({g.text for g in batch}) > 1


def test_order_independence(setup):
    engine, *_ = setup
    first = engine.route(PROMPTS[0], k=2)
    for p in PROMPTS[1:]:
        engine.generate(p, max_new_tokens=3)
        engine.route(p, k=3, signal="entropy")
    again = engine.route(PROMPTS[0], k=2)
    assert first.scores == again.scores and first.selected == again.selected


def test_stream_equals_generate(setup):
    engine, *_ = setup
    stream = engine.stream(PROMPTS[1], max_new_tokens=8)
    assert stream.routing.selected  # known before the first token
    text = "".join(stream)
    assert text == stream.result.text == engine.generate(PROMPTS[1], max_new_tokens=8).text
    assert stream.result.timings["new_tokens"] >= 1 and not stream.result.stopped


def test_concurrent_requests_match_sequential(setup):
    engine, *_ = setup
    jobs = [(PROMPTS[i % 4], {f"a{i % 4}": 1.0} if i % 3 else {"a0": 0.5, f"a{(i + 1) % 4}": 0.5}) for i in range(8)]
    jobs[5] = (PROMPTS[1], None)  # routed, not explicit
    sequential = [engine.generate(p, adapters=a, max_new_tokens=8).text for p, a in jobs]
    results = concurrently(lambda i: engine.generate(jobs[i][0], adapters=jobs[i][1], max_new_tokens=8).text, 8)
    assert results == sequential
    assert len(set(sequential)) > 2


def test_long_prompt_keeps_head_and_tail(setup):
    engine, *_ = setup
    prompt = "Hello there. " * 600 + "What is 47 + 38?"
    g = engine.generate(prompt, max_new_tokens=4)
    assert any("kept the first" in n for n in g.notices) and g.routing.notices == g.notices
    enc = encode(engine, [prompt])
    text = engine.tokenizer.decode(enc["input_ids"][0])
    assert "What is 47 + 38?" in text and text.count("Hello there.") < 600


def test_sweep_rows_match_single_layers(setup):
    engine, *_ = setup
    sweep = engine.router.layer_sweep(PROMPTS[0], calibrated=True)
    assert sweep.shape == (N_LAYERS, 4)
    for b in range(N_LAYERS):
        torch.testing.assert_close(sweep[b], torch.tensor(list(engine.route(PROMPTS[0], layer=b).scores.values())))


def test_probe_cache_gives_the_same_routing_without_a_pass(setup, tiny_tok, tmp_path):
    engine, _, adapters = setup
    cached = tiny_engine(engine.model, tiny_tok, tmp_path, adapters, k=2, engine={"probe_cache_mb": 1})
    first = cached.route(PROMPTS[0], layer=-1)
    passes = []
    handle = engine.model.model.layers[0].register_forward_pre_hook(lambda m, a: passes.append(1))
    try:
        for layer, probe_input in [(1, "residual"), (2, "module"), (-1, "residual")]:
            r = cached.route(PROMPTS[0], layer=layer, probe_input=probe_input, signal="entropy")
            assert r.scores == engine.route(PROMPTS[0], layer=layer, probe_input=probe_input, signal="entropy").scores
    finally:
        handle.remove()
    assert len(passes) == 3  # only the uncached engine ran forward passes
    assert cached.route(PROMPTS[0], layer=-1).scores == first.scores


def test_probe_cache_stays_within_its_byte_budget(setup, tiny_tok, tmp_path):
    """Cached vectors own their storage (no views into whole sequences) and the cache is bounded in bytes."""
    engine, _, adapters = setup
    budget = 40_000
    cached = tiny_engine(engine.model, tiny_tok, tmp_path, adapters, engine={"probe_cache_mb": budget / 2**20})
    for i in range(20):
        cached.route(f"Hello there number {i}. " + "The quick brown fox jumps over the lazy dog. " * 30)
        assert cached.router.probe_cache.nbytes <= budget
        for vectors in cached.router.probe_cache._entries.values():
            for v in vectors.values():
                assert v.untyped_storage().nbytes() == v.nbytes  # owns exactly its own [1, D] floats
    assert len(cached.router.probe_cache) >= 2


def test_closing_a_stream_stops_decoding(setup):
    engine, *_ = setup
    stream = engine.stream(PROMPTS[0], max_new_tokens=200, min_new_tokens=200)
    pieces = iter(stream)
    next(pieces)
    stream.close()
    rest = list(pieces)
    assert stream.result.stopped and stream.result.timings["new_tokens"] < 200
    assert len(rest) < 199


def test_seeded_sampling_repeats_and_differs_across_seeds(setup):
    engine, *_ = setup
    kw = dict(max_new_tokens=12, do_sample=True, temperature=1.5, adapters={"a0": 1.0})
    a = [engine.generate(PROMPTS[3], seed=s, **kw).text for s in (1, 2, 1)]
    assert a[0] == a[2] and a[0] != a[1]
    assert engine.generate(PROMPTS[3], seed=1, **kw).generation["seed"] == 1


def test_none_means_the_default_of_adapters_yaml(setup, tiny_tok, tmp_path):
    """A keyword sent as None (what the API sends for an omitted setting) keeps the file's default."""
    engine, _, adapters = setup
    e = tiny_engine(engine.model, tiny_tok, tmp_path, adapters, k=3, layer="1:3", max_new_tokens=2)
    r = e.route(PROMPTS[0], k=None, layer=None, module=None)
    assert len(r.selected) == 3 and r.options["blocks"] == [1, 2]
    assert e.generate(PROMPTS[0], max_new_tokens=None, min_new_tokens=2).timings["new_tokens"] == 2
