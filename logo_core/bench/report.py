"""Markdown reports of the benchmark's JSON: `cpu_markdown` (bench.md), `device_markdown` (gpu.md),
the targets of issues #5 and #13 (`targets`) and the amortisation figure's files."""

from __future__ import annotations

import math
from pathlib import Path

from .common import paired_ratio
from .synthetic import ALPHA, RANK, ROUTINGS, TARGETS


def fmt(x, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "**no**"
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.{digits}f}"
    return str(x)


def md_table(rows: list[dict], cols: list[tuple[str, str]], digits: int = 2) -> str:
    head = "| " + " | ".join(title for _, title in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(fmt(r.get(key), digits) for key, _ in cols) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def write_amortisation(curves: dict, out: Path, keep: list[str]) -> str | None:
    """amortisation.html and .png (kaleido needs a Chromium; the HTML is written regardless)."""
    from ..plots import amortisation

    fig = amortisation(curves, keep)
    fig.write_html(out / "amortisation.html", include_plotlyjs="cdn")
    try:
        fig.write_image(out / "amortisation.png", scale=2)
    except Exception as e:  # no Chromium for kaleido: say so in the JSON
        return f"PNG export failed: {e}"
    return None


def header(m: dict) -> str:
    gpu = f" · {m['gpu']} · CUDA {m['cuda']}" if m.get("gpu") else ""
    return (
        f"{m['when']} · {m['cpu']}{gpu} · {m['threads']} torch threads · torch {m['torch']} · transformers "
        f"{m['transformers']} · peft {m['peft']} · {m['wall_s']:.0f} s. Machine quiet: {fmt(m['cpu_free'])} "
        f"(training job running at start/end: {m['training_at_start']}/{m['training_at_end']}; other processes kept "
        f"{m['others_cores']:.2f} cores busy on average; load average {m['load_start']:.1f} -> {m['load_end']:.1f})."
    )


# --------------------------------------------------------------------------- targets


def targets(res: dict, s) -> list[dict]:
    """The issues' targets (#5, #13), measured value against threshold."""
    rows = {r["contender"]: r for r in res["e2e"]["rows"]}
    short, long_ = s.lengths
    k_big = max(k for k in s.ks if k <= s.n_pool)
    (paper, multi), big = list(ROUTINGS), s.memory_pools[-1]
    route = {(r["routing"], r["n"]): r for r in res["probe_vs_n"]}
    n0, n1 = s.pool_sizes[0], s.pool_sizes[-1]
    mem = {m["config"]: m for m in res["memory"]}
    app = [r for r in res["app_speed"] if r["routing_identical"]]
    best = max(app, key=lambda r: r["tps"]) if app else {"tps": float("nan"), "candidate": "none"}
    raw = res["e2e"]["raw"][str(long_)]
    paper_big = mem.get(f"engine N={big}, {paper}", {}).get("over_base_mb")
    multi_big = mem.get(f"engine N={big}, {multi}", {}).get("over_smallest_pool_mb")
    out = [
        ("#13", "decode tok/s, k=3 folded (the CPU default) / base", rows["engine k=3"]["decode_ratio"], ">=", 0.97),
        ("#13", f"decode tok/s, k={k_big} folded / base", rows[f"engine k={k_big}"]["decode_ratio"], ">=", 0.97),
        (
            "#5",
            f"route + {long_} tokens, k=3 / base generating {long_}",
            rows["engine k=3"][f"e2e_{long_}_ratio"],
            "<=",
            1.15,
        ),
        (
            "#13",
            f"route + {short} tokens (a short answer), k=3 / base",
            rows["engine k=3"][f"e2e_{short}_ratio"],
            "<=",
            1.25,
        ),
        (
            "#5",
            f"reference / engine, end to end ({long_} tokens), k={s.peer_ks[-1]}",
            paired_ratio(raw[f"reference k={s.peer_ks[-1]}"], raw[f"engine k={s.peer_ks[-1]}"]),
            ">=",
            1.5,
        ),
        ("#5", f"routing N={n1} / N={n0}, {paper}", route[(paper, n1)]["ratio"], "<=", 1.5),
        ("#5", f"routing N={n1} / N={n0}, {multi}", route[(multi, n1)]["ratio"], "<=", 1.5),
        (
            "#5",
            f"batched routing of {res['batched']['prompts']} prompts, speedup",
            res["batched"]["speedup"],
            ">=",
            4.0,
        ),
        ("#5", f"resident MB added by N={big} adapters, {paper}", paper_big, "<=", 150.0),
        ("#13", f"resident MB, N={big} over N={s.memory_pools[0]}, {multi}", multi_big, "<=", 100.0),
        (
            "#13",
            f"app tokens/s, {s.app_tokens}-token answer, routing = fp32 (best: {best['candidate']})",
            best["tps"],
            ">=",
            30.0,
        ),
    ]
    return [
        {
            "issue": i,
            "target": t,
            "measured": v,
            "op": op,
            "threshold": th,
            "met": _met(v, op, th),
        }
        for i, t, v, op, th in out
    ]


def _met(value, op: str, threshold: float) -> bool | None:
    """Whether a measured value meets its target; None when this run did not measure it."""
    if value is None or value != value:
        return None
    return bool(value >= threshold if op == ">=" else value <= threshold)


# --------------------------------------------------------------------------- bench.md


def targets_table(res: dict) -> str:
    """The issues' targets, measured against threshold (bench.md and the README's short version)."""
    return md_table(
        res["targets"],
        [
            ("issue", "issue"),
            ("target", "target"),
            ("measured", "measured"),
            ("op", ""),
            ("threshold", "target"),
            ("met", "met"),
        ],
    )


def trained_pool_section(res: dict) -> list[str]:
    """The shipped pool at the old pool's size (its first 10 adapters) and whole, each in a fresh process."""
    if not res.get("trained_pools"):
        return []
    return [
        "## The trained pool as it grows (adapters.yaml cut to its first N adapters, shipped defaults)",
        "",
        md_table(
            res["trained_pools"],
            [
                ("n", "N"),
                ("load_s", "start-up s (from_config)"),
                ("load_s_ratio", "x"),
                ("route_ms", "route ms (warm, median)"),
                ("route_ms_ratio", "x"),
                ("rss_mb", "RSS MB"),
                ("rss_mb_ratio", "x"),
                ("stacks_mb", "probe stacks MB"),
            ],
        ),
        "",
        "Start-up is `LoGoEngine.from_config` (model, adapters, calibration, warm-up) in a fresh process with the "
        "model already converted; routing is the median over the pool's own example prompts.",
        "",
    ]


def cpu_markdown(res: dict, s) -> str:
    short, long_ = s.lengths
    m, d0, app = res["meta"], res["dtype"][0], res["app_speed"]
    parts = [
        "# LoGo benchmark on the CPU (issues #5, #13)",
        "",
        f"{header(m)} Mode `{m['mode']}`.",
        "",
        f"SmolLM2-135M-Instruct fp32 (real weights), greedy, exactly {long_} new tokens (the {short}-token answer is "
        f"read off the same request's per-token clock, plus its end-of-request cost); synthetic adapters (rank {RANK}, "
        f"alpha {ALPHA}, {'+'.join(TARGETS)}, random); end-to-end pool N = {s.n_pool}, routed at the paper's setting "
        f"(raw norm, last block, q_proj); {s.e2e_prompts} prompt(s) x {s.reps} round(s), interleaved; medians; ratios are "
        "medians of paired ratios against the base model in the same round; decode tok/s = 1 / the median time "
        "between two tokens. Reproduce: `python -m logo_core.bench` (`--quick` for the smoke run).",
        "",
        "## End to end, per request",
        "",
        md_table(
            res["e2e"]["rows"],
            [
                ("contender", "contender"),
                ("setup_ms", "route+mix ms"),
                ("first_token_ms", "first token ms"),
                (f"e2e_{short}_s", f"{short} tok s"),
                (f"e2e_{short}_ratio", "x base"),
                (f"e2e_{long_}_s", f"{long_} tok s"),
                (f"e2e_{long_}_ratio", "x base"),
                ("decode_tps", "decode tok/s"),
                ("decode_ratio", "x base"),
            ],
        ),
        "",
        "`engine k=...` folds the mixture into private copies of the adapted weights (`engine: {mixture: auto}` on a "
        "CPU; the copy is made before the prefill, inside the first-token time); `low-rank` keeps one low-rank pair "
        "per adapted module beside the shared weights. `engine, no adapters` is an explicit empty mixture. The "
        "reference probes with the previous request's adapters active, as the authors' code does; PEFT merge probes "
        "the clean base.",
        "",
        "## Routing cost as the pool grows (engine.route, k = 3, warm)",
        "",
        md_table(
            res["probe_vs_n"],
            [
                ("routing", "probe at"),
                ("n", "N"),
                ("route_ms", "route ms"),
                ("ratio", "x smallest N"),
                ("first_route_s", "first route s (stacks)"),
                ("load_s", "pool load s"),
            ],
        ),
        "",
        "## Batched routing",
        "",
        md_table(
            [res["batched"]],
            [
                ("prompts", "prompts"),
                ("one_call_s", "route_batch s"),
                ("separate_calls_s", "separate calls s"),
                ("speedup", "speedup"),
                ("same_selection", "same selection"),
            ],
        ),
        "",
        *trained_pool_section(res),
        "## Resident memory (psutil RSS, one subprocess per configuration, after a few requests)",
        "",
        md_table(
            res["memory"],
            [
                ("config", "configuration"),
                ("k", "k"),
                ("rss_mb", "RSS MB"),
                ("over_base_mb", "over base alone MB"),
                ("over_smallest_pool_mb", "over the smallest pool MB"),
                ("stacks_mb", "probe stacks MB"),
                ("factor_cache_mb", "factor cache MB"),
            ],
            0,
        ),
        "",
        "The engine's fixed cost (libraries it imports, calibration, the private weight copies of a folded request) "
        "shows in the smallest pool; the difference to it, same routing, is what the extra adapters cost. Probe "
        "stacks are kept in the adapters' dtype (fp16).",
        "",
        f"## dtype ({d0['pool']} pool of {d0['pool_size']} adapters, its defaults (k = {d0['k']}); {s.dtype_tokens} new "
        f"tokens; routing agreement with fp32 on {d0['prompts']} prompts)",
        "",
        md_table(
            res["dtype"],
            [
                ("dtype", "dtype"),
                ("base_tps", "base tok/s"),
                ("base_vs_fp32", "x fp32"),
                ("routed_tps", "routed tok/s"),
                ("routed_vs_fp32", "x fp32"),
                ("same_top1", "same choice"),
                ("same_top3", "same top-3"),
                ("synthetic_same_top1", "same top-1 (synthetic)"),
                ("synthetic_same_top3", "same top-3 (synthetic)"),
            ],
        ),
        "",
        "tok/s here is the app's own figure (`timings['tokens_per_s']`: new tokens / prefill + decode). Synthetic random "
        "adapters score close together, so small numeric changes reorder them more easily than trained ones.",
        "",
        f"## The app's tokens/s: candidates for >= 30 on {m['cpu'].split(',')[-1].strip()} ({s.app_tokens}-token answer, "
        f"median of {s.app_rounds}, interleaved; routing compared with fp32 on {app[0]['routed_prompts']} prompts)",
        "",
        md_table(
            app,
            [
                ("candidate", "candidate"),
                ("tps", "tokens/s"),
                ("vs_default", "x fp32 default"),
                ("routing_identical", "routing = fp32"),
                ("threads", "threads"),
                ("compile_s", "compile s"),
                ("on_compiled_path", "compiled path used"),
            ],
        ),
        "",
        "`+ fp32 probe` = `base_model: {dtype: bf16|int8, probe_dtype: fp32}`: generation in the low precision, routing "
        "on an fp32 copy (so it is fp32's). Compiled = `engine.enable_compiled_decode()` (static KV cache of "
        f"256 prompt + {s.app_tokens} answer tokens, one batch bucket, mixture buffers of the rank of the pool's "
        "default k); its compile time is paid once at start-up. int8 is left out of the compiled candidates: its "
        "dynamically quantised layers break the graph at every block and hit dynamo's recompile limit.",
        "",
        "## Targets",
        "",
        targets_table(res),
        "",
        "Amortisation curve: `amortisation.png` / `amortisation.html` (time per generated token, setup included, "
        "against tokens generated).",
        "",
    ]
    return "\n".join(parts)


def readme_markdown(res: dict, s) -> str:
    """The README's short version (scripts/update_readme.py copies it): targets, end to end, app speed."""
    short, long_ = s.lengths
    m = res["meta"]
    keep = {
        "base",
        "engine k=1",
        "engine k=3",
        f"engine k={s.ks[-1]}",
        f"engine k={s.ks[-1]}, low-rank",
        f"reference k={s.peer_ks[-1]}",
        f"peft merge k={s.peer_ks[-1]}",
    }
    return "\n".join(
        [
            "# LoGo benchmark",
            "",
            f"{header(m)} Full tables: [docs/bench/bench.md](docs/bench/bench.md); on a GPU: "
            "[docs/bench/gpu.md](docs/bench/gpu.md).",
            "",
            f"## End to end on the CPU (SmolLM2-135M fp32, N = {s.n_pool} synthetic adapters, {long_} new tokens)",
            "",
            md_table(
                [r for r in res["e2e"]["rows"] if r["contender"] in keep],
                [
                    ("contender", "contender"),
                    ("setup_ms", "route+mix ms"),
                    (f"e2e_{short}_ratio", f"{short} tok x base"),
                    (f"e2e_{long_}_ratio", f"{long_} tok x base"),
                    ("decode_ratio", "decode x base"),
                ],
            ),
            "",
            f"## The app's tokens/s ({s.app_tokens}-token answer, shipped pool and defaults)",
            "",
            md_table(
                res["app_speed"],
                [
                    ("candidate", "candidate"),
                    ("tps", "tokens/s"),
                    ("vs_default", "x default"),
                    ("routing_identical", "routing = fp32"),
                ],
            ),
            "",
            "## Targets",
            "",
            targets_table(res),
            "",
        ]
    )


# --------------------------------------------------------------------------- gpu.md


def device_markdown(runs: dict) -> str:
    """gpu.md: one part per (device, shape) of gpu.json."""
    parts = [
        "# LoGo benchmark on a device (issues #8.6, #14.4)",
        "",
        "Random weights of each model's shape (built on the device in the library's dtype there), SmolLM2's "
        f"tokenizer, random rank-{RANK} {'/'.join(TARGETS)} adapters: the timings depend on the shapes, the routing "
        "means nothing. Every ratio is the median of >= 5 interleaved repeats of one run. Reproduce: "
        "`python -m logo_core.bench --device cuda --shape llama-8b` (or `smollm2`; `--only SECTION,...` runs part of it "
        "and keeps the other sections of gpu.json).",
        "",
    ]
    for key, r in runs.items():
        parts += device_part(key, r)
    return "\n".join(parts)


# The device run's tables: result key -> (section title, [(field, column title)], digits), one row per
# result (a dict, or a list of them).
DEVICE_TABLES = {
    "first": (
        "First answer after load",
        [
            ("pool_load_s", "pool load s"),
            ("warm_up_s", "calibration s"),
            ("first_answer_s", "first answer s"),
            ("warm_answer_s", "same answer warm s"),
            ("first_after_load_s", "first answer after load s"),
            ("new_tokens", "new tokens"),
        ],
        2,
    ),
    "memory": (
        "Device memory added by the pool",
        [
            ("routing", "probe at"),
            ("n", "N"),
            ("k", "k"),
            ("stacks_mb", "probe stacks MB"),
            ("factor_cache_mb", "factor cache MB"),
            ("resident_added_mb", "resident added MB"),
            ("peak_added_mb", "peak over the base's peak MB"),
        ],
        1,
    ),
    "routing": (
        "Routing against pool size",
        [
            ("routing", "probe at"),
            ("n", "N"),
            ("route_ms", "route ms"),
            ("ratio", "x smallest N"),
            ("first_route_s", "first route s"),
            ("samples", "samples"),
        ],
        2,
    ),
    "batch": (
        "Batched generation (a mixture per row) against separate calls",
        [
            ("prompts", "prompts"),
            ("distinct_mixtures", "mixtures"),
            ("new_tokens", "new tokens"),
            ("batch_tps", "batch tok/s"),
            ("calls_tps", "calls tok/s"),
            ("speedup", "speedup"),
        ],
        2,
    ),
    "microbatch": (
        "Micro-batching: concurrent callers against one",
        [
            ("callers", "callers"),
            ("new_tokens", "new tokens"),
            ("many_tps", "tok/s, all callers"),
            ("one_tps", "tok/s, 1 caller"),
            ("throughput_ratio", "throughput x"),
            ("mean_rows_per_decode", "rows per decode"),
        ],
        2,
    ),
}
COMPILED_TABLES = [  # both of the "compiled" result: the path at batch 1, then a batch of mixtures
    [
        ("k", "k"),
        ("compile_s", "compile s"),
        ("base compiled_tps", "base compiled tok/s"),
        ("engine compiled_tps", "engine compiled tok/s"),
        ("engine eager_tps", "engine eager tok/s"),
        ("compiled_vs_compiled_base", "x compiled base"),
        ("compiled_vs_eager", "x eager"),
        ("recompiles_on_switch", "recompiles on new mixtures"),
        ("switch_added_ms", "added ms"),
    ],
    [
        ("batch", "batch"),
        ("batch_mixtures", "mixtures"),
        ("batch_tps", "batch tok/s"),
        ("batch1_tps", "batch 1 tok/s"),
        ("batch_vs_batch1", "throughput x"),
        ("batch_on_compiled_path", "compiled path"),
    ],
]


def device_part(key: str, r: dict) -> list[str]:
    m = r["meta"]
    k = m["k"]
    model = f"{m['shape']}: {m['dtype']} on {m['device']}, N = {m['pool']}, k = {k}; "
    parts = [
        f"## {key}",
        "",
        header(m),
        "",
        model + f"model built in {r['build_s']:.1f} s (random init, not a load).",
        "",
    ]

    def section(name: str) -> None:
        title, cols, digits = DEVICE_TABLES[name]
        rows = r[name] if isinstance(r[name], list) else [r[name]]
        parts.extend([f"### {title}", "", md_table(rows, cols, digits), ""])

    for name in ("first", "memory"):
        if name in r:
            section(name)
    if "e2e" in r:
        n = max(int(x) for x in r["e2e"]["raw"])
        raw = r["e2e"]["raw"][str(n)]
        ref = paired_ratio(raw[f"reference k={k}"], raw[f"engine k={k}"])
        cols = [
            ("contender", "contender"),
            ("setup_ms", "route+mix ms"),
            ("first_token_ms", "first token ms"),
            (f"e2e_{n}_s", f"{n} tok s"),
            (f"e2e_{n}_ratio", "x base"),
            ("decode_tps", "decode tok/s"),
            ("decode_ratio", "x base"),
        ]
        parts += [
            "### End to end",
            "",
            md_table(r["e2e"]["rows"], cols),
            "",
            f"Reference-style / ours, end to end ({n} tokens, k = {k}): **{fmt(ref)}**.",
            "",
        ]
    for name in ("routing", "batch", "microbatch"):
        if name in r:
            section(name)
    if "compiled" in r:
        parts += ["### Compiled decode path", ""]
        for cols in COMPILED_TABLES:
            parts += [md_table([r["compiled"]], cols), ""]
    return parts
