"""The CPU run: `python -m logo_core.bench` (the full run, ~25 min on 2 cores) or `--quick` (the test's).

SmolLM2-135M-Instruct (the embedded model, real weights) in fp32 on the CPU; synthetic adapters
(rank 8, q/v) so the pool reaches N = 256, routing at the paper's setting unless said otherwise;
the trained pool of adapters.yaml for routing agreement and the app's own speed. Writes bench.json
(every figure), bench.md (the tables) and the amortisation figure (png, html) to `out`.
"""

from __future__ import annotations

import gc
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..loading import load_base
from ..registry import BaseModelSpec
from . import measure, speed
from .common import PROMPTS, Load, machine, torch_threads
from .contenders import Base, Engine, PeftMerge, Reference, load_peft
from .memory import memory, trained_pools
from .synthetic import ROUTINGS, engine_for, pool_config, write_adapters


@dataclass(frozen=True)
class Settings:
    """What one CPU run measures; `FULL` is the issues' spec, `QUICK` a smoke run for the test."""

    n_pool: int  # pool of the end-to-end comparison (the reference loads all of it into PEFT)
    ks: tuple[int, ...]  # our engine, folded mixture (the CPU default)
    lowrank_ks: tuple[int, ...]  # our engine, low-rank mixture
    peer_ks: tuple[int, ...]  # reference-style and PEFT merge
    lengths: tuple[int, int]  # short and long answer, new tokens (the short one read off the long one's clock)
    e2e_prompts: int
    reps: int
    pool_sizes: tuple[int, ...]  # routing cost as the pool grows (ratio to the first)
    route_reps: int
    batch: int  # batched routing: prompts in one call
    memory_pools: tuple[int, ...]
    dtype_tokens: int
    dtype_timed: int  # prompts timed per dtype
    app_tokens: int  # the app's answer length for the tokens/s target
    app_rounds: int
    compiled: bool  # the compiled candidates (minutes of compilation on a CPU)
    memory_extras: bool  # also k = max(ks) and the reference in the memory table
    agreement_prompts: int = 64  # at most this many prompts for routing agreement (dtype, candidates)
    dtypes: tuple[str, ...] = ("fp32", "bf16", "int8")
    candidates: tuple[str, ...] = tuple(speed.CANDIDATES)  # of the app's 30 tokens/s
    memory_routings: tuple[str, ...] = tuple(ROUTINGS)
    trained_pool: str | None = "adapters.yaml"
    trained_sizes: tuple[int, ...] = (10, 0)  # the trained pool cut to its first n adapters (0: all of it)


FULL = Settings(
    n_pool=32,
    ks=(1, 3, 20),
    lowrank_ks=(3, 20),
    peer_ks=(3, 20),
    lengths=(16, 128),
    e2e_prompts=4,
    reps=1,
    pool_sizes=(8, 64, 256),
    route_reps=5,
    batch=32,
    memory_pools=(8, 256),
    dtype_tokens=32,
    dtype_timed=3,
    app_tokens=128,
    app_rounds=3,
    compiled=True,
    memory_extras=True,
)
QUICK = Settings(
    n_pool=8,
    ks=(3, 8),
    lowrank_ks=(3,),
    peer_ks=(3,),
    lengths=(4, 8),
    e2e_prompts=1,
    reps=1,
    pool_sizes=(4, 16),
    route_reps=1,
    batch=4,
    memory_pools=(4, 16),
    dtype_tokens=4,
    dtype_timed=1,
    app_tokens=8,
    app_rounds=1,
    memory_extras=False,
    agreement_prompts=4,
    dtypes=("fp32", "bf16"),
    compiled=False,
    candidates=("fp32, fold (default)", "bf16 + fp32 probe, fold"),
    memory_routings=(list(ROUTINGS)[1],),
    trained_sizes=(2, 4),
)


def contenders(model, tok, root: Path, adapters: dict, s: Settings) -> list:
    """base, the engine (no mixture; folded at each k; low-rank), the reference and PEFT merge."""
    cfg = pool_config(adapters, root)
    fold = engine_for(model, tok, cfg, mixture="fold")
    lowrank = engine_for(model, tok, cfg, pool=fold.pool, mixture="lowrank")
    peft_ref, peft_merge = load_peft(model, adapters), load_peft(model, adapters)
    out = [Base(model, fold), Engine(fold, 0)] + [Engine(fold, k) for k in s.ks if k <= s.n_pool]
    out += [Engine(lowrank, k, f"engine k={k}, low-rank") for k in s.lowrank_ks if k <= s.n_pool]
    out += [Reference(peft_ref, fold, k) for k in s.peer_ks] + [PeftMerge(peft_merge, fold, k) for k in s.peer_ks]
    return out


