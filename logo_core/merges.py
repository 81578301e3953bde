"""Which merge weights help? Task scores of k = 1 against k = 3 under several weighting schemes, on dev prompts.

Routing is done once per prompt (the shipped default setting, its calibrated scores); each scheme turns
the top-3 scores into weights and the prompt is answered with that explicit mixture. Seen tasks (an
adapter of their own) and unseen tasks (relatives only: where the paper expects merging to help) are
reported apart, with 95% bootstrap intervals and paired differences against k = 1, then by family of the
unseen tasks (where merging helps, if anywhere). The `family` schemes merge the best three of the top adapter's
own family (the pool's `family:` labels of the adapters, never the prompt's task). Results are cached
per (scheme, prompt) in a JSON file named by the pool's hash (another pool routes and answers
differently, so it starts a file of its own), so a stopped run resumes.

Example:
    python -m logo_core.merges --n 4 --split dev --out docs/lab/merges
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
from pathlib import Path

import torch

from .mixing import acting, merge_weights

log = logging.getLogger(__name__)


def proportional(scores: list[float]) -> list[float]:
    """The paper's weights (`mixing.merge_weights`): positive parts normalised (uniform if none is positive)."""
    return merge_weights(scores, "proportional")


def softmax(t: float):
    def weights(scores: list[float]) -> list[float]:
        m = max(scores)
        e = [math.exp((s - m) / t) for s in scores]
        return [x / sum(e) for x in e]

    return weights


def top_full(share: float):
    """The best adapter at full strength, the others at `share` x their proportional weight (the library's
    `lead` weighting at that share)."""
    return lambda scores: merge_weights(scores, "lead", share)


SCHEMES = {
    "k1": (1, lambda s: [1.0]),
    "k3 proportional": (3, proportional),
    "k3 softmax T=1": (3, softmax(1.0)),
    "k3 softmax T=0.5": (3, softmax(0.5)),
    "k3 softmax T=0.25": (3, softmax(0.25)),
    "k3 softmax T=0.1": (3, softmax(0.1)),
    "k3 top full + 0.1 shares": (3, top_full(0.1)),
    "k3 top full + 0.25 shares": (3, top_full(0.25)),
    "k3 top full + 0.5 shares": (3, top_full(0.5)),
    "k3 family, proportional": (3, proportional),
    "k3 family, top full + 0.25 shares": (3, top_full(0.25)),
    "k3 family, top full + 1 shares": (3, top_full(1.0)),
}


def pick(scheme: str, scores: dict[str, float], selected: list[str], families: dict[str, str]) -> list[str]:
    """The adapters a scheme merges, best first: the routing's top k, or (`family` schemes) the best k of the
    top adapter's family. Nothing when the routing abstained (the base model answers)."""
    k = SCHEMES[scheme][0]
    if not selected or "family" not in scheme:
        return selected[:k]
    top = families.get(selected[0]) or selected[0]
    same = [a for a in scores if (families.get(a) or a) == top]
    return sorted(same, key=lambda a: -scores[a])[:k]


def run(engine, split: str, n: int, cache_path: Path, families: dict[str, str], batch: int = 16) -> dict:
    from .eval import max_tokens
    from .tasks import TASKS

    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    names = engine.adapters
    tasks = [
        t
        for t in TASKS.values()
        if t.name in names or (t.unseen and any(TASKS[a].family == t.family for a in names if a in TASKS))
    ]
    rows = [(t, ex) for t in tasks for ex in t.examples(split, n)]
    routings = []
    for i in range(0, len(rows), batch):
        routings += engine.route_batch([ex.prompt for _, ex in rows[i : i + batch]], k=3)
    for scheme, (_, fn) in SCHEMES.items():
        todo = [
            (j, t, ex, r) for j, ((t, ex), r) in enumerate(zip(rows, routings)) if f"{scheme}|{ex.prompt}" not in cache
        ]
        for i in range(0, len(todo), batch):
            part = todo[i : i + batch]
            mixtures = []
            for _, _, _, r in part:
                chosen = pick(scheme, r.scores, r.selected, families)  # none: abstained, the base model answers
                mixtures.append(acting(dict(zip(chosen, fn([r.scores[c] for c in chosen]))) if chosen else {}))
            length = max_tokens([ex for _, _, ex, _ in part], engine.tokenizer)
            outs = engine.generate_batch([ex.prompt for _, _, ex, _ in part], mixtures, max_new_tokens=length)
            for (_, t, ex, _), g in zip(part, outs):
                cache[f"{scheme}|{ex.prompt}"] = {
                    "task": t.name,
                    "unseen": t.unseen,
                    "score": t.score(g.text, ex.answer),
                }
            cache_path.write_text(json.dumps(cache, indent=0, ensure_ascii=False) + "\n")
            log.info("%s: %d / %d", scheme, min(i + batch, len(todo)), len(todo))
    return {scheme: [{**cache[f"{scheme}|{ex.prompt}"], "family": t.family} for t, ex in rows] for scheme in SCHEMES}


