"""Which pool to ship, chosen on dev by what a visitor sees: the shipped pool against a retrained one.

Longer training raised the adapters' own scores but lowered how well LoGo tells them apart (docs/pool.md), so
neither the oracle nor routing alone decides. On dev prompts (template and people-style) of the tasks both pools
have, each pool routes among those adapters with the shipped routing setting (the lab's arithmetic: same probe
vectors, the same unlabelled background), answers with its top-1 adapter alone (greedy, PEFT), and is scored:
own top-1, LoGo k=1's task score and the oracle's (each prompt's own adapter), paired over the same prompts with
95% bootstrap intervals. Test prompts are never read. Run it before `make pool-ship`, which replaces the shipped
pool with the retrained one.

    python scripts/compare_pools.py --pool assets/pool_next [--n 10] [--out docs/lab/pools.md]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from logo_core import lab as L  # noqa: E402
from logo_core.intervals import bootstrap, fmt, paired  # noqa: E402
from logo_core.tasks.check import generate  # noqa: E402

CROSS = "LoGo k=1 task score, routed by the shipped pool"


def pool_config(cfg, pool: Path):
    """`cfg` with the finished adapters of a pool folder in place of its own (name, family and description from
    the task suite)."""
    from logo_core.registry import AdapterSpec
    from logo_core.tasks import adapter_tasks

    done = [t for t in adapter_tasks() if (pool / t.name / "adapter_model.safetensors").is_file()]
    specs = [AdapterSpec(name=t.name, path=str((pool / t.name).resolve()), family=t.family) for t in done]
    return cfg.model_copy(update={"adapters": specs})


def shared_pools(config: str, pool: str, tasks: list[str] | None = None) -> tuple[object, dict, list[str]]:
    """(the shipped config, {"shipped", "retrained"} configs holding only the adapters of the tasks both pools have,
    in one order, those task names); `tasks` narrows them."""
    from logo_core.registry import load_config

    shipped = load_config(config)
    pools = {"shipped": shipped, "retrained": pool_config(shipped, Path(pool))}
    both = [a.name for a in pools["retrained"].adapters if a.name in {b.name for b in shipped.adapters}]
    if tasks:
        both = [t for t in both if t in tasks]
    for name, cfg in pools.items():
        by = {a.name: a for a in cfg.adapters}
        pools[name] = cfg.model_copy(update={"adapters": [by[t] for t in both]})
    return shipped, pools, both


def dev_prompts(shipped, n: int) -> list[L.Prompt]:
    """Every task's dev and people_dev prompts (only the shared tasks' are scored: one probe vector cache as more
    adapters finish), then the pool's background and neutral prompts."""
    prompts = [q for split, seed in (("dev", 5), ("people_dev", 5)) for q in L.split_prompts(split, n, seed=seed)]
    prompts += [L.Prompt(t, "", "", False, "background") for t in L.background_prompts(shipped)]
    prompts += [L.Prompt(t, "", "", False, "neutral") for t in shipped.neutral_prompts]
    return prompts


def route(cfg, loaded, prompts: list[L.Prompt], vectors, st, both: list[str], cache: Path) -> dict[str, list[str]]:
    """{split: the top-1 task of each dev and people_dev prompt of the `both` tasks, in prompt order}, routed among
    `cfg`'s adapters with setting `st` as the router does (the lab's arithmetic; the token evidence of this pool's own
    adapters, since the default reads it)."""
    lab = L.Lab(prompts, vectors, L.pool_factors(cfg, loaded.model), None, L.token_source(cfg, loaded, prompts, cache))
    out = {}
    for split in ("dev", "people_dev"):
        idx = torch.tensor([i for i in lab.index[split].tolist() if prompts[i].task in both], dtype=torch.long)
        out[split] = [both[j] for j in lab.scores(st, idx).argmax(-1).tolist()]
    return out


