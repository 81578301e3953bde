"""Whole pools, one per training recipe, scored on dev by what a visitor sees: a recipe search at full size.

`logo_core.recipes` trains a few tasks per recipe one adapter at a time (hours on a CPU), and
`scripts/compare_pools.py` compares two finished pools. On a GPU, `multilora.train_many` trains all 48 adapters of
a recipe in one batched run, so every candidate recipe can be judged as a pool: on dev and people_dev prompts
(never test), with the shipped routing setting, each recipe's pool gives its own-adapter top-1, LoGo k=1's task
score (the top-1 adapter answers, greedy) and the oracle's (each prompt's own adapter). The recipe with the
highest LoGo k=1 task score over both kinds of dev prompts is the pre-declared choice; its adapters are packed
into `--out` (split to fit what a device run can return). Each recipe's results are written as soon as it ends.

    python scripts/pool_recipes.py --device cuda --out OUT --recipes "steps=300 lr=5e-3 schedule=cosine" ...
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from compare_pools import dev_prompts, pool_config  # noqa: E402

from logo_core import lab as L  # noqa: E402
from logo_core.eval import max_tokens  # noqa: E402
from logo_core.loading import load  # noqa: E402
from logo_core.multilora import train_many  # noqa: E402
from logo_core.recipes import parse_recipe  # noqa: E402
from logo_core.registry import load_config  # noqa: E402
from logo_core.tasks import TASKS, adapter_tasks, get_task  # noqa: E402
from logo_core.train import recipe_key, round_robin  # noqa: E402

SPLITS = ("dev", "people_dev")


def score_pool(trained, cfg, lab_prompts, vectors, loaded, st, refs, tokens=None) -> dict:
    """Per split: each prompt's task, LoGo k=1 choice, and the own top-1 / LoGo / oracle hits (0..1)."""
    names = [a.name for a in cfg.adapters]
    order = [t.name for t in trained.tasks]  # the stacked layers' adapter order
    factors = L.pool_factors(cfg, loaded.model)
    lab = L.Lab(lab_prompts, vectors, factors, token_signals=tokens)  # tokens: the token evidence
    out = {}
    for split in SPLITS:
        idx = torch.tensor([i for i in lab.index[split].tolist() if lab_prompts[i].task in names], dtype=torch.long)
        rows = [lab_prompts[i] for i in idx.tolist()]
        chosen = [names[j] for j in lab.scores(st, idx).argmax(-1).tolist()]
        jobs = [(q.text, c) for q, c in zip(rows, chosen)] + [(q.text, q.task) for q in rows]
        texts = [""] * len(jobs)
        by_len: dict[int, list[int]] = {}
        for i, (text, _) in enumerate(jobs):
            by_len.setdefault(max_tokens([refs[text]], loaded.tokenizer), []).append(i)
        for n, ids in by_len.items():
            got = trained.answers([jobs[i][0] for i in ids], [order.index(jobs[i][1]) for i in ids], n)
            for i, a in zip(ids, got):
                texts[i] = a
        m = len(rows)
        score = [TASKS[q.task].score(a, refs[q.text].answer) / 100 for q, a in zip(rows + rows, texts)]
        out[split] = {
            "task": [q.task for q in rows],
            "prompt": [q.text for q in rows],
            "chosen": chosen,
            "own top-1": [float(c == q.task) for c, q in zip(chosen, rows)],
            "LoGo k=1 task score": score[:m],
            "oracle task score": score[m:],
            "answers": texts,
        }
    return out


