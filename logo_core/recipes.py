"""Choose the pool's training recipe on dev prompts: train a few tasks with each recipe, score each adapter.

Every adapter of the pool gets one recipe (see `train.py`), so the search trains the weakest task
of several families under each candidate and compares mean dev score against training cost. Dev
items (`Task.split_of`) are never trained on and never used for the test figures. Each (recipe,
task) result is cached in a JSON file keyed by both, so the search resumes where it stopped.

Example:
    python -m logo_core.recipes --tasks number_words_de,translit_bg,deaccent_pl,case_constant \\
        --recipes "steps=50 lr=2e-3" "steps=150 lr=2e-3" --n-dev 24 --out docs/pool_recipes.json --doc docs/pool.md
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


def parse_recipe(text: str, base: argparse.Namespace) -> argparse.Namespace:
    """`"steps=150 lr=2e-3 schedule=cosine"` -> the trainer's arguments with those fields replaced."""
    from .train import parse_args

    overrides = dict(part.split("=", 1) for part in text.split())
    argv = []
    for key, value in overrides.items():
        flag = f"--{key.replace('_', '-')}"
        if key in ("bf16",):
            argv += [flag] if value.lower() in ("1", "true", "yes") else []
        else:
            argv += [flag, value]
    args = parse_args(argv + ["--threads", str(base.threads)])
    if "bf16" not in overrides:
        args.bf16 = True  # the search runs in bf16 unless a recipe says otherwise (measured: same scores)
    return args


def dev_scores(model, tok, task, n: int, split: str = "dev") -> list[float]:
    """Per-prompt scores (0-100) of `model` (an adapter applied) on the first `n` dev prompts of `task` (greedy):
    the one measurement the recipe search and `scripts/dev_scores.py` share. `split="test"` only measures the
    shipped pool more precisely than the evaluation's 20 test prompts a task; nothing is chosen on it."""
    from .tasks.check import generate

    examples = task.examples(split, n)
    answers = generate(model, tok, [ex.prompt for ex in examples], max_new_tokens=32)
    return [task.score(a, ex.answer) for a, ex in zip(answers, examples, strict=True)]


def score_dev(task_name: str, adapter_dir: Path, n: int) -> float:
    """Mean dev score of one adapter alone (PEFT, greedy), on `n` dev prompts of its own task."""
    from peft import PeftModel

    from .loading import load_base
    from .tasks import get_task

    base, tok = load_base()
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    return sum(dev_scores(model, tok, get_task(task_name), n)) / n


DATA = "items-v4"  # item spaces and rules: v1 the first pool's, v2 wider names (docs/pool.md), v3 Russian by
# unidecode (then Russian left the suite), v4 cardinal number words draw their number of digits first


def run(tasks: list[str], recipes: list[str], n_dev: int, out: Path, work: Path, threads: int) -> dict:
    """Train and score every (recipe, data, task) not yet in `out`; returns the whole cache."""
    from .tasks import get_task
    from .train import recipe_key, train_one

    cache = json.loads(out.read_text()) if out.is_file() else {}
    base = argparse.Namespace(threads=threads)
    for text in recipes:
        args = parse_recipe(text, base)
        key = recipe_key(args)
        for name in tasks:
            cell = f"{key}/{DATA}/{name}"
            if cell in cache and cache[cell]["n_dev"] == n_dev:
                continue
            args.out = str(work / DATA / key)
            t0 = time.perf_counter()
            loss = train_one(get_task(name), args)
            seconds = time.perf_counter() - t0
            dev = score_dev(name, work / DATA / key / name, n_dev)
            cache[cell] = dict(
                recipe=key, data=DATA, task=name, n_dev=n_dev, dev=dev, seconds=seconds, loss=loss, threads=threads
            )
            log.info("%s: dev %.1f, loss %.3f, %.0f s", cell, dev, loss, seconds)
            out.write_text(json.dumps(cache, indent=1) + "\n")
    return cache


