"""Measurements shared by the CPU run (`cpu.py`) and the device run (`device.py`), device-agnostic:
every tensor goes where the engine's placement says, every clock reading waits for the device.

Each function interleaves what it compares and returns plain rows (dicts) for the report.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..engine import LoGoEngine
from .common import Sample, interleave, med, paired_ratio, seconds, sync
from .synthetic import ROUTINGS, engine_for, pool_config, write_adapters

# --------------------------------------------------------------------------- end to end


def e2e(contenders: Sequence, prompts: Sequence[str], lengths: Sequence[int], reps: int, log) -> dict:
    """Every contender generating max(lengths) tokens per prompt, interleaved; shorter requests are
    read off the same clocks. Returns the summary rows, raw latencies and the amortisation curves."""
    n = max(lengths)
    samples = interleave(contenders, prompts, n, reps, log)
    return {
        "rows": summarise(samples, contenders, lengths),
        "raw": {str(m): {c: [x.latency(m) for x in v] for c, v in samples.items()} for m in lengths},
        "raw_decode_tps": {c: [x.decode_tps for x in v] for c, v in samples.items()},
        "ms_per_token": amortisation(samples),
    }


def summarise(samples: dict[str, list[Sample]], contenders: Sequence, lengths: Sequence[int]) -> list[dict]:
    """Latency at each length and decode speed, each against the base model's (paired ratios)."""
    base = samples["base"]
    rows = []
    for c in contenders:
        ss = samples[c.name]
        row = {
            "contender": c.name,
            "k": c.k,
            "setup_ms": 1000 * med([x.setup_s for x in ss]),
            "first_token_ms": 1000 * med([x.first_token_s for x in ss]),
        }
        for m in lengths:
            row[f"e2e_{m}_s"] = med([x.latency(m) for x in ss])
            row[f"e2e_{m}_ratio"] = paired_ratio([x.latency(m) for x in ss], [x.latency(m) for x in base])
        row["decode_tps"] = med([x.decode_tps for x in ss])
        row["decode_ratio"] = paired_ratio([x.decode_tps for x in ss], [x.decode_tps for x in base])
        rows.append(row)
    return rows


def amortisation(samples: dict[str, list[Sample]]) -> dict[str, list[float]]:
    """ms per generated token after n tokens, (setup + prefill + decode up to n) / n (the paper's curve)."""
    out = {}
    for name, ss in samples.items():
        n = len(ss[0].token_s)
        out[name] = [1000 * med([s.token_s[i] / (i + 1) for s in ss]) for i in range(n)]
    return out


# --------------------------------------------------------------------------- routing


def routing_vs_n(model, tok, root: Path, sizes: Sequence[int], prompts: Sequence[str], reps: int, log, **cfg) -> list:
    """`engine.route` (k = 3) for pools of growing size under each of `ROUTINGS`, interleaved.

    Args:
        cfg: `pool_config` sections (base_model placement, engine settings).
    """
    engines, load_s, first_s = {}, {}, {}
    for n in sizes:
        adapters = write_adapters(model, root / "adapters", n)
        t0 = time.perf_counter()
        engines[n] = engine_for(model, tok, pool_config(adapters, root, **cfg))
        load_s[n] = time.perf_counter() - t0
        for label, how in ROUTINGS.items():  # first call: stacks the probe factors
            first_s[(label, n)] = seconds(lambda e=engines[n], how=how: e.route(prompts[0], k=3, **how), model.device)
        log(f"  pool N={n}: load {load_s[n]:.1f} s, first routes {[round(first_s[(r, n)], 2) for r in ROUTINGS]} s")
    times: dict[tuple[str, int], list[float]] = {(r, n): [] for r in ROUTINGS for n in sizes}
    for _ in range(reps):
        for p in prompts:
            for label, how in ROUTINGS.items():
                for n in sizes:
                    times[(label, n)].append(
                        seconds(lambda e=engines[n], p=p, how=how: e.route(p, k=3, **how), model.device)
                    )
    return [
        {
            "routing": label,
            "n": n,
            "route_ms": 1000 * med(times[(label, n)]),
            "ratio": paired_ratio(times[(label, n)], times[(label, sizes[0])]),
            "first_route_s": first_s[(label, n)],
            "load_s": load_s[n],
            "samples": len(times[(label, n)]),
        }
        for label in ROUTINGS
        for n in sizes
    ]


