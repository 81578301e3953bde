"""PEFT's Arrow as a peer: the coefficients this project reads are the ones PEFT routes with, and the peer
never touches the engine's shared model."""

from __future__ import annotations

import pytest
import torch

from logo_core.arrow import ArrowPeer, token_coefficients

pytestmark = pytest.mark.slow  # the real model and pool


@pytest.fixture(scope="module")
def peer(real_engine):
    return ArrowPeer(real_engine, top_k=2)


def test_token_coefficients_reproduce_pefts_arrow_delta(peer):
    """PEFT's delta at a layer = sum_e c_e(x) s_e B_e A_e x with our coefficients c: they are PEFT's."""
    model = peer.model()
    with peer._lock:  # the built model is shared by every peer of the engine: route with this one's top_k
        peer._mine(model)
    layers = [m for m in model.modules() if hasattr(m, "lora_arrow") and "arrow_router" in m.lora_arrow]
    assert len(layers) == peer.engine.n_layers * len(peer.engine.pool.modules)
    m = layers[len(layers) // 2]
    arrow = m.lora_arrow["arrow_router"]
    x = torch.randn(2, 5, m.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        m(x)  # PEFT builds its prototypes on the first forward
        delta = arrow(x, lora_A=m.lora_A, lora_B=m.lora_B, dropout=torch.nn.Identity(), scaling=m.scaling)
        c = token_coefficients(arrow, x)  # [B, T, E]
        ours = sum(
            c[..., e, None] * m.scaling[n] * (x @ m.lora_A[n].weight.T @ m.lora_B[n].weight.T)
            for e, n in enumerate(arrow.task_adapter_names)
        )
    torch.testing.assert_close(ours, delta, rtol=1e-4, atol=1e-5)
    assert ((c > 0).sum(-1) == 2).all()  # top_k 2 per token


def test_weights_and_answers_of_the_peer(peer, real_engine):
    prompts = ["Spell out 19 in German.", "Convert 5 km to m."]
    weights = peer.weights(prompts)
    assert all(set(w) <= set(real_engine.adapters) and 0 < sum(w.values()) <= 1 + 1e-6 for w in weights)
    assert all(v >= 0.05 for w in weights for v in list(w.values())[1:])  # the top one, then those >= 5%
    *_, last = peer.stream(prompts[0], 8)
    assert last.text and last.timings["tokens_per_s"] > 0 and last.weights == peer.weights(prompts[:1])[0]
    # Batched with another prompt (left padding), the coefficients move in the last bits only (AMX kernels).
    assert last.weights == pytest.approx(weights[0], abs=1e-4)
    assert peer.generate_batch(prompts[:1], 8) == [last.text.strip()]  # batched and streamed agree (greedy)
    assert not any("lora" in n for n, _ in real_engine.model.named_modules())  # the shared model is untouched


def test_a_top_k_view_shares_the_model_and_routes_with_its_own_k(peer):
    """Compare and the evaluation switch k on one built model: each view must route with its own k on every
    call, whichever view ran last."""
    one, three = peer.with_top_k(1), peer.with_top_k(3)
    assert one.model() is three.model() is peer.model()  # built once
    assert ArrowPeer(peer.engine, top_k=3).model() is peer.model()  # and shared by every peer of the engine
    model = peer.model()
    with peer._lock:  # the built model is shared by every peer of the engine: route with this one's top_k
        peer._mine(model)
    layers = [m for m in model.modules() if hasattr(m, "lora_arrow") and "arrow_router" in m.lora_arrow]
    x = torch.randn(1, 4, layers[0].in_features, generator=torch.Generator().manual_seed(1))
    prompts = ["Spell out 19 in German."]
    first = one.weights(prompts)
    spread = three.weights(prompts)
    for view, k in ((one, 1), (three, 3), (peer, 2)):
        view._mine(view.model())
        assert ((token_coefficients(layers[0].lora_arrow["arrow_router"], x) > 0).sum(-1) == k).all()
    assert one.weights(prompts) == first != spread  # k = 1 again after k = 3 ran: the same coefficients
    # The Arrow study (`python -m logo_core.arrow --top-k 1 3`) ranks by these: once it read the shared model
    # without setting k, and its top_k 3 rows repeated top_k 1's.
    c1, c3 = one.coefficients(prompts), three.coefficients(prompts)
    assert not torch.allclose(c1, c3) and torch.equal(one.coefficients(prompts), c1)
    assert one.generate_batch(prompts, 6) == one.generate_batch(prompts, 6)
    with pytest.raises(ValueError, match="top_k=0"):
        peer.with_top_k(0)


def test_arrow_over_one_adapter_answers_as_that_adapter(real_engine):
    """With one adapter every token's coefficient is 1, so Arrow must answer exactly as the engine does with
    that adapter alone: the check that the evaluation drives PEFT's Arrow right (paths, scaling, chat
    template, left-padded batches), whatever Arrow scores over the whole pool."""
    name = real_engine.adapters[0]
    prompts = [*real_engine.pool.specs[0].examples[:2], "Hello, who are you?"]
    one = ArrowPeer(real_engine, top_k=1, adapters=[name])
    assert one.weights(prompts) == [{name: pytest.approx(1.0)}] * len(prompts)
    alone = [g.text.strip() for g in real_engine.generate_batch(prompts, adapters=[{name: 1.0}] * 3, max_new_tokens=12)]
    base = [g.text.strip() for g in real_engine.generate_batch(prompts, adapters=[{}] * 3, max_new_tokens=12)]
    assert one.generate_batch(prompts, 12) == alone != base  # the adapter acts, exactly as in a mixture of one


def test_arrow_peer_rejects_unknown_adapters(real_engine):
    with pytest.raises(ValueError, match="adapters=.*no_such"):
        ArrowPeer(real_engine, top_k=1, adapters=["no_such"])
    with pytest.raises(ValueError, match="top_k=2"):
        ArrowPeer(real_engine, top_k=2, adapters=real_engine.adapters[:1])
