"""CPU speed (issue #13): dtypes, and what reaches the app's target of 30 tokens/s on 2 cores.

- `dtype_table`: fp32 / bf16 / int8 engines: decode tok/s of the base and of a routed answer, and
  routing agreement with fp32 on the trained pool (adapters.yaml, its own tasks' test prompts) and
  on a synthetic pool.
- `app_speed`: candidate settings of the app's engine (shipped pool and defaults) against the
  target "the app's own tokens/s (`Generation.timings['tokens_per_s']`) for a 128-token answer,
  median of 3, >= 30, with routing identical to fp32": bf16 or int8 generation beside an fp32 probe
  (`base_model: {dtype, probe_dtype: fp32}`), folded or low-rank mixture, the compiled decode path,
  torch threads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..loading import decide_placement, load
from ..registry import BaseModelSpec, PoolConfig, load_config, with_overrides
from .common import PROMPTS, med, paired_ratio, torch_threads
from .synthetic import engine_for

DTYPES = ("fp32", "bf16", "int8")


class Models:
    """Base models loaded once per dtype (on the CPU) and shared by every engine that needs one."""

    def __init__(self) -> None:
        self._loaded: dict = {}

    def __call__(self, dtype: str):
        if dtype not in self._loaded:
            self._loaded[dtype] = load(BaseModelSpec(device="cpu", dtype=dtype))
        return self._loaded[dtype]

    def engine(self, cfg: PoolConfig, dtype: str, probe_dtype: str = "same", **engine):
        """An engine over the shared `dtype` model; with `probe_dtype`, the shared model of that dtype
        probes (what `load` builds for `base_model: {dtype, probe_dtype}`)."""
        spec = BaseModelSpec(device="cpu", dtype=dtype, probe_dtype=probe_dtype)
        place = decide_placement(spec)
        cfg = with_overrides(cfg, base_model=spec.model_dump(include={"device", "dtype", "probe_dtype"}))
        probe = self(place.probe_dtype).model if place.probe_dtype else None
        loaded = self(dtype)
        return engine_for(loaded.model, loaded.tokenizer, cfg, place, probe, **engine)


def trained_pool(path: Path, max_prompts: int = 64, min_adapters: int = 4) -> tuple[PoolConfig, list[str]] | None:
    """The repository's trained pool and test prompts of its tasks (4 each, spread over the tasks,
    at most `max_prompts`), or None while fewer than `min_adapters` adapters are on disk."""
    from ..errors import ConfigError
    from ..tasks import TASKS

    try:
        cfg = load_config(path)
    except ConfigError:  # absent, or being rewritten by the trainer right now
        return None
    cfg.adapters = [a for a in cfg.adapters if a.path and (cfg.adapter_dir(a) / "adapter_model.safetensors").is_file()]
    if len(cfg.adapters) < min_adapters:
        return None
    per_task = [[ex.prompt for ex in TASKS[a.name].examples("test", 4)] for a in cfg.adapters if a.name in TASKS]
    prompts = [p for row in zip(*per_task) for p in row][:max_prompts]  # round-robin over the tasks
    return cfg, prompts or list(PROMPTS[:max_prompts])


def agreement(ref: list, got: list) -> tuple[float, float]:
    """Share of prompts with the same selected set, and with the same first choice."""
    same_set = sum(set(a.selected) == set(b.selected) for a, b in zip(ref, got, strict=True)) / len(ref)
    same_top1 = sum(a.selected[0] == b.selected[0] for a, b in zip(ref, got, strict=True)) / len(ref)
    return same_set, same_top1


def dtype_table(
    models: Models, trained, synthetic: PoolConfig, synthetic_prompts, n: int, timed: int, log, dtypes=DTYPES
) -> list:
    """fp32 / bf16 / int8: decode tok/s (base, and routed at the pool's default k), routing agreement
    with fp32 on the trained pool (or the synthetic one when there is none) and on the synthetic pool."""
    cfg, prompts = trained if trained else (synthetic, list(synthetic_prompts))
    rows, routes, synth_routes, tps = [], {}, {}, {}
    engines = {d: models.engine(cfg, d) for d in dtypes}  # fp32 first: the reference
    for d, e in engines.items():
        routes[d] = (e.route_batch(prompts), e.route_batch(prompts, k=min(3, len(e.pool))))
        synth_routes[d] = models.engine(synthetic, d).route_batch(list(synthetic_prompts), k=3)
        e.generate(prompts[0], max_new_tokens=2)  # warm-up
        log(f"  dtype {d} ready")
    kw = dict(max_new_tokens=n, min_new_tokens=n)
    for d in engines:
        tps[d] = ([], [])
    for p in prompts[:timed]:
        for d, e in engines.items():
            tps[d][0].append(e.generate(p, adapters={}, **kw).timings["tokens_per_s"])
            tps[d][1].append(e.generate(p, **kw).timings["tokens_per_s"])
    for d in engines:
        (top_k, top1), (top3, _) = (
            agreement(routes["fp32"][0], routes[d][0]),
            agreement(routes["fp32"][1], routes[d][1]),
        )
        s3, s1 = agreement(synth_routes["fp32"], synth_routes[d])
        rows.append(
            {
                "dtype": d,
                "base_tps": med(tps[d][0]),
                "base_vs_fp32": paired_ratio(tps[d][0], tps["fp32"][0]),
                "routed_tps": med(tps[d][1]),
                "routed_vs_fp32": paired_ratio(tps[d][1], tps["fp32"][1]),
                "same_top1": top1,
                "same_selection": top_k,
                "same_top3": top3,
                "synthetic_same_top3": s3,
                "synthetic_same_top1": s1,
                "pool": "trained" if trained else "synthetic",
                "pool_size": len(engines[d].pool),
                "k": engines[d].defaults.k,
                "prompts": len(prompts),
            }
        )
    return rows


@dataclass(frozen=True)
class Candidate:
    """One setting of the app's engine: base_model dtype / probe_dtype, engine settings, threads, compiled."""

    dtype: str = "fp32"
    probe_dtype: str = "same"
    engine: dict = field(default_factory=dict)
    threads: int | None = None  # None: the run's own
    compiled: bool = False


CANDIDATES = {
    "fp32, fold (default)": Candidate(),
    "fp32, low-rank": Candidate(engine={"mixture": "lowrank"}),
    "fp32, fold, 1 thread": Candidate(threads=1),
    "bf16 + fp32 probe, fold": Candidate("bf16", "fp32"),
    "bf16 + fp32 probe, low-rank": Candidate("bf16", "fp32", {"mixture": "lowrank"}),
    "int8 + fp32 probe (low-rank)": Candidate("int8", "fp32"),
    "fp32, compiled": Candidate(compiled=True),
    "bf16 + fp32 probe, compiled": Candidate("bf16", "fp32", compiled=True),
}


def app_speed(
    models: Models, cfg: PoolConfig, prompts: list[str], candidates: dict, n: int, rounds: int, log, route_prompts=None
) -> list:
    """Each candidate's app tokens/s for an n-token answer (median over `rounds` prompts, interleaved)
    and whether it routes every one of `route_prompts` (default: `prompts`) exactly as the first
    candidate (fp32, the default) does."""
    route_prompts = route_prompts or prompts
    engines, compile_s = {}, {}
    for name, c in candidates.items():
        engine = dict(c.engine)
        if c.compiled:  # a static cache for a prompt and its answer, one batch bucket, buffers of the app's k
            engine |= {"batch_buckets": [1], "max_prompt_tokens": 256, "max_mixture_rank": mixture_rank(cfg)}
        e = models.engine(with_overrides(cfg, defaults={"max_new_tokens": n}), c.dtype, c.probe_dtype, **engine)
        if c.compiled:
            t0 = time.perf_counter()
            e.enable_compiled_decode(log=lambda msg, name=name: log(f"  {name}: {msg}"))
            compile_s[name] = time.perf_counter() - t0
        e.generate(prompts[0], max_new_tokens=4)  # warm-up
        engines[name] = e
        log(f"  candidate {name!r} ready")
    ref = next(iter(engines.values())).route_batch(route_prompts)
    tps: dict[str, list[float]] = {name: [] for name in engines}
    for i in range(rounds):
        prompt = prompts[i % len(prompts)]
        for name, e in engines.items():
            with torch_threads(candidates[name].threads):
                tps[name].append(_app_tps(e, prompt, n))
        log(f"  app speed round {i + 1}/{rounds} done")
    first = next(iter(engines))
    return [
        {
            "candidate": name,
            "tps": med(tps[name]),
            "vs_default": paired_ratio(tps[name], tps[first]),
            "routing_identical": all(
                a.selected == b.selected for a, b in zip(ref, e.route_batch(route_prompts), strict=True)
            ),
            "compile_s": compile_s.get(name),
            "mixture_rank": e.decoder.compiled.max_rank if e.decoder.compiled else None,
            "threads": candidates[name].threads or torch.get_num_threads(),
            "samples": len(tps[name]),
            "routed_prompts": len(route_prompts),
            "on_compiled_path": e.decoder.compiled.accepts(e.plan([prompts[0]], max_new_tokens=n))
            if e.decoder.compiled
            else None,
        }
        for name, e in engines.items()
    ]


def mixture_rank(cfg: PoolConfig) -> int:
    """The largest mixture rank a request at the pool's default k can have: k x the largest adapter rank."""
    import json

    ranks = [json.loads((cfg.adapter_dir(a) / "adapter_config.json").read_text())["r"] for a in cfg.adapters]
    return cfg.defaults.k * max(ranks)


def _app_tps(engine, prompt: str, n: int) -> float:
    return engine.generate(prompt, max_new_tokens=n, min_new_tokens=n).timings["tokens_per_s"]