def batched_routing(engine: LoGoEngine, prompts: Sequence[str], reps: int) -> dict:
    """route_batch(B prompts) against B route() calls, interleaved."""
    dev, got = engine.placement.device, {}
    engine.route_batch(prompts, k=3)
    one_call, calls = [], []
    for _ in range(reps):
        one_call.append(seconds(lambda: got.update(batch=engine.route_batch(prompts, k=3)), dev))
        calls.append(seconds(lambda: got.update(single=[engine.route(p, k=3) for p in prompts]), dev))
    same = sum(a.selected == b.selected for a, b in zip(got["batch"], got["single"], strict=True)) / len(prompts)
    return {
        "prompts": len(prompts),
        "one_call_s": med(one_call),
        "separate_calls_s": med(calls),
        "speedup": paired_ratio(calls, one_call),
        "same_selection": same,
        "samples": reps,
    }


# --------------------------------------------------------------------------- throughput


def batch_vs_calls(engine: LoGoEngine, prompts: Sequence[str], n: int, k: int, reps: int) -> dict:
    """`generate_batch` of B prompts (each row its own mixture) against B `generate` calls: tokens/s."""
    dev, B = engine.placement.device, len(prompts)
    kw = dict(k=k, max_new_tokens=n, min_new_tokens=n)
    mixtures = {tuple(g.routing.selected) for g in engine.generate_batch(prompts, **kw)}  # warm-up
    batched, single = [], []
    for _ in range(reps):
        batched.append(seconds(lambda: engine.generate_batch(prompts, **kw), dev))
        single.append(seconds(lambda: [engine.generate(p, **kw) for p in prompts], dev))
    return {
        "prompts": B,
        "distinct_mixtures": len(mixtures),
        "new_tokens": n,
        "batch_s": med(batched),
        "calls_s": med(single),
        "batch_tps": B * n / med(batched),
        "calls_tps": B * n / med(single),
        "speedup": paired_ratio(single, batched),
        "samples": reps,
    }


def concurrent(call: Callable[[str], object], prompts: Sequence[str]) -> None:
    """Call `call(prompt)` from one thread per prompt, all at once; re-raise the first error."""
    errors: list[BaseException] = []

    def work(p: str) -> None:
        try:
            call(p)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def micro_batching(engine: LoGoEngine, prompts: Sequence[str], n: int, k: int, reps: int, window_s: float = 0.02):
    """C concurrent callers through the micro-batcher (`Decoder.enable_batching`) against 1 caller: tokens/s
    of the whole service."""
    saved = engine.decoder.batcher
    batcher = engine.decoder.enable_batching(window_s=window_s, max_rows=len(prompts))
    dev, C = engine.placement.device, len(prompts)
    kw = dict(k=k, max_new_tokens=n, min_new_tokens=n)
    try:
        concurrent(lambda p: engine.generate(p, **kw), prompts)  # warm-up
        start = len(batcher.batches)
        many, one = [], []
        for i in range(reps):
            many.append(seconds(lambda: concurrent(lambda p: engine.generate(p, **kw), prompts), dev))
            one.append(seconds(lambda i=i: engine.generate(prompts[i % C], **kw), dev))
    finally:
        engine.decoder.batcher = saved
    rows = batcher.batches[start:]
    return {
        "callers": C,
        "new_tokens": n,
        "many_tps": C * n / med(many),
        "one_tps": n / med(one),
        "throughput_ratio": med([(C * n / a) / (n / b) for a, b in zip(many, one, strict=True)]),
        "mean_rows_per_decode": sum(rows) / max(1, len(rows)),
        "samples": reps,
    }


# --------------------------------------------------------------------------- compiled decode


