"""A CPU guard for device and dtype placement (CI has no GPU).

Device: the engine's route, generate, stream, batch and export run once more with torch's default device set
to `meta` while the model and the pool stay on the CPU. A tensor made without an explicit device then lands on
`meta` and fails the way it would fail on CUDA (a CPU tensor meeting a GPU one); a correct one gives the very
same answers as without the guard. (torch's default device is per thread: the guard covers what runs in the
caller's thread, i.e. everything but a stream's background decode.)

Dtype: a bf16 model's engine computes every signal in fp32, and its mixture factors stay in the compute dtype.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from helpers import make_adapter, tiny_model

from logo_core import loading, signals
from logo_core.engine import LoGoEngine
from logo_core.loading import Placement
from logo_core.pool import load_pool
from logo_core.registry import parse_config

PROMPTS = ["What is 47 + 38?", "Translate the cat to French."]
N_LAYERS = 3


@contextlib.contextmanager
def default_device(device: str):
    torch.set_default_device(device)
    try:
        yield
    finally:
        torch.set_default_device(None)


def placed_engine(model, tokenizer, root, adapters: dict, dtype: torch.dtype, **engine) -> LoGoEngine:
    """An engine as `from_pool_config` builds one: each module's factors placed by `loading.site_placement`."""
    place = Placement(torch.device("cpu"), "bf16" if dtype == torch.bfloat16 else "fp32", dtype)
    cfg = parse_config(
        {
            "adapters": [{"name": n, "path": str(p)} for n, p in adapters.items()],
            "defaults": {"k": 2},
            "engine": engine,
        },
        file=str(root / "adapters.yaml"),
        root=root,
    )
    where = lambda key: loading.site_placement(model, *key, place)  # noqa: E731
    pool, report = load_pool(cfg, model, where=where)
    return LoGoEngine(model, tokenizer, pool, cfg, place, load_report=report)


@pytest.fixture(scope="module")
def adapters(tiny_tok, tmp_path_factory):
    root = tmp_path_factory.mktemp("placement")
    model = tiny_model("llama", len(tiny_tok), n_layers=N_LAYERS)
    return model, root, {f"a{i}": make_adapter(model, root / f"a{i}", seed=i, r=2 + i) for i in range(3)}


def requests(engine: LoGoEngine, tmp_path) -> dict:
    """Route, generate, stream, batch, export: everything a caller does, with its results."""
    gen = dict(max_new_tokens=4, min_new_tokens=4)
    stream = engine.stream(PROMPTS[1], **gen)
    exported = engine.export_adapter({"a0": 0.25, "a2": 0.75}, tmp_path / "mix")
    return {
        "route": engine.route(PROMPTS[0], layer="0:3", module="q_proj,v_proj").scores,
        "route_batch": [r.scores for r in engine.route_batch(PROMPTS, signal="entropy", probe_input="module")],
        "generate": engine.generate(PROMPTS[0], **gen).text,
        "stream": ("".join(stream), stream.result.text),
        "batch": [
            g.text for g in engine.generate_batch(PROMPTS, adapters=[{"a1": 1.0}, {"a0": 0.5, "a2": 0.5}], **gen)
        ],
        "export": sorted(p.name for p in exported.iterdir()),
    }


@pytest.mark.parametrize("mixture", ["fold", "lowrank"])
def test_nothing_is_made_on_torch_default_device(adapters, tiny_tok, tmp_path, mixture):
    model, root, files = adapters
    plain = requests(placed_engine(model, tiny_tok, root, files, torch.float32, mixture=mixture), tmp_path / "plain")
    fresh = placed_engine(model, tiny_tok, root, files, torch.float32, mixture=mixture)  # calibrates under the guard
    with default_device("meta"):
        guarded = requests(fresh, tmp_path / "guarded")
    assert guarded == plain


def test_bf16_signals_in_fp32_and_factors_in_the_compute_dtype(adapters, tiny_tok, monkeypatch):
    model, root, files = adapters
    bf16 = tiny_model("llama", len(tiny_tok), n_layers=N_LAYERS).to(torch.bfloat16)
    bf16.load_state_dict(model.state_dict())
    engine = placed_engine(bf16, tiny_tok, root, files, torch.bfloat16, mixture="lowrank")
    seen = []
    site_score = signals.site_score

    def spy(site, signal):
        out = site_score(site, signal)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(signals, "site_score", spy)
    for signal in ("norm", "entropy"):
        r = engine.route(PROMPTS[0], signal=signal, layer="0:3", module="q_proj,v_proj")
        assert all(isinstance(v, float) for v in r.scores.values())
    assert seen and set(seen) == {torch.float32}
    mixture = engine.plan([PROMPTS[0]], max_new_tokens=2).mixture
    assert {t.dtype for A, Bw in mixture.factors.values() for t in (A, Bw)} == {torch.bfloat16}
    assert engine.generate(PROMPTS[0], max_new_tokens=3, min_new_tokens=3).timings["new_tokens"] == 3