def from_pool(pool: Path, tasks: list[str] | None, n_dev: int, out: Path) -> dict:
    """Score finished adapters of a pool folder (`make pool`'s) on dev as cells of the recipe their loss log names,
    without training them again: training is deterministic (translit_uk and inflect_plural of the 300-step pool
    reproduce the search's cells to the digit), so the pool's own adapters are its recipe's cells."""
    cache = json.loads(out.read_text()) if out.is_file() else {}
    logs = {}
    for line in (pool / "losses.jsonl").read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            logs[record["task"]] = record  # a task trained twice: the later run is the adapter on disk
    for name, record in logs.items():
        if (tasks and name not in tasks) or not (pool / name / "adapter_model.safetensors").is_file():
            continue
        cell = f"{record['recipe']}/{DATA}/{name}"
        if cell in cache and cache[cell]["n_dev"] == n_dev:
            continue
        dev, last = score_dev(name, pool / name, n_dev), record["losses"][-10:]
        cache[cell] = dict(
            recipe=record["recipe"], data=DATA, task=name, n_dev=n_dev, dev=dev, seconds=record["seconds"],
            loss=sum(last) / len(last), threads=record["threads"],
        )  # fmt: skip
        log.info("%s (from %s): dev %.1f", cell, pool, dev)
        out.write_text(json.dumps(cache, indent=1) + "\n")
    return cache


def table(cache: dict) -> str:
    """Markdown: one row per (recipe, item spaces), mean dev score over the searched tasks, per-task scores, cost."""
    recipes: dict[str, list[dict]] = {}
    for cell in cache.values():
        recipes.setdefault(f"`{cell['recipe']}` {cell['data']}", []).append(cell)
    tasks = sorted({c["task"] for c in cache.values()})
    lines = [
        "| recipe, item spaces | " + " | ".join(tasks) + " | mean dev | worst dev | s / adapter |",
        "|---|" + "---:|" * (len(tasks) + 3),
    ]
    for key, cells in recipes.items():
        by = {c["task"]: c for c in cells}
        scores = [by[t]["dev"] for t in tasks if t in by]
        secs = sum(c["seconds"] for c in cells) / len(cells)
        row = " | ".join(f"{by[t]['dev']:.1f}" if t in by else "" for t in tasks)
        part = "" if len(scores) == len(tasks) else f" ({len(scores)} of {len(tasks)} tasks)"
        mean, worst = f"{sum(scores) / len(scores):.1f}{part}", f"{min(scores):.1f}{part}"
        lines.append(f"| {key} | {row} | {mean} | {worst} | {secs:.0f} |")
    n = {c["n_dev"] for c in cache.values()}
    note = "seconds are wall time on this machine beside other jobs (compare within one run only)."
    lines += ["", f"Dev prompts per task: {', '.join(map(str, sorted(n)))}; {note}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m logo_core.recipes", description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default=None, help="Comma-separated task names (with an adapter).")
    p.add_argument("--recipes", nargs="+", default=None, help='Each "field=value ..." over train.py\'s flags.')
    p.add_argument(
        "--pool",
        default=None,
        help="Instead of training: score the finished adapters of this folder (e.g. assets/pool_next) as cells of "
        "the recipe their loss log names (all of them, or those of --tasks).",
    )
    p.add_argument("--n-dev", type=int, default=24)
    p.add_argument("--out", default="docs/pool_recipes.json", help="Cache and result file.")
    p.add_argument("--work", default="runs/recipes", help="Where the searched adapters are written.")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--doc", default=None, help="Fill the `recipes` section of this Markdown file.")
    args = p.parse_args(argv)
    import torch

    from .tasks.check import fill

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    tasks = None if args.tasks is None else [t.strip() for t in args.tasks.split(",")]
    if args.pool is not None:
        cache = from_pool(Path(args.pool), tasks, args.n_dev, Path(args.out))
    elif tasks and args.recipes:
        cache = run(tasks, args.recipes, args.n_dev, Path(args.out), Path(args.work), args.threads)
    else:
        p.error("give --tasks and --recipes to search, or --pool DIR to score a pool's adapters")
    text = table(cache)
    print(text)
    if args.doc:
        fill(Path(args.doc), {"recipes": text})


if __name__ == "__main__":
    main()