def compiled_decode(engine: LoGoEngine, prompts: Sequence[str], n: int, k: int, reps: int, batch: int, log) -> dict:
    """The compiled decode path (`engine.enable_compiled_decode`) against eager, and the compiled base.

    Measures: compile time; tok/s of the engine at k (eager and compiled) and of the base model
    compiled the same way (static cache, `CompileConfig`); compilations and added ms when the mixture
    changes (a new prompt, another k); a batch of `batch` rows with their own mixtures against batch 1.
    """
    from ..compiled import CompiledDecoder
    from ..generation import run_generate
    from .contenders import fixed_length

    dev, tok = engine.placement.device, engine.tokenizer
    kw = dict(k=k, max_new_tokens=n, min_new_tokens=n)
    eager = [engine.generate(p, **kw).timings["tokens_per_s"] for p in prompts[:1]]  # warm-up
    compile_s = engine.enable_compiled_decode(log)
    decoder: CompiledDecoder = engine.decoder.compiled
    enc = engine.encode([prompts[0]], n, dev)
    base_cfg = decoder.generation_config(fixed_length(tok, n))
    t0 = time.perf_counter()
    run_generate(engine.model, enc.inputs(), base_cfg)  # the base model compiled the same way
    base_compile_s = time.perf_counter() - t0

    def base_tps(p: str) -> float:
        e = engine.encode([p], n, dev)
        return n / seconds(lambda: run_generate(engine.model, e.inputs(), base_cfg), dev)

    def engine_tps(p: str, compiled: bool) -> float:
        saved, engine.decoder.compiled = engine.decoder.compiled, decoder if compiled else None
        try:
            return engine.generate(p, **kw).timings["tokens_per_s"]
        finally:
            engine.decoder.compiled = saved

    rows: dict[str, list[float]] = {"base compiled": [], "engine compiled": [], "engine eager": []}
    engine_tps(prompts[0], True)  # warm-up of the first mixture (its factors, the graph replay)
    before = decoder.compiles  # from here on, every routed prompt brings its own mixture
    for i in range(reps):
        p = prompts[i % len(prompts)]
        rows["base compiled"].append(base_tps(p))
        rows["engine compiled"].append(engine_tps(p, True))
        rows["engine eager"].append(engine_tps(p, False))
    # Switching mixtures: one prompt with one explicit mixture repeated, then with new mixtures (other
    # adapters, fewer of them): the same shapes, so the difference is the cost of a new mixture.
    names = engine.adapters
    mixtures = [{names[(j * k + i) % len(names)]: 1.0 / k for i in range(k)} for j in range(reps + 1)]
    mixtures.append(dict(list(mixtures[-1].items())[: max(1, k - 1)]))  # another k
    gen = dict(max_new_tokens=n, min_new_tokens=n)
    for name in {a for m in mixtures for a in m}:  # factors read once beforehand: a switch is not a first use
        engine.pool.factors(name)
    same = [seconds(lambda: engine.generate(prompts[0], mixtures[0], **gen), dev) for _ in range(reps + 1)][1:]
    switched = [seconds(lambda m=m: engine.generate(prompts[0], m, **gen), dev) for m in mixtures[1:]]
    out = {
        "k": k,
        "new_tokens": n,
        "compile_s": compile_s,
        "base_compile_s": base_compile_s,
        "eager_warmup_tps": eager[0],
        **{f"{name}_tps": med(v) for name, v in rows.items()},
        "compiled_vs_compiled_base": paired_ratio(rows["engine compiled"], rows["base compiled"]),
        "compiled_vs_eager": paired_ratio(rows["engine compiled"], rows["engine eager"]),
        "recompiles_on_switch": decoder.compiles - before,
        "switch_added_ms": 1000 * (med(switched) - med(same)),
        "mixtures_switched": len(switched),
        "samples": reps,
    }
    if batch > 1:
        out |= compiled_batch(engine, prompts, n, k, reps, batch)
    return out


def compiled_batch(engine: LoGoEngine, prompts: Sequence[str], n: int, k: int, reps: int, batch: int) -> dict:
    """The compiled path at batch `batch` (rows with their own mixtures) against batch 1: tokens/s."""
    dev = engine.placement.device
    kw = dict(k=k, max_new_tokens=n, min_new_tokens=n)
    rows = list(prompts[:batch])
    gens = engine.generate_batch(rows, **kw)  # warm-up
    big, one = [], []
    for i in range(reps):
        big.append(seconds(lambda: engine.generate_batch(rows, **kw), dev))
        one.append(seconds(lambda i=i: engine.generate(rows[i % batch], **kw), dev))
    return {
        "batch": batch,
        "batch_mixtures": len({tuple(g.routing.selected) for g in gens}),
        "batch_tps": batch * n / med(big),
        "batch1_tps": n / med(one),
        "batch_vs_batch1": med([(batch * n / a) / (n / b) for a, b in zip(big, one, strict=True)]),
        "batch_on_compiled_path": engine.decoder.compiled.accepts(engine.plan(rows, **kw)),
    }


def device_memory(device) -> tuple[int, int] | None:
    """(bytes allocated now, peak since the last reset) on a CUDA device; None elsewhere."""
    import torch

    if device.type != "cuda":
        return None
    sync(device)
    return torch.cuda.memory_allocated(device), torch.cuda.max_memory_allocated(device)