def pack(directory: Path, out: Path, parts: int = 3) -> list[Path]:
    """`directory` as a tar in `parts` pieces (a device run returns files of at most 16 MiB)."""
    tar = out / "pool.tar"
    with tarfile.open(tar, "w") as f:
        f.add(directory, arcname=directory.name)
    data = tar.read_bytes()
    tar.unlink()
    step = -(-len(data) // parts)
    files = []
    for k in range(parts):
        files.append(out / f"pool.tar.{k}")
        files[-1].write_bytes(data[k * step : (k + 1) * step])
    return files


FIGURES = ("own top-1", "LoGo k=1 task score", "oracle task score")


def report(files: list[Path], reference: str) -> tuple[str, dict]:
    """Markdown table of every recipe in `results.json` files (a later file's recipe replaces an earlier one's),
    95% bootstrap intervals over prompts, and LoGo k=1 paired against `reference` (a recipe key) over the same
    prompts; with the compact per-prompt hits (no answers) for docs/lab/pool_recipes.json."""
    from logo_core.intervals import bootstrap, fmt, paired

    recipes, meta = {}, {}
    for f in files:
        r = json.loads(Path(f).read_text())
        meta = {k: r.get(k) for k in ("n", "setting", "device", "gpu")}
        recipes.update(r["recipes"])

    def hits(key: str, fig: str, splits=SPLITS) -> torch.Tensor:
        return torch.tensor([h for s in splits for h in recipes[key]["splits"][s][fig]])

    head = "| recipe | train s | " + " | ".join(f"{f}, {s}" for f in FIGURES for s in SPLITS)
    lines = [head + f" | LoGo k=1 - `{reference}`, both kinds (paired) |", "|---|" + "---:|" * (2 + 2 * len(FIGURES))]
    for key, r in sorted(recipes.items(), key=lambda kv: -float(hits(kv[0], FIGURES[1]).mean())):
        cells = [fmt(bootstrap(hits(key, f, (s,)))) for f in FIGURES for s in SPLITS]
        vs = (
            ""
            if key == reference or reference not in recipes
            else fmt(paired(hits(key, FIGURES[1]), hits(reference, FIGURES[1])))
        )
        lines.append(f"| `{key}` | {r['train_s']:.0f} | " + " | ".join(cells) + f" | {vs} |")
    m = len(recipes[reference]["splits"][SPLITS[0]]["task"]) // max(1, meta["n"]) if reference in recipes else "?"
    lines += [
        "",
        f"{m} tasks, {meta['n']} prompts a task of each kind (dev: the task templates, people_dev: written the way "
        f"people ask), routing setting `{meta['setting']}`; train s: all 48 adapters of the recipe in one batched "
        f"run (`multilora.train_many`) on one {meta.get('gpu') or meta['device']}. Rows by LoGo k=1's task score "
        "on dev (template), the highest first.",
    ]
    compact = {
        key: {s: {f: r["splits"][s][f] for f in (*FIGURES, "task", "chosen")} for s in SPLITS}
        for key, r in recipes.items()
    }
    return "\n".join(lines) + "\n", {"meta": meta, "recipes": compact}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--report", nargs="+", default=None, help="results.json files: write the table instead of running")
    p.add_argument(
        "--reference", default="steps150-b8-lr0.005-cosine-r8-a16-bf16-seed0", help="recipe key to pair against"
    )
    p.add_argument("--doc", default=None, help="fill the `gpu_recipes` section of this Markdown file")
    p.add_argument("--json", default=None, help="write the per-prompt hits here")
    p.add_argument("--recipes", nargs="+", default=None, help='each "field=value ..." over train.py\'s flags')
    p.add_argument("--tasks", default="all")
    p.add_argument("--n", type=int, default=10, help="dev prompts a task, of each kind")
    p.add_argument("--device", default="cpu", help="where the pools train and answer (the routing lab: CPU)")
    p.add_argument("--work", default=str(ROOT / "runs" / "pool_recipes"))
    p.add_argument("--out", default=None, help="results.json and the chosen pool's pieces")
    p.add_argument("--budget", type=float, default=1e9, help="start no recipe after this many seconds")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--parts", type=int, default=3)
    args = p.parse_args()
    if args.report:
        text, compact = report([Path(f) for f in args.report], args.reference)
        print(text)
        if args.doc:
            from logo_core.tasks.check import fill

            fill(Path(args.doc), {"gpu_recipes": text})
        if args.json:
            Path(args.json).write_text(json.dumps(compact) + "\n")
        return
    if not (args.recipes and args.out):
        p.error("give --recipes and --out to run (or --report FILES)")
    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False  # answers as close to the CPU's fp32 as the GPU gives
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    shipped = load_config(ROOT / "adapters.yaml")
    tasks = round_robin(adapter_tasks()) if args.tasks == "all" else [get_task(t) for t in args.tasks.split(",")]
    prompts = dev_prompts(shipped, args.n)
    loaded = load(shipped.base_model.model_copy(update={"device": "cpu"}))
    vectors = L.cached_vectors(shipped, loaded, prompts, work)
    st = L.library_setting(shipped.defaults)
    refs = {}
    for t in TASKS.values():
        for split in SPLITS:
            refs.update({ex.prompt: ex for ex in t.examples(split, args.n, seed=5)})
    print(f"probe vectors of {len(prompts)} prompts: {time.perf_counter() - t0:.0f} s", flush=True)
    results = {"n": args.n, "setting": st.name, "device": args.device, "recipes": {}}
    if args.device.startswith("cuda"):
        results["gpu"] = torch.cuda.get_device_name()
    for text in args.recipes:
        if time.perf_counter() - t0 > args.budget:
            print(f"budget spent: {text!r} not started", flush=True)
            continue
        targs = parse_recipe(text, argparse.Namespace(threads=args.threads))
        key = recipe_key(targs)
        t1 = time.perf_counter()
        trained = train_many(tasks, targs, args.device)
        trained.save(work / key, key)
        t2 = time.perf_counter()
        cfg = pool_config(shipped, work / key)
        cfg = cfg.model_copy(update={"adapters": [a for a in cfg.adapters if a.name in {t.name for t in tasks}]})
        tokens = L.token_source(cfg, loaded, prompts, work)  # this pool's per-token signals, for the token evidence
        scored = score_pool(trained, cfg, prompts, vectors, loaded, st, refs, tokens)
        results["recipes"][key] = {
            "recipe": text, "train_s": round(t2 - t1, 1), "score_s": round(time.perf_counter() - t2, 1),
            "curves": trained.curves, "splits": scored,
        }  # fmt: skip
        means = {
            f"{s} {f}": round(100 * sum(scored[s][f]) / len(scored[s][f]), 1)
            for s in SPLITS
            for f in ("own top-1", "LoGo k=1 task score", "oracle task score")
        }
        results["recipes"][key]["means"] = means
        (out / "results.json").write_text(json.dumps(results, ensure_ascii=False))
        print(f"{key}: train {t2 - t1:.0f} s, score {time.perf_counter() - t2:.0f} s, {means}", flush=True)
        del trained
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        best = max(results["recipes"], key=lambda k: logo(results, k))
        if results.get("chosen") != best:  # packed as soon as it leads: a run cut short still returns it
            results["chosen"] = best
            files = pack(work / best, out, args.parts)
            (out / "results.json").write_text(json.dumps(results, ensure_ascii=False))
            print(f"leading: {best} (LoGo k=1 {100 * logo(results, best):.1f}), in {[f.name for f in files]}")
    print(f"total {time.perf_counter() - t0:.0f} s", flush=True)


def logo(results: dict, key: str) -> float:
    """LoGo k=1's task score over both kinds of dev prompts: the rule that chooses the recipe."""
    sc = results["recipes"][key]["splits"]
    hits = [h for s in SPLITS for h in sc[s]["LoGo k=1 task score"]]
    return sum(hits) / len(hits)


if __name__ == "__main__":
    main()
