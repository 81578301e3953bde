"""GPU checks (marker `gpu`): skipped without CUDA, so CI (CPU only) never runs them. Run them on a GPU:

    python -m pytest -m gpu tests/test_gpu.py -rs

The real SmolLM2 with the shipped pool, on CUDA against the CPU in fp32; bf16 routing against fp32;
batched rows, streaming, Stop and concurrency on CUDA; the compiled decode path against eager.
Greedy tokens must match unless the two best logits at the first differing step are within 1e-4
(a near tie, which the test prints instead of failing).
"""

from __future__ import annotations

import pytest
import torch
from conftest import ROOT
from helpers import concurrently

from logo_core.engine import LoGoEngine
from logo_core.registry import load_config, with_overrides

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run on a GPU machine)"),
]
NEAR_TIE = 1e-4


def _engine(device: str, dtype: str, **engine) -> LoGoEngine:
    cfg = with_overrides(
        load_config(ROOT / "adapters.yaml"), base_model={"device": device, "dtype": dtype}, engine=engine
    )
    return LoGoEngine.from_pool_config(cfg)


@pytest.fixture(scope="module")
def cpu32():
    return _engine("cpu", "fp32")


@pytest.fixture(scope="module")
def gpu32():
    return _engine("cuda", "fp32")


def greedy(engine: LoGoEngine, prompt: str, n: int = 24, **kw) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy token ids and per-step logits of the engine's own decode path."""
    plan = engine.plan([prompt], max_new_tokens=n, min_new_tokens=n, **kw)
    from logo_core.mixing import attach

    view = attach(engine.model, plan.mixture, fold_weights=engine.decoder.fold)
    with torch.inference_mode():
        out = view.generate(
            **plan.enc.inputs(),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=engine.tokenizer.pad_token_id,
        )
    return out.sequences[0, plan.enc.input_ids.shape[1] :].tolist(), [x[0].float().cpu() for x in out.logits]


def same_or_near_tie(a: tuple, b: tuple, what: str) -> None:
    ids_a, logits_a = a
    ids_b, _ = b
    if ids_a == ids_b:
        return
    t = next(i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y)
    top2 = torch.topk(logits_a[t], 2).values
    margin = float(top2[0] - top2[1])
    assert margin < NEAR_TIE, f"{what}: tokens differ at step {t} with a margin of {margin:.2e} (not a near tie)"
    print(f"near tie ({what}): step {t}, top-2 margin {margin:.2e}")


def test_cuda_fp32_equals_cpu_fp32(cpu32, gpu32):
    assert next(gpu32.model.parameters()).device.type == "cuda"
    prompts = [p for spec in cpu32.pool.specs for p in spec.examples]
    for p in prompts:
        a, b = cpu32.route(p), gpu32.route(p)
        assert a.selected == b.selected, p
        assert b.scores == pytest.approx(a.scores, rel=1e-3)
    for p in prompts[::3]:
        same_or_near_tie(greedy(cpu32, p), greedy(gpu32, p), f"cpu vs cuda on {p!r}")


def test_bf16_keeps_the_fp32_top1(gpu32):
    from logo_core.tasks import TASKS

    bf16 = _engine("cuda", "bf16")
    prompts = [ex.prompt for t in TASKS.values() if t.name in gpu32.adapters for ex in t.examples("test", 20)]
    a, b = gpu32.route_batch(prompts), bf16.route_batch(prompts)
    agree = sum(x.selected[0] == y.selected[0] for x, y in zip(a, b)) / len(prompts)
    print(f"bf16 keeps the fp32 top-1 on {agree:.1%} of {len(prompts)} test prompts")
    assert agree >= 0.98


def test_batched_rows_streams_stop_and_concurrency_on_cuda(gpu32):
    prompts = [spec.examples[0] for spec in gpu32.pool.specs[:4]]
    mixes = [{n: 1.0} for n in gpu32.adapters[:3]] + [{}]
    batch = gpu32.generate_batch(prompts, adapters=mixes, max_new_tokens=12)
    for p, m, g in zip(prompts, mixes, batch):
        assert g.text == gpu32.generate(p, adapters=m, max_new_tokens=12).text
    stream = gpu32.stream(prompts[0], max_new_tokens=12)
    assert "".join(stream) == stream.result.text == gpu32.generate(prompts[0], max_new_tokens=12).text
    stream = gpu32.stream(prompts[1], max_new_tokens=300, min_new_tokens=300)
    pieces = iter(stream)
    next(pieces)
    stream.close()
    list(pieces)
    assert stream.result.stopped and stream.result.timings["new_tokens"] < 300
    alone = [gpu32.generate(p, max_new_tokens=12).text for p in prompts * 2]
    got = concurrently(lambda i: gpu32.generate((prompts * 2)[i], max_new_tokens=12).text, len(alone))
    assert got == alone


def test_micro_batcher_rows_keep_their_selection_on_cuda(gpu32):
    prompts = [spec.examples[0] for spec in gpu32.pool.specs[:8]]
    alone = [gpu32.generate(p, max_new_tokens=12) for p in prompts]
    batcher = gpu32.decoder.enable_batching(window_s=0.05, max_rows=8)
    try:
        got = concurrently(lambda i: gpu32.generate(prompts[i], max_new_tokens=12), len(prompts))
    finally:
        gpu32.decoder.batcher = None
    assert max(batcher.batches) > 1
    for a, g in zip(alone, got):
        assert a.routing.selected == g.routing.selected
        if a.text != g.text:
            print(f"batched row differs from alone (left padding): {a.text!r} vs {g.text!r}")


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_compiled_decode_equals_eager(dtype):
    engine = _engine("cuda", dtype, max_prompt_tokens=256)
    prompts = [spec.examples[0] for spec in engine.pool.specs]

    def ids(p: str) -> list[int]:
        return engine.decoder.decode(engine.plan([p], max_new_tokens=24, min_new_tokens=24))[0].tolist()

    eager = {p: (engine.route(p).selected, greedy(engine, p)) for p in prompts}
    engine.enable_compiled_decode()
    start = engine.decoder.compiled.compiles
    for p in prompts:
        assert engine.route(p).selected == eager[p][0]
        if dtype == "fp32":
            same_or_near_tie(eager[p][1], (ids(p), None), f"compiled vs eager on {p!r}")
        else:
            ids(p)
    assert engine.decoder.compiled.compiles == start, "a new mixture recompiled the decode step"
