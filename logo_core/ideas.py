"""Routing ideas measured beside the lab's grid (issue 19): what each does to the shipped default, on dev only.

The lab (`lab.py`) searches a grid of settings the library can run. An idea that needs more than a
setting (another background, a transform of the score vector, a decoding step) is measured here,
paired against the shipped default on the same prompts, on two dev samples: the lab's (10 prompts a
task) and a second, larger one (20 a task, another seed) that a choice must also hold on. Test and
people-style prompts are never read. An idea that holds on both becomes a lab setting; the others stay
here, with their numbers, in docs/lab/ideas.md.

- `background`: z-scores against a larger unlabelled background: each seen task's first training
  prompts (12 or 24 a task, never dev or test items) instead of the pool's 3 examples an adapter.
- `whiten`: the score vector decorrelated with the background's covariance of calibrated scores,
  shrunk to its diagonal by `lam` (ZCA): what each adapter says beyond the adapters that move with it.
- `self_trained`: each background prompt labelled by the default's own top-1 (pseudo-labels: still no
  task is read), each adapter's centroid of those prompts' score vectors, and a prompt routed by its
  score vector's cosine to the centroids (alone, or added to the score): what the pool's scores say
  together, learnt from the router's own decisions.
- `confidence`: the default's top 3 each answer alone (greedy), and the one whose answer has the highest
  mean token log-probability (alone, or added to the score with weight `alpha`) wins. Costs three
  generations a prompt; scores the answers too.

    python -m logo_core.ideas --out docs/lab [--confidence]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
from torch import Tensor

from . import lab as L
from .calibration import decorrelate, decorrelation_stats
from .intervals import bootstrap, fmt, paired

log = logging.getLogger(__name__)

DEV2_SEED, DEV2_N = 6, 20  # the second dev sample
BG_SEED = 777  # the larger background's training-split sample


def default_setting(cfg) -> L.Setting:
    """The shipped default as a lab setting (adapters.yaml's defaults, as `lab --apply` wrote them)."""
    return L.library_setting(cfg.defaults)


def build(cfg, loaded, cache: Path, bg_per_task: int) -> L.Lab:
    """The lab's prompts, a second dev sample (`dev2`) and a larger background (`bigbg`), with cached vectors."""
    from .tasks import TASKS

    prompts = L.prompt_sets(cfg, 10, 20)
    extra = L.split_prompts("dev", DEV2_N, seed=DEV2_SEED, name="dev2")
    extra += [
        L.Prompt(ex.prompt, "", "", False, "bigbg")
        for t in TASKS.values()
        if not t.unseen
        for ex in t.examples("train", bg_per_task, seed=BG_SEED)
    ]  # unlabelled: the task is dropped
    vectors = torch.cat([L.cached_vectors(cfg, loaded, prompts, cache), L.cached_vectors(cfg, loaded, extra, cache)])
    return L.Lab(prompts + extra, vectors, L.pool_factors(cfg, loaded.model))  # indexes dev2 and bigbg too


def hit_rows(lab: L.Lab, scores: Tensor, split: str) -> dict[str, Tensor]:
    """Per-prompt own top-1 (seen tasks) and unseen family hit from [P, N] scores of `split`."""
    prompts = [lab.prompts[i] for i in lab.index[split].tolist()]
    top = scores.argmax(-1).tolist()
    names, fams = lab.pool.names, lab.pool.families
    return {
        "own_top1": torch.tensor([float(names[j] == p.task) for j, p in zip(top, prompts) if not p.unseen]),
        "unseen_family_hit": torch.tensor(
            [float(fams[j] == p.family) for j, p in zip(top, prompts) if p.unseen and p.family in fams]
        ),
    }


RULE_HEADER = (
    "| dev prompts | pooling | own top-1 | vs default (paired) | unseen family hit | vs default (paired) |\n"
    "|---|---|---:|---:|---:|---:|"
)


def pooling_labs(prompts: list[L.Prompt], vectors: Tensor, pool: L.PoolFactors, names: list[str]) -> dict[str, L.Lab]:
    """One lab per pooling of vectors [P, L, K, D] (K = len(names)): each pooling's vectors stand in for every
    input and pooling of the lab, so a setting with `pooling="last"` scores that pooling alone."""
    return {
        n: L.Lab(prompts, vectors[:, :, i].float()[:, :, None, None].expand(-1, -1, 2, 2, -1), pool)
        for i, n in enumerate(names)
    }


def rule_lines(lab: L.Lab, rules: dict[str, Tensor], split: str, default: str) -> list[str]:
    """Rows of `RULE_HEADER`: each rule's [P, N] scores of `split`, own top-1 and unseen family hit, paired
    against the rule named `default`."""
    base = hit_rows(lab, rules[default], split)
    lines = []
    for name, scores in rules.items():
        h = hit_rows(lab, scores, split)
        cells = [f"{fmt(bootstrap(h[m]))} | {fmt(paired(h[m], base[m]))}" for m in ("own_top1", "unseen_family_hit")]
        lines.append(f"| {split} | {name} | {cells[0]} | {cells[1]} |")
    return lines


def with_background(lab: L.Lab, st: L.Setting, split: str, background: str) -> Tensor:
    """[P, N] scores of `split` z-scored against another background prompt set."""
    keep = lab.index["background"]
    lab.index["background"] = lab.index[background]
    try:
        return lab.scores(st, lab.index[split])
    finally:
        lab.index["background"] = keep


def whiten(scores: Tensor, background: Tensor, lam: float) -> Tensor:
    """ZCA-whitened scores, shrunk by lam: the router's decorrelation at strength 1 - lam
    (`calibration.decorrelation_stats`; docs/lab/ideas.md's rows were measured with the covariance shrunk to its
    diagonal instead, which differs at 0 < lam < 1 and agrees at 0 and 1)."""
    return decorrelate(scores, decorrelation_stats(background, 1 - lam))


def self_trained(scores: Tensor, background: Tensor) -> Tensor:
    """[P, N] cosine of each score vector to the centroids of the background's score vectors grouped by their own
    top-1 (an adapter no background prompt picks gets -1: it can only win through the score it is added to)."""
    N = background.shape[1]
    pseudo = background.argmax(-1)
    C = torch.zeros(N, N).index_add_(0, pseudo, background)
    count = torch.bincount(pseudo, minlength=N)
    sim = torch.nn.functional.normalize(scores, dim=-1) @ torch.nn.functional.normalize(C, dim=-1).T
    return torch.where(count > 0, sim, torch.full_like(sim, -1.0))


def score_ideas(lab: L.Lab, st: L.Setting, bg_sizes: list[int], per_task: int) -> list[dict]:
    """Every probe-only idea on both dev samples, paired against the default (`per_task`: bigbg's prompts a task)."""
    rows = []
    for split in ("dev", "dev2"):
        idx = lab.index[split]
        base_scores = lab.scores(st, idx)
        base = hit_rows(lab, base_scores, split)
        variants = {"default (examples: 3 an adapter)": base_scores}
        for n in bg_sizes:  # the first n of each task's prompts in bigbg
            lab.index["bg_sub"] = lab.index["bigbg"].view(-1, per_task)[:, :n].reshape(-1)
            variants[f"background: {n} training prompts a task"] = with_background(lab, st, split, "bg_sub")
        bg_scores = lab.scores(st, lab.index["background"])
        big_scores = lab.scores(st, lab.index["bigbg"])
        for lam in (0.5, 0.7, 0.8, 0.9, 0.95):
            variants[f"whiten, lam {lam}"] = whiten(base_scores, bg_scores, lam)
        for bg_name, bg in (("examples", bg_scores), (f"{per_task} training prompts a task", big_scores)):
            sim = self_trained(base_scores, bg)
            variants[f"self-trained centroids ({bg_name}), alone"] = sim
            for w in (1, 5):
                variants[f"self-trained centroids ({bg_name}), score + {w} x cosine"] = base_scores + w * sim
        for name, scores in variants.items():
            h = hit_rows(lab, scores, split)
            rows.append(
                {
                    "split": split,
                    "idea": name,
                    **{m: bootstrap(h[m]) for m in h},
                    **{f"{m}_vs_default": paired(h[m], base[m]) for m in h},
                }
            )
    return rows


def confidence(engine, split_prompts: list[L.Prompt], batch: int = 48) -> list[dict]:
    """Each dev prompt's top 3 (the default) answered alone, with each answer's token log-probabilities."""
    from . import generation
    from .eval import max_tokens
    from .mixing import attach
    from .tasks import TASKS

    seen = [p for p in split_prompts if not p.unseen]
    routes = []
    for i in range(0, len(seen), 64):
        routes += engine.route_batch([p.text for p in seen[i : i + 64]])  # every score, abstained or not
    answers = {}  # the lab's dev sample (`lab.prompt_sets`), drawn once a task: the reference answers
    for name in dict.fromkeys(p.task for p in seen):
        answers.update({(name, ex.prompt): ex for ex in TASKS[name].examples("dev", 10, seed=5)})
    jobs, out = [], []
    for p, r in zip(seen, routes):
        top = sorted(r.scores, key=r.scores.get, reverse=True)[:3]
        out.append({"task": p.task, "scores": {c: r.scores[c] for c in top}, "cand": {}})
        jobs += [(len(out) - 1, c, TASKS[p.task], answers[p.task, p.text]) for c in top]
    for i in range(0, len(jobs), batch):
        chunk = jobs[i : i + batch]
        plan = engine.plan(
            [j[3].prompt for j in chunk],
            adapters=[{j[1]: 1.0} for j in chunk],
            max_new_tokens=max_tokens([j[3] for j in chunk], engine.tokenizer),
        )
        cfg = generation.generation_config(plan.gen, engine.tokenizer)
        cfg.output_scores, cfg.return_dict_in_generate = True, True
        with torch.inference_mode():
            g = attach(engine.model, plan.mixture).generate(**plan.enc.inputs(), generation_config=cfg)
        new = g.sequences[:, plan.enc.input_ids.shape[1] :]
        lp = torch.stack([s.float().log_softmax(-1) for s in g.scores], 1).gather(-1, new[..., None])[..., 0]
        for b, (k, c, task, ex) in enumerate(chunk):
            m = generation.count_tokens(new[b], engine.tokenizer.eos_token_id, engine.tokenizer.pad_token_id)
            text = engine.tokenizer.decode(new[b, :m], skip_special_tokens=True)
            out[k]["cand"][c] = {"lps": lp[b, :m].tolist(), "score": task.score(text, ex.answer)}
        log.info("confidence: %d / %d answers", min(i + batch, len(jobs)), len(jobs))
    return out


def confidence_rows(out: list[dict]) -> list[dict]:
    """Own top-1 and task score of each confidence rule, paired against the default (the top score)."""

    def pick(r, alpha):
        def value(c):
            lps = r["cand"][c]["lps"] or [0.0]
            conf = sum(lps) / len(lps)
            return conf if alpha is None else r["scores"][c] + alpha * conf

        return max(r["cand"], key=value)

    rules = {
        "default (top score)": 0.0,
        "confidence alone": None,
        **{f"score + {a} x confidence": a for a in (1, 2, 4)},
    }
    chosen = {name: [pick(r, a) for r in out] for name, a in rules.items()}
    top = lambda name: torch.tensor([float(c == r["task"]) for c, r in zip(chosen[name], out)])  # noqa: E731
    task = lambda name: torch.tensor([r["cand"][c]["score"] / 100 for c, r in zip(chosen[name], out)])  # noqa: E731
    best3 = torch.tensor([max(v["score"] for v in r["cand"].values()) / 100 for r in out])
    rows = [
        {
            "rule": name,
            "own_top1": bootstrap(top(name)),
            "task": bootstrap(task(name)),
            "own_top1_vs_default": paired(top(name), top("default (top score)")),
            "task_vs_default": paired(task(name), task("default (top score)")),
        }
        for name in rules
    ]
    rows.append({"rule": "best of the three answers (a ceiling no rule can see)", "task": bootstrap(best3)})
    return rows


def markdown(rows: list[dict], conf: list[dict] | None, header: str) -> str:
    lines = [
        header,
        "",
        "| dev sample | idea | own top-1 | vs default (paired) | unseen family hit | vs default (paired) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['split']} | {r['idea']} | {fmt(r['own_top1'])} | {fmt(r['own_top1_vs_default'])} | "
            f"{fmt(r['unseen_family_hit'])} | {fmt(r['unseen_family_hit_vs_default'])} |"
        )
    if conf:
        lines += [
            "",
            "Confidence of the top 3's own answers (dev, seen tasks; task score = the chosen answer's):",
            "",
            "| rule | own top-1 | vs default (paired) | task score | vs default (paired) |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in conf:
            cells = [
                fmt(r[k]) if k in r else "" for k in ("own_top1", "own_top1_vs_default", "task", "task_vs_default")
            ]
            lines.append(f"| {r['rule']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m logo_core.ideas", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="adapters.yaml")
    p.add_argument("--cache", default="runs/lab")
    p.add_argument("--out", default="docs/lab")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--background", type=int, nargs="+", default=[12, 24], help="training prompts a task")
    p.add_argument("--confidence", action="store_true", help="also the confidence rerank (generates)")
    args = p.parse_args(argv)
    from .loading import load
    from .registry import load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    cfg = load_config(args.config)
    loaded = load(cfg.base_model)
    lab = build(cfg, loaded, Path(args.cache), max(args.background))
    rows = score_ideas(lab, default_setting(cfg), args.background, max(args.background))
    conf = None
    if args.confidence:
        from .engine import LoGoEngine

        conf = confidence_rows(
            confidence(LoGoEngine.from_config(args.config), [lab.prompts[i] for i in lab.index["dev"]])
        )
    header = (
        f"# Routing ideas beside the lab (dev only)\n\nPool sha256 {L.pool_hash(cfg)}; default "
        f"`{default_setting(cfg).name}`; dev = the lab's 10 a task, dev2 = {DEV2_N} a task (seed {DEV2_SEED}); "
        f"95% bootstrap intervals. `python -m logo_core.ideas --out {args.out}"
        f"{' --confidence' if args.confidence else ''}` ({time.perf_counter() - t0:.0f} s)."
    )
    text = markdown(rows, conf, header)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ideas.md").write_text(text)
    (out / "ideas.json").write_text(json.dumps({"probe": rows, "confidence": conf}, indent=0) + "\n")
    print(text)


if __name__ == "__main__":
    main()
