"""Every shipped adapter alone on `n` dev prompts of its own task, with 95% intervals (issue 22's replacement rule).

The rule for replacing a pool task within its family is written on dev: a member under `--bar` on these prompts
is a candidate for replacement (docs/pool.md, "Replacements for the Romance number words"). This scores every
adapter the same way (PEFT, greedy, `tasks.check.generate`), caches each adapter's per-prompt scores by the sha256
of its weights (a stopped run resumes; a retrained adapter is scored again) and writes a table, weakest first.

Example:
    python scripts/dev_scores.py --n 60 --doc docs/pool.md
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

log = logging.getLogger(__name__)


def score_pool(config: str, n: int, out: Path, threads: int, folder: Path | None = None, split: str = "dev") -> dict:
    """{adapter: {task, digest, scores}}: per-prompt dev scores (0-100) of each adapter alone on its own task: the
    pool's adapters, or those of `folder` (`<folder>/<task>/`, e.g. a recipe search's) instead."""
    from peft import PeftModel

    from logo_core.loading import load_base
    from logo_core.recipes import dev_scores
    from logo_core.registry import load_config
    from logo_core.tasks import TASKS
    from logo_core.tasks.check import _digest

    torch.set_num_threads(threads)
    cfg = load_config(config)
    cache = json.loads(out.read_text()) if out.is_file() else {}
    base, tok = load_base(cfg.base_model)
    model = None
    if folder is None:
        found = [(a.name, cfg.adapter_dir(a)) for a in cfg.adapters]
    else:
        found = sorted((d.name, d) for d in folder.iterdir() if (d / "adapter_model.safetensors").is_file())
    for name, path in found:
        if name not in TASKS:
            continue  # an adapter with no task of the suite: nothing to score it on
        digest = _digest(str(path))  # the key docs/pool.md's targets table matches the shipped weights by
        if cache.get(name, {}).get("digest") == digest and len(cache[name]["scores"]) == n:
            continue
        if model is None:
            model = PeftModel.from_pretrained(base, str(path), adapter_name=name).eval()
        else:
            model.load_adapter(str(path), adapter_name=name)
        model.set_adapter(name)
        task = TASKS[name]
        scores = dev_scores(model, tok, task, n, split)
        cache[name] = {"task": name, "family": task.family, "digest": digest, "scores": scores}
        if len(model.peft_config) > 1:
            model.delete_adapter(name)  # keep one adapter loaded: the next one is loaded beside it, then set
        out.write_text(json.dumps(cache, indent=0, ensure_ascii=False) + "\n")
        log.info("%s: %s %.1f on %d prompts", name, split, sum(scores) / n, n)
    return cache


def table(cache: dict, bar: float, split: str = "dev") -> str:
    """Markdown, weakest adapter first: mean score with its 95% bootstrap interval, and the rule's verdict."""
    from logo_core.intervals import bootstrap, fmt

    rows = sorted(cache.values(), key=lambda r: sum(r["scores"]) / len(r["scores"]))
    n = sorted({len(r["scores"]) for r in rows})
    lines = [
        f"Every shipped adapter alone on {', '.join(map(str, n))} dev prompts of its own task (PEFT, greedy; never "
        f"test prompts), weakest first. Under {bar:g}: a candidate for replacement within its family."
        if split == "dev"
        else f"Every shipped adapter alone on {', '.join(map(str, n))} test prompts of its own task (PEFT, greedy; "
        f"a measurement of the shipped pool, never a choice), weakest first. Under {bar:g}: marked.",
        "",
        f"| adapter | family | {split} score | under the bar |",
        "|---|---|---:|---|",
    ]
    for r in rows:
        mean = sum(r["scores"]) / len(r["scores"])
        ci = fmt(bootstrap(torch.tensor(r["scores"]) / 100))
        lines.append(f"| {r['task']} | {r['family']} | {ci} | {'yes' if mean < bar else ''} |")
    means = [sum(r["scores"]) / len(r["scores"]) for r in rows]
    lines += ["", f"Mean over {len(rows)} adapters: {sum(means) / len(means):.1f}; worst {min(means):.1f}."]
    return "\n".join(lines) + "\n"


