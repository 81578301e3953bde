"""Serving paths on a tiny model: the micro-batcher (concurrent requests share one decode, each row keeps
its selection, tokens, stream and Stop) and the compiled decode path (fixed-shape mixture buffers: the
same greedy tokens as eager, no recompilation when the mixture changes)."""

from __future__ import annotations

import contextlib

import pytest
from helpers import concurrently, make_adapter, tiny_engine, tiny_model

PROMPTS = ["What is 47 + 38?", "Translate the cat to French.", "Hi", "Hello there, how are you today?"]


@pytest.fixture(scope="module")
def engine(tiny_tok, tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    model = tiny_model("llama", len(tiny_tok))
    adapters = {f"a{i}": make_adapter(model, root / f"a{i}", seed=i, r=4) for i in range(4)}
    settings = {"max_prompt_tokens": 64, "batch_buckets": [2], "max_mixture_rank": 12}
    return tiny_engine(model, tiny_tok, root, adapters, k=2, max_new_tokens=12, engine=settings)


@contextlib.contextmanager
def batching(engine, **kw):
    """Micro-batching on for the block (`Decoder.enable_batching`), off afterwards."""
    try:
        yield engine.decoder.enable_batching(**kw)
    finally:
        engine.decoder.batcher = None


def test_batcher_rows_equal_requests_made_alone(engine):
    jobs = [(PROMPTS[i % 4], None if i % 3 else {"a1": 0.4, "a3": 0.6}, i % 2 == 1) for i in range(8)]
    alone = [engine.generate(p, adapters=a, max_new_tokens=10) for p, a, _ in jobs]

    def request(i: int):
        prompt, adapters, streamed = jobs[i]
        if not streamed:
            return engine.generate(prompt, adapters=adapters, max_new_tokens=10), None
        stream = engine.stream(prompt, adapters=adapters, max_new_tokens=10)
        return stream.result if (text := "".join(stream)) is not None else None, text

    with batching(engine, window_s=0.2, max_rows=8) as batcher:
        got = concurrently(request, len(jobs))
    assert max(batcher.batches) > 1  # requests really shared decodes
    for a, (g, streamed_text) in zip(alone, got):
        assert g.routing.selected == a.routing.selected and g.routing.weights == a.routing.weights
        assert g.text == a.text  # fp32 greedy: padding in a batch does not change these tokens
        assert streamed_text is None or streamed_text == g.text


def test_batcher_stop_ends_one_row_only(engine):
    long = dict(max_new_tokens=200, min_new_tokens=200)

    def request(i: int):
        stream = engine.stream(PROMPTS[i], **long)
        pieces = iter(stream)
        next(pieces)
        if i == 0:
            stream.close()
        list(pieces)
        return stream.result

    with batching(engine, window_s=0.2, max_rows=4) as batcher:
        stopped, full = concurrently(request, 2)
    assert batcher.batches == [2]
    assert stopped.stopped and stopped.timings["new_tokens"] < 200
    assert not full.stopped and full.timings["new_tokens"] == 200


def test_batcher_reports_errors_and_keeps_serving(engine):
    from logo_core.errors import RequestError

    with batching(engine, window_s=0.01) as batcher:
        with pytest.raises(RequestError, match="`k` must be between 1 and 4"):
            engine.generate(PROMPTS[0], k=9)
        with pytest.raises(RequestError, match="`timeout` must be"):  # the one stream checks it, batched or not
            engine.stream(PROMPTS[0], timeout=-1)
        assert engine.generate(PROMPTS[0], max_new_tokens=3).timings["new_tokens"] >= 1
    assert batcher.batches == [1]


@pytest.mark.slow  # torch.compile
def test_compiled_decode_equals_eager_and_never_recompiles_for_a_new_mixture(engine):
    mixes = [{"a0": 1.0}, {"a1": 0.5, "a2": 0.5}, {"a3": 0.3, "a0": 0.7}, {}]
    eager = [engine.generate(p, adapters=m, max_new_tokens=10).text for p, m in zip(PROMPTS, mixes)]
    eager_batch = [g.text for g in engine.generate_batch(PROMPTS[:2], adapters=mixes[:2], max_new_tokens=10)]
    engine.enable_compiled_decode(log=lambda msg: None)  # compiles bucket 2 now
    try:
        compiled_at_start = engine.decoder.compiled.compiles
        for p, m, want in zip(PROMPTS, mixes, eager):  # batch 1 padded to bucket 2, four different mixtures
            assert engine.generate(p, adapters=m, max_new_tokens=10).text == want
        got = [g.text for g in engine.generate_batch(PROMPTS[:2], adapters=mixes[:2], max_new_tokens=10)]
        assert got == eager_batch  # two rows, two mixtures, one compiled graph
        assert engine.decoder.compiled.compiles == compiled_at_start  # no recompilation for any new mixture
        big = {f"a{i}": 0.25 for i in range(4)}  # rank 16 > the buffers' 12: runs eager, same answer
        assert not engine.decoder.compiled.accepts(engine.plan([PROMPTS[0]], adapters=[big], max_new_tokens=10))
        engine.generate(PROMPTS[0], adapters=big, max_new_tokens=10)
    finally:
        engine.decoder.compiled = None
