"""Evaluation harness: routing accuracy, task scores against baselines, unseen tasks, plots.

    python -m logo_core.eval --out docs/eval            # the full run behind the README tables
    python -m logo_core.eval --quick --out /tmp/eval    # a small slice, end to end (CI)
    python -m logo_core.eval --jsonl bench.jsonl --metric rouge_l   # {"context", "completion"} rows

Probe settings are compared from ONE full probe pass per batch (`LoGoEngine.sweep_batch`), and
the default setting is chosen on a dev set drawn from the tasks' train splits, then reported on
the held-out test splits.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import baselines
from .engine import LoGoEngine
from .mixing import select_top_k
from .tasks import METRICS, TASKS, Task


@dataclass(frozen=True)
class Setting:
    """Where and how to listen: blocks, modules, probe input, signal, calibration."""

    layers: tuple[int, ...]
    modules: tuple[str, ...]
    probe_input: str
    signal: str
    calibrated: bool

    @property
    def label(self) -> str:
        blocks = str(self.layers[0]) if len(self.layers) == 1 else f"{self.layers[0]}:{self.layers[-1] + 1}"
        cal = "cal" if self.calibrated else "raw"
        return f"{self.signal}/{cal} block {blocks} {'+'.join(self.modules)} {self.probe_input}"

    def route_kwargs(self) -> dict:
        layer = self.layers[0] if len(self.layers) == 1 else f"{self.layers[0]}:{self.layers[-1] + 1}"
        return {
            "layer": layer,
            "module": ",".join(self.modules),
            "probe_input": self.probe_input,
            "signal": self.signal,
            "calibrated": self.calibrated,
        }


def setting_scores(sweep: dict, setting: Setting) -> torch.Tensor:
    """[P, N] scores of a setting: the mean over its blocks and modules (as the engine routes)."""
    parts = [
        sweep[(setting.probe_input, m, setting.signal, setting.calibrated)][:, list(setting.layers)]
        for m in setting.modules
    ]
    return torch.cat(parts, dim=1).mean(1)


def run_sweep(engine: LoGoEngine, prompts: Sequence[str], batch_size: int) -> dict:
    """Every (probe input, module, signal, calibration) x block score for every prompt."""
    chunks = []
    for i in tqdm(range(0, len(prompts), batch_size), desc="probe sweep", leave=False):
        chunks.append(engine.sweep_batch(prompts[i : i + batch_size]))
    return {key: torch.cat([c[key] for c in chunks]) for key in chunks[0]}


def accuracy(scores: torch.Tensor, labels: Sequence[int], k: int = 1) -> float:
    """Share of prompts whose own adapter is among the top-k scores (ties -> pool order)."""
    top = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]  # as select_top_k
    hits = (top == torch.tensor(labels)[:, None]).any(dim=1)
    return 100.0 * hits.float().mean().item()


def candidate_settings(engine: LoGoEngine) -> list[Setting]:
    """Single blocks and block ranges, each module set and probe input, both signals, calibrated
    or not: the space the default is chosen from."""
    L = engine.n_layers
    module_sets = [(m,) for m in engine.pool.modules] + (
        [tuple(engine.pool.modules)] if len(engine.pool.modules) > 1 else []
    )
    ranges = [(b,) for b in range(L)] + [tuple(range(a, L)) for a in (0, L // 3, L // 2, 2 * L // 3)]
    return [
        Setting(r, ms, pi, sig, cal)
        for r in ranges
        for ms in module_sets
        for pi in ("residual", "module")
        for sig in ("norm", "entropy")
        for cal in (False, True)
    ]


def mixtures_from_scores(scores: torch.Tensor, names: Sequence[str], k: int, exclude: Sequence[str] = ()) -> list[dict]:
    """Top-k mixtures (LOGO.md 3) per row, optionally with some adapters removed from the pool."""
    keep = [i for i, n in enumerate(names) if n not in exclude]
    out = []
    for row in scores:
        idx, w = select_top_k(row[keep], k)
        out.append({names[keep[i]]: wi for i, wi in zip(idx, w)})
    return out


def max_tokens(task: Task, examples) -> int:
    """Generation length for a task: its longest reference answer plus room (capped)."""
    longest = max(len(ex.answer.split()) for ex in examples)
    return min(48, 8 + 3 * longest)


class Runner:
    """Generates each distinct (prompt, mixture) once, batched; conditions share the cache."""

    def __init__(self, engine: LoGoEngine, batch_size: int) -> None:
        self.engine, self.batch_size = engine, batch_size
        self.cache: dict[tuple, str] = {}

    @staticmethod
    def _key(prompt: str, mixture: dict, n: int) -> tuple:
        return prompt, n, tuple(sorted((k, round(v, 6)) for k, v in mixture.items()))

    def run(self, jobs: Sequence[tuple[str, dict, int]], desc: str) -> list[str]:
        todo = sorted(
            {self._key(*j): j for j in jobs if self._key(*j) not in self.cache}.items(),
            key=lambda kv: (kv[1][2], len(kv[1][0])),
        )
        for i in tqdm(range(0, len(todo), self.batch_size), desc=desc, leave=False):
            chunk = todo[i : i + self.batch_size]
            n = max(j[2] for _, j in chunk)
            gens = self.engine.generate_batch(
                [j[0] for _, j in chunk], max_new_tokens=n, adapters=[j[1] for _, j in chunk]
            )
            for (key, _), g in zip(chunk, gens):
                self.cache[key] = g.text
        return [self.cache[self._key(*j)] for j in jobs]


def evaluate(
    engine: LoGoEngine, n_test: int = 50, n_dev: int = 30, k_max: int = 3, batch_size: int = 16, quick: bool = False
) -> dict:
    """The whole evaluation; returns a JSON-able dict of every figure."""
    names = engine.adapters
    seen = [t for t in TASKS.values() if t.name in names]
    unseen = [t for t in TASKS.values() if t.name not in names]
    if quick:
        seen, unseen = seen[:3], unseen[:1]
    test = {t.name: t.examples("test", n_test) for t in seen + unseen}
    dev = {t.name: t.examples("train", n_dev) for t in seen}

    # 1. Routing: every setting from one sweep, the default chosen on dev, reported on test.
    seen_prompts = [ex.prompt for t in seen for ex in test[t.name]]
    labels = [names.index(t.name) for t in seen for _ in test[t.name]]
    dev_prompts = [ex.prompt for t in seen for ex in dev[t.name]]
    dev_labels = [names.index(t.name) for t in seen for _ in dev[t.name]]
    sweep_test = run_sweep(engine, seen_prompts, batch_size)
    sweep_dev = run_sweep(engine, dev_prompts, batch_size)
    candidates = candidate_settings(engine)
    table = []
    for s in candidates:
        table.append(
            {
                "setting": s.label,
                **asdict(s),
                "dev_top1": accuracy(setting_scores(sweep_dev, s), dev_labels),
                "test_top1": accuracy(setting_scores(sweep_test, s), labels),
                f"test_top{k_max}": accuracy(setting_scores(sweep_test, s), labels, k_max),
            }
        )
    # Best on dev; among equals prefer fewer blocks/modules (cheaper probe), then the reference-like.
    best_i = max(
        range(len(table)), key=lambda i: (table[i]["dev_top1"], -len(candidates[i].layers) * len(candidates[i].modules))
    )
    best = candidates[best_i]
    L = engine.n_layers
    reference = Setting((L - 1,), ("q_proj",), "residual", "norm", False)
    ref_like = {
        f"{sig}/{'cal' if cal else 'raw'}": Setting((L - 1,), ("q_proj",), "residual", sig, cal)
        for sig in ("norm", "entropy")
        for cal in (False, True)
    }

    # 2. Task scores, seen tasks.
    runner = Runner(engine, batch_size)
    retriever = baselines.Retriever(engine.pool.specs)
    conditions: dict[str, list[dict]] = {"base": [{} for _ in seen_prompts]}
    conditions["oracle"] = [{names[lab]: 1.0} for lab in labels]
    for k in range(1, k_max + 1):
        conditions[f"LoGo k={k} ({best.signal}/{'cal' if best.calibrated else 'raw'}, default)"] = mixtures_from_scores(
            setting_scores(sweep_test, best), names, k
        )
    for label, s in ref_like.items():
        conditions[f"LoGo k={k_max} {label}, last block q_proj"] = mixtures_from_scores(
            setting_scores(sweep_test, s), names, k_max
        )
    conditions["uniform (all adapters)"] = [baselines.uniform(names) for _ in seen_prompts]
    conditions[f"random k={k_max}"] = [baselines.random_k(names, k_max, seed=i) for i in range(len(seen_prompts))]
    conditions[f"retrieval k={k_max}"] = retriever.select(seen_prompts, k_max)
    lengths = {t.name: max_tokens(t, test[t.name]) for t in seen + unseen}
    task_of = [t for t in seen for _ in test[t.name]]
    answers = [ex.answer for t in seen for ex in test[t.name]]
    scores: dict[str, dict[str, float]] = {}
    for cond, mixes in tqdm(conditions.items(), desc="conditions"):
        texts = runner.run([(p, m, lengths[t.name]) for p, m, t in zip(seen_prompts, mixes, task_of)], cond)
        per_task: dict[str, list[float]] = {}
        for t, text, ans in zip(task_of, texts, answers):
            per_task.setdefault(t.name, []).append(t.score(text, ans))
        scores[cond] = {name: statistics.fmean(v) for name, v in per_task.items()}
        scores[cond]["average"] = statistics.fmean(scores[cond][t.name] for t in seen)

    # 3. Unseen tasks and leave-one-out.
    generalisation: dict[str, dict[str, float]] = {}
    if unseen:
        un_prompts = [ex.prompt for t in unseen for ex in test[t.name]]
        un_task = [t for t in unseen for _ in test[t.name]]
        un_answers = [ex.answer for t in unseen for ex in test[t.name]]
        un_scores = setting_scores(run_sweep(engine, un_prompts, batch_size), best)
        un_conditions = {
            "base": [{} for _ in un_prompts],
            f"LoGo k={k_max}": mixtures_from_scores(un_scores, names, k_max),
            "uniform": [baselines.uniform(names) for _ in un_prompts],
            f"retrieval k={k_max}": retriever.select(un_prompts, k_max),
        }
        for cond, mixes in un_conditions.items():
            texts = runner.run(
                [(p, m, lengths[t.name]) for p, m, t in zip(un_prompts, mixes, un_task)], f"unseen {cond}"
            )
            for t, text, ans in zip(un_task, texts, un_answers):
                generalisation.setdefault(t.name, {}).setdefault(cond, []).append(t.score(text, ans))
    loo_conditions: dict[str, list[dict]] = {
        "base": [],
        f"LoGo k={k_max}": [],
        "uniform": [],
        f"retrieval k={k_max}": [],
    }
    best_test = setting_scores(sweep_test, best)
    retrieved = {}
    for i, (p, t) in enumerate(zip(seen_prompts, task_of)):
        rest = [n for n in names if n != t.name]
        loo_conditions["base"].append({})
        loo_conditions[f"LoGo k={k_max}"].append(
            mixtures_from_scores(best_test[i : i + 1], names, k_max, exclude=[t.name])[0]
        )
        loo_conditions["uniform"].append(baselines.uniform(rest))
        retrieved.setdefault(t.name, []).append(p)
    for t in seen:
        loo_conditions[f"retrieval k={k_max}"] += retriever.select(retrieved[t.name], k_max, exclude=[t.name])
    for cond, mixes in loo_conditions.items():
        texts = runner.run(
            [(p, m, lengths[t.name]) for p, m, t in zip(seen_prompts, mixes, task_of)], f"leave-one-out {cond}"
        )
        for t, text, ans in zip(task_of, texts, answers):
            generalisation.setdefault(f"{t.name} (own adapter removed)", {}).setdefault(cond, []).append(
                t.score(text, ans)
            )
    generalisation = {t: {c: statistics.fmean(v) for c, v in cs.items()} for t, cs in generalisation.items()}

    # 4. Analyses for the plots: mean signal per (task, adapter), accuracy by block, weights vs similarity.
    heat = torch.stack([best_test[[i for i, t in enumerate(task_of) if t.name == s.name]].mean(0) for s in seen])
    by_block = {
        f"{sig}/{'cal' if cal else 'raw'} {pi}": [
            accuracy(setting_scores(sweep_test, Setting((b,), ("q_proj",), pi, sig, cal)), labels) for b in range(L)
        ]
        for pi in ("residual", "module")
        for sig in ("norm", "entropy")
        for cal in (False, True)
    }
    default_mixes = conditions[f"LoGo k={k_max} ({best.signal}/{'cal' if best.calibrated else 'raw'}, default)"]
    task_emb = retriever.embed([t.description for t in seen])
    adapter_emb = retriever.embed([engine.pool.description(n) or n for n in names])
    similarity = (task_emb @ adapter_emb.T).tolist()
    weight = [
        [statistics.fmean(m.get(a, 0.0) for m, tt in zip(default_mixes, task_of) if tt.name == t.name) for a in names]
        for t in seen
    ]
    return {
        "adapters": names,
        "seen_tasks": [t.name for t in seen],
        "unseen_tasks": [t.name for t in unseen],
        "metrics": {t.name: t.metric for t in seen + unseen},
        "n_test": n_test,
        "n_dev": n_dev,
        "k_max": k_max,
        "default": {"label": best.label, **best.route_kwargs(), "k": k_max},
        "reference": reference.label,
        "routing": table,
        "routing_by_block": by_block,
        "scores": scores,
        "generalisation": generalisation,
        "heatmap": heat.tolist(),
        "similarity": similarity,
        "weight": weight,
    }


def score_jsonl(
    engine: LoGoEngine, path: Path, metric: str, k: int | None, max_new_tokens: int, batch_size: int
) -> dict:
    """Score LoGo and the base model on `{"context": ..., "completion": ...}` rows (the authors'
    benchmark format)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts, refs = [r["context"] for r in rows], [r["completion"] for r in rows]
    score = METRICS[metric]
    out = {}
    for cond in ("base", "LoGo"):
        texts = []
        for i in tqdm(range(0, len(prompts), batch_size), desc=cond):
            chunk = prompts[i : i + batch_size]
            adapters = [{} for _ in chunk] if cond == "base" else None
            texts += [
                g.text for g in engine.generate_batch(chunk, max_new_tokens=max_new_tokens, adapters=adapters, k=k)
            ]
        out[cond] = statistics.fmean(score(t, r) for t, r in zip(texts, refs))
    return {"file": str(path), "metric": metric, "rows": len(rows), "scores": out}