def answers(base, tok, jobs: list[tuple[str, str, int]], adapter_dir, cache: dict) -> list[str]:
    """Greedy answers to (prompt, adapter name, max new tokens) jobs, each with its adapter alone (PEFT).

    Answers are cached by (adapter weights' digest, prompt, max tokens): a job LoGo routes to the prompt's own
    adapter is the oracle's job, and a rerun with more finished adapters generates only what is new.
    """
    from peft import PeftModel

    from logo_core.tasks.check import _digest

    digests = {name: _digest(str(adapter_dir(name))) for name in {j[1] for j in jobs}}
    keys = [f"{digests[name]}|{n}|{text}" for text, name, n in jobs]
    by_adapter: dict[str, list[int]] = {}
    for i, (_, name, _) in enumerate(jobs):
        if keys[i] not in cache:
            by_adapter.setdefault(name, []).append(i)
    for name, idx in by_adapter.items():
        model = PeftModel.from_pretrained(base, str(adapter_dir(name))).eval()
        n = max(jobs[i][2] for i in idx)
        for i, text in zip(idx, generate(model, tok, [jobs[i][0] for i in idx], n)):
            cache[keys[i]] = text
        base = model.unload()  # the clean base model back for the next adapter
    return [cache[k] for k in keys]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "adapters.yaml"), help="the shipped pool")
    p.add_argument("--pool", default=str(ROOT / "assets" / "pool_next"), help="the retrained pool's folder")
    p.add_argument("--n", type=int, default=10, help="dev prompts a task, of each kind")
    p.add_argument("--tasks", default=None, help="comma-separated tasks (default: every task both pools have)")
    p.add_argument("--cache", default=str(ROOT / "runs" / "lab"))
    p.add_argument("--out", default=str(ROOT / "docs" / "lab" / "pools.md"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    from logo_core.eval import max_tokens
    from logo_core.loading import load, load_base
    from logo_core.tasks import TASKS

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    shipped, pools, both = shared_pools(args.config, args.pool, args.tasks.split(",") if args.tasks else None)
    prompts = dev_prompts(shipped, args.n)
    loaded = load(shipped.base_model)
    vectors = L.cached_vectors(shipped, loaded, prompts, Path(args.cache))
    st = L.library_setting(shipped.defaults)
    base, tok = load_base()
    refs = {}
    for t in both:
        for split, seed in (("dev", 5), ("people_dev", 5)):
            refs.update({ex.prompt: ex for ex in TASKS[t].examples(split, args.n, seed=seed)})
    cache_file = Path(args.cache) / "compare_pools_answers.json"
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    hits: dict[tuple, torch.Tensor] = {}
    tops: dict[tuple, list[str]] = {}
    for name, cfg in pools.items():  # routing first: the cross condition answers with one pool what the other chose
        for split, chosen in route(cfg, loaded, prompts, vectors, st, both, Path(args.cache)).items():
            tops[name, split] = chosen
            rows = [q for q in prompts if q.split == split and q.task in both]
            hits[name, split, "own top-1"] = torch.tensor([float(t == q.task) for t, q in zip(chosen, rows)])
    for name, cfg in pools.items():
        dirs = {a.name: cfg.adapter_dir(a) for a in cfg.adapters}
        for split in ("dev", "people_dev"):
            rows = [q for q in prompts if q.split == split and q.task in both]
            conds = [("LoGo k=1 task score", tops[name, split]), ("oracle task score", [q.task for q in rows])]
            if name == "retrained":
                conds.append((CROSS, tops["shipped", split]))
            for cond, chosen in conds:
                jobs = [(q.text, c, max_tokens([refs[q.text]], tok)) for q, c in zip(rows, chosen)]
                texts = answers(base, tok, jobs, dirs.__getitem__, cache)
                cache_file.write_text(json.dumps(cache))
                got = [TASKS[q.task].score(a, refs[q.text].answer) / 100 for q, a in zip(rows, texts)]
                hits[name, split, cond] = torch.tensor(got)
            print(
                f"{name} {split}: "
                + ", ".join(f"{k[2]} {100 * v.mean():.1f}" for k, v in hits.items() if k[:2] == (name, split)),
                flush=True,
            )
    lines = [
        "# The shipped pool against the retrained one, on dev (which pool to ship)",
        "",
        f"{len(both)} tasks that both pools have, {args.n} dev prompts a task of each kind; routing setting "
        f"`{st.name}` (adapters.yaml); 95% bootstrap intervals, differences paired over the same prompts. "
        f"`python scripts/compare_pools.py --pool {args.pool} --n {args.n}` ({time.perf_counter() - t0:.0f} s).",
        "",
        "| prompts | figure | shipped | retrained | retrained - shipped |",
        "|---|---|---:|---:|---:|",
    ]
    for split in ("dev", "people_dev"):
        for fig in ("own top-1", "LoGo k=1 task score", "oracle task score"):
            a, b = hits["shipped", split, fig], hits["retrained", split, fig]
            lines.append(f"| {split} | {fig} | {fmt(bootstrap(a))} | {fmt(bootstrap(b))} | {fmt(paired(b, a))} |")
        a, b = hits["shipped", split, "LoGo k=1 task score"], hits["retrained", split, CROSS]
        lines.append(f"| {split} | {CROSS} | {fmt(bootstrap(a))} | {fmt(bootstrap(b))} | {fmt(paired(b, a))} |")
    lines += [
        "",
        f"*{CROSS}*: each prompt routed by the shipped pool's adapters (its LoGo k=1 choice) and answered by the "
        "retrained adapter of the task chosen: what the retrained pool would score if it routed as well as the "
        "shipped one (label-free: an adapter's earlier weights as its routing key), against the shipped pool's "
        "LoGo k=1.",
    ]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    Path(args.out).with_suffix(".json").write_text(
        json.dumps({"tasks": both, "n": args.n, "per_prompt": {" / ".join(k): v.tolist() for k, v in hits.items()}})
        + "\n"
    )
    print(text)


if __name__ == "__main__":
    main()