def report(results: dict, split: str, n: int) -> str:
    from .lab import bootstrap, fmt, paired

    lines = [
        f"Task score (0-100) on {n} {split} prompts per task, routed by the shipped default; 95% bootstrap "
        "intervals; differences are paired over the same prompts.",
        "",
        "| scheme | seen | unseen | seen - k1 (paired) | unseen - k1 (paired) |",
        "|---|---:|---:|---:|---:|",
    ]
    base = results["k1"]
    for scheme, rows in results.items():
        cells = []
        for unseen in (False, True):
            cells.append(fmt(bootstrap(torch.tensor([r["score"] / 100 for r in rows if r["unseen"] == unseen]))))
        for unseen in (False, True):
            a = torch.tensor([r["score"] / 100 for r in rows if r["unseen"] == unseen])
            b = torch.tensor([r["score"] / 100 for r in base if r["unseen"] == unseen])
            cells.append("" if scheme == "k1" else fmt(paired(a, b)))
        lines.append(f"| {scheme} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + by_family(results)


def by_family(results: dict) -> str:
    """Unseen tasks by family: k = 1's score and each k = 3 scheme's paired difference (where merging helps)."""
    from .lab import bootstrap, fmt, paired

    base = results["k1"]
    families = sorted({r["family"] or r["task"] for r in base if r["unseen"]})
    schemes = [s for s in results if s != "k1"]
    lines = [
        "Unseen tasks by family (the held-out members of the pool's families): k1's score, then each scheme minus k1 "
        "(paired).",
        "",
        "| family | prompts | k1 | " + " | ".join(schemes) + " |",
        "|---|---:|---:|" + "---:|" * len(schemes),
    ]
    for fam in families:
        idx = [i for i, r in enumerate(base) if r["unseen"] and (r["family"] or r["task"]) == fam]
        b = torch.tensor([base[i]["score"] / 100 for i in idx])
        cells = [str(len(idx)), fmt(bootstrap(b))]
        for s in schemes:
            cells.append(fmt(paired(torch.tensor([results[s][i]["score"] / 100 for i in idx]), b)))
        lines.append(f"| {fam} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m logo_core.merges", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="adapters.yaml")
    p.add_argument("--split", default="dev", choices=["dev", "test", "people"])
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--out", default="docs/lab/merges")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    from .engine import LoGoEngine

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    engine = LoGoEngine.from_config(args.config)
    from .lab import pool_hash
    from .registry import load_config

    cfg = load_config(args.config)
    pool = pool_hash(cfg)
    # the answers depend on the routing too: a new default (the lab's --apply) must not read the old one's answers
    routing = hashlib.sha256(json.dumps(engine.route_options(k=3).trace(), sort_keys=True).encode()).hexdigest()[:8]
    families = {a.name: a.family for a in cfg.adapters}
    results = run(engine, args.split, args.n, out / f"cache-{args.split}-{pool}-{routing}.json", families)
    text = f"Pool `{args.config}` (sha256 of its weights {pool}). " + report(results, args.split, args.n)
    (out / f"{args.split}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