def markdown(results: dict) -> str:
    """The README tables."""
    seen = results["seen_tasks"]
    lines = [f"### Task scores (held-out test prompts, {results['n_test']} per task)", ""]
    lines.append("| condition | " + " | ".join(seen) + " | **average** |")
    lines.append("|---|" + "---:|" * (len(seen) + 1))
    for cond, s in results["scores"].items():
        lines.append(f"| {cond} | " + " | ".join(f"{s[t]:.1f}" for t in seen) + f" | **{s['average']:.1f}** |")
    lines.append("")
    lines.append(f"Metrics: {', '.join(f'{t}: {m}' for t, m in results['metrics'].items())}.")
    k = results["k_max"]
    lines += ["", f"### Routing accuracy (own adapter top-1 / top-{k}, test prompts)", ""]
    lines.append(f"| setting | dev top-1 | test top-1 | test top-{k} |")
    lines.append("|---|---:|---:|---:|")
    L = max(max(r["layers"]) for r in results["routing"]) + 1
    shown = [  # the reference place (last block, q_proj, residual) under each signal
        r
        for r in results["routing"]
        if list(r["layers"]) == [L - 1] and list(r["modules"]) == ["q_proj"] and r["probe_input"] == "residual"
    ]
    best = next(r for r in results["routing"] if r["setting"] == results["default"]["label"])
    for r in shown + [best]:
        tag = " (chosen default)" if r is best else (" (reference)" if r["setting"] == results["reference"] else "")
        lines.append(f"| {r['setting']}{tag} | {r['dev_top1']:.1f} | {r['test_top1']:.1f} | {r[f'test_top{k}']:.1f} |")
    top = sorted(results["routing"], key=lambda r: -r["dev_top1"])[:8]
    lines += ["", "Best settings on the dev set (train-split prompts), reported on test:", ""]
    lines.append(f"| setting | dev top-1 | test top-1 | test top-{k} |")
    lines.append("|---|---:|---:|---:|")
    for r in top:
        lines.append(f"| {r['setting']} | {r['dev_top1']:.1f} | {r['test_top1']:.1f} | {r[f'test_top{k}']:.1f} |")
    if results["generalisation"]:
        conds = list(next(iter(results["generalisation"].values())))
        lines += ["", "### Unseen tasks and leave-one-out (own adapter removed from the pool)", ""]
        lines.append("| task | " + " | ".join(conds) + " |")
        lines.append("|---|" + "---:|" * len(conds))
        for t, cs in results["generalisation"].items():
            lines.append(f"| {t} | " + " | ".join(f"{cs[c]:.1f}" for c in conds) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(results: dict, out: Path) -> None:
    from . import plots

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown(results))
    tasks, adapters = results["seen_tasks"], results["adapters"]
    figures = {
        "heatmap": plots.heatmap(
            results["heatmap"],
            adapters,
            tasks,
            title="Mean routing signal: task prompts x adapters",
            row_label="task",
            value_label="mean signal",
        ),
        "routing_by_block": plots.accuracy_by_block(
            results["routing_by_block"], title="Routing accuracy by probe block (q_proj)"
        ),
        "weight_vs_similarity": plots.weight_vs_similarity(
            results["similarity"], results["weight"], tasks, adapters, title="Merge weight vs task similarity"
        ),
    }
    for name, fig in figures.items():
        fig.write_html(out / f"{name}.html", include_plotlyjs="cdn")
        try:
            fig.write_image(out / f"{name}.png", width=900, height=600, scale=1)
        except Exception as e:  # kaleido needs a Chrome; HTML is still written
            print(f"warning: could not write {name}.png ({e})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m logo_core.eval", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="adapters.yaml")
    p.add_argument("--out", default="docs/eval", help="folder for results.json, results.md and plots")
    p.add_argument("--n-test", type=int, default=50, help="held-out test prompts per task")
    p.add_argument("--n-dev", type=int, default=30, help="dev prompts per task (train split) to choose the default")
    p.add_argument("--k", type=int, default=3, help="largest k evaluated")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--quick", action="store_true", help="a small slice (3 tasks, 6 prompts each) for CI")
    p.add_argument("--jsonl", type=Path, help="score a file of {context, completion} rows instead")
    p.add_argument("--render", action="store_true", help="only redraw tables and plots from OUT/results.json")
    p.add_argument("--metric", default="rouge_l", choices=sorted(METRICS), help="metric for --jsonl")
    p.add_argument("--max-new-tokens", type=int, default=64, help="generation length for --jsonl")
    args = p.parse_args(argv)
    if args.render:
        results = json.loads((Path(args.out) / "results.json").read_text())
        write_outputs(results, Path(args.out))
        print(markdown(results))
        return 0
    engine = LoGoEngine.from_config(args.config)
    if args.jsonl:
        print(
            json.dumps(
                score_jsonl(engine, args.jsonl, args.metric, args.k, args.max_new_tokens, args.batch_size), indent=1
            )
        )
        return 0
    n_test, n_dev = (6, 4) if args.quick else (args.n_test, args.n_dev)
    results = evaluate(engine, n_test, n_dev, args.k, args.batch_size, quick=args.quick)
    write_outputs(results, Path(args.out))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