def memory_configs(adapters: dict, s: Settings) -> dict[str, dict]:
    """Base alone, then per routing the engine at each pool size (smallest first), then extras."""

    def first(n: int) -> dict:
        return dict(list(adapters.items())[:n])

    configs = {"base alone": {"kind": "base", "adapters": {}, "k": 0}}
    for label in s.memory_routings:
        how = ROUTINGS[label]
        for n in s.memory_pools:
            configs[f"engine N={n}, {label}"] = {
                "kind": "engine",
                "adapters": first(n),
                "k": 3,
                "route": how,
                "routing": label,
            }
    if s.memory_extras:
        big, (label, how) = s.memory_pools[-1], next(iter(ROUTINGS.items()))
        configs[f"engine N={big}, {label}, k={s.ks[-1]}"] = {
            "kind": "engine",
            "adapters": first(big),
            "k": s.ks[-1],
            "route": how,
            "routing": f"{label}, k={s.ks[-1]}",
        }
        configs[f"reference N={s.n_pool}"] = {"kind": "reference", "adapters": first(s.n_pool), "k": 3}
    return configs


def run(s: Settings, out: Path, mode: str, log=print, threads: int | None = None) -> dict:
    """Every CPU figure in one run; writes bench.json, bench.md, readme.md (the README's part) and the
    amortisation figure to `out`.

    Args:
        s: what to measure (`FULL` or `QUICK`).
        mode: a label for the report.
        threads: torch intra-op threads for this run (restored after); None keeps torch's default.
    """
    with torch_threads(threads):
        return _run(s, out, mode, log)


def _run(s: Settings, out: Path, mode: str, log) -> dict:
    from .report import cpu_markdown, readme_markdown, targets, write_amortisation

    load = Load()
    res: dict = {"settings": asdict(s)}
    with tempfile.TemporaryDirectory(prefix="logo-bench-") as tmp:
        root = Path(tmp)
        model, tok = load_base(BaseModelSpec(device="cpu", dtype="fp32"))
        n_all = max(s.n_pool, *s.pool_sizes, *s.memory_pools)
        t0 = time.perf_counter()
        adapters = write_adapters(model, root / "adapters", n_all)
        log(f"wrote {n_all} synthetic adapters in {time.perf_counter() - t0:.1f} s")
        pool = dict(list(adapters.items())[: s.n_pool])
        log("end to end ...")
        cs = contenders(model, tok, root, pool, s)
        res["e2e"] = measure.e2e(cs, PROMPTS[: s.e2e_prompts], s.lengths, s.reps, log)
        engine = cs[1].engine
        del cs
        gc.collect()
        log("routing cost against pool size ...")
        route_prompts = PROMPTS[: min(4, s.batch)]
        res["probe_vs_n"] = measure.routing_vs_n(model, tok, root, s.pool_sizes, route_prompts, s.route_reps, log)
        log("batched routing ...")
        res["batched"] = measure.batched_routing(engine, PROMPTS[: s.batch], max(2, s.route_reps))
        del engine
        gc.collect()
        log("dtypes ...")
        models = speed.Models()
        trained = speed.trained_pool(Path(s.trained_pool), s.agreement_prompts) if s.trained_pool else None
        log(f"  trained pool: {len(trained[0].adapters) if trained else 'none yet'} adapters")
        synthetic = pool_config(pool, root)
        res["dtype"] = speed.dtype_table(
            models, trained, synthetic, PROMPTS[: s.agreement_prompts], s.dtype_tokens, s.dtype_timed, log, s.dtypes
        )
        log("the app's tokens/s: candidates ...")
        app_cfg, app_prompts = trained if trained else (synthetic, PROMPTS[: s.agreement_prompts])
        candidates = {n: speed.CANDIDATES[n] for n in s.candidates if s.compiled or not speed.CANDIDATES[n].compiled}
        timed = app_prompts[:: max(1, len(app_prompts) // 8)]  # a few tasks' prompts, not one task's
        res["app_speed"] = speed.app_speed(
            models, app_cfg, timed, candidates, s.app_tokens, s.app_rounds, log, route_prompts=app_prompts
        )
        del models
        gc.collect()
        log("memory (one subprocess per configuration) ...")
        res["memory"] = memory(memory_configs(adapters, s), root, log, requests=4 if s.memory_extras else 1)
        if s.trained_pool and trained:
            log("the trained pool at two sizes (start-up, routing, memory) ...")
            res["trained_pools"] = trained_pools(
                Path(s.trained_pool), s.trained_sizes, root, log, prompts=24 if s.memory_extras else 2
            )
    res["meta"] = {"mode": mode, **machine(), **load.finish()}
    res["targets"] = targets(res, s)
    out.mkdir(parents=True, exist_ok=True)
    big = max(k for k in s.ks if k <= s.n_pool)
    keep = ["base", "engine k=3", f"engine k={big}", "reference k=3", f"reference k={s.peer_ks[-1]}"]
    res["amortisation_png_error"] = write_amortisation(res["e2e"]["ms_per_token"], out, keep)
    (out / "bench.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    (out / "bench.md").write_text(cpu_markdown(res, s))
    (out / "readme.md").write_text(readme_markdown(res, s))
    return res