def paired_table(cache: dict, shipped: dict) -> str:
    """Markdown: each adapter of `cache` against the one of its task in `shipped` (the shipped pool's, or another
    folder's) on the same dev prompts, paired."""
    from logo_core.intervals import fmt, paired

    lines = ["| adapter | reference | this | this - reference (paired) |", "|---|---:|---:|---:|"]
    both = [t for t in sorted(cache) if t in shipped and len(shipped[t]["scores"]) == len(cache[t]["scores"])]
    for t in both:
        a, b = torch.tensor(cache[t]["scores"]) / 100, torch.tensor(shipped[t]["scores"]) / 100
        lines.append(f"| {t} | {100 * b.mean():.1f} | {100 * a.mean():.1f} | {fmt(paired(a, b))} |")
    if both:
        a = torch.cat([torch.tensor(cache[t]["scores"]) for t in both]) / 100
        b = torch.cat([torch.tensor(shipped[t]["scores"]) for t in both]) / 100
        lines.append(f"| all {len(both)} | {100 * b.mean():.1f} | {100 * a.mean():.1f} | {fmt(paired(a, b))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="adapters.yaml")
    p.add_argument("--n", type=int, default=60, help="Prompts per task (of --split).")
    p.add_argument(
        "--split",
        choices=("dev", "test"),
        default="dev",
        help="test: the shipped pool on more test prompts than the evaluation's 20 (a measurement, never a choice; "
        "give --out and --table of their own)",
    )
    p.add_argument("--bar", type=float, default=80.0, help="The replacement rule's bar on the dev score.")
    p.add_argument("--out", default="docs/lab/dev_scores.json")
    p.add_argument("--table", default="docs/lab/dev_scores.md")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--doc", default=None, help="Also fill the `dev_scores` section of this Markdown file.")
    p.add_argument(
        "--adapters",
        default=None,
        help="Score the adapters of this folder (<folder>/<task>/) instead of the pool's, and pair each with the "
        "shipped adapter of its task in the default --out (give another --out for these)",
    )
    p.add_argument(
        "--against",
        default=None,
        help="With --adapters: pair with the scores in this JSON (another folder's --out) instead of the shipped ones",
    )
    args = p.parse_args(argv)
    defaults = Path(args.out) == Path(p.get_default("out")) or Path(args.table) == Path(p.get_default("table"))
    if args.split == "test" and (defaults or args.adapters or args.doc):
        p.error("--split test: give --out and --table of their own, without --adapters or --doc (those are dev's)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.adapters:
        if defaults:
            p.error("--adapters: give --out and --table of their own (the defaults hold the shipped pool's scores)")
        shipped = json.loads(Path(args.against or p.get_default("out")).read_text())
        cache = score_pool(args.config, args.n, Path(args.out), args.threads, Path(args.adapters))
        text = paired_table(cache, shipped)
        against = args.against or "the shipped adapters"
        Path(args.table).write_text(f"# {args.adapters} against {against} (reference), on dev\n\n{text}")
        print(text)
        return
    cache = score_pool(args.config, args.n, Path(args.out), args.threads, split=args.split)
    text = table(cache, args.bar, args.split)
    command = f"python scripts/dev_scores.py --n {args.n}" + (
        f" --split test --out {args.out} --table {args.table}" if args.split == "test" else ""
    )
    Path(args.table).write_text(f"# Shipped adapters on {args.split}\n\n`{command}`\n\n{text}")
    if args.doc:
        from logo_core.tasks.check import fill

        fill(Path(args.doc), {"dev_scores": text})
    print(text)


if __name__ == "__main__":
    main()
