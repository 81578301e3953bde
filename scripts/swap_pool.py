"""Ship the retrained pool: assets/pool_next/ (written by `make pool`) becomes assets/adapters/.

Refuses until every adapter task of the suite has a finished adapter there. Then: each adapter replaces
the shipped one of its task, adapters whose task left the suite are deleted (their adapters.yaml entries
too), adapters.yaml's `unseen_examples:` are rewritten from the tasks and each adapter's examples are
picked among its task's training prompts (`scripts/pick_examples.py`: those it answers right), the loss curves
move to docs/pool_losses.jsonl, the scores that `python -m logo_core.tasks.check --pool assets/pool_next --out
assets/pool_next/scores.json` made while the pool trained join docs/pool_scores.json (the check of `make pool-ship`
reuses them: same adapter files), and the shipped background calibration is recomputed for the new weights.

    python scripts/swap_pool.py
    python scripts/swap_pool.py --keep-shipped   # before `make pool`, when the suite changed only a few tasks

`--keep-shipped` seeds assets/pool_next/ with the shipped adapters of the tasks that stay in the suite, with their
loss curves and scores, so that `make pool` trains only the tasks that are new (the kept ones must have been trained
with the recipe that `make pool` uses: their loss rows name it, it is printed and written beside each kept adapter,
and `make pool` refuses a folder of another recipe).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from logo_core.registry import load_config  # noqa: E402
from logo_core.tasks import adapter_tasks  # noqa: E402
from logo_core.train import RECIPE_FILE, register, round_robin, trained_recipe  # noqa: E402


def merge_scores(new: Path, into: Path) -> int:
    """Put the rows of `new` (a `tasks.check --out` file) into `into`, replacing rows of the same task; rows of
    another `n` are dropped (the check would not reuse them). Returns how many rows came from `new`."""
    if not new.is_file():
        return 0
    fresh = json.loads(new.read_text())
    merge_scores_rows(into, fresh["n"], fresh["rows"])
    return len(fresh["rows"])


def keep_shipped(shipped: Path, nxt: Path, losses: Path, scores: Path) -> list[str]:
    """Copy the shipped adapters of tasks still in the suite into `nxt` (one already there is left alone), with their
    rows of the loss log and the score file. Returns the tasks copied."""
    names = {t.name for t in adapter_tasks()}
    kept = []
    for name in sorted(names):
        src, dst = shipped / name, nxt / name
        if (src / "adapter_model.safetensors").is_file() and not dst.exists():
            shutil.copytree(src, dst)
            kept.append(name)
    rows = [json.loads(line) for line in losses.read_text().splitlines()] if losses.is_file() else []
    with open(nxt / "losses.jsonl", "a", encoding="utf-8") as f:
        for row in rows:
            if row["task"] in kept:
                f.write(json.dumps(row) + "\n")
                if "recipe" in row and trained_recipe(nxt / row["task"]) is None:  # so `make pool` checks it
                    (nxt / row["task"] / RECIPE_FILE).write_text(json.dumps({"recipe": row["recipe"]}) + "\n")
    if scores.is_file():
        old = json.loads(scores.read_text())
        rows_kept = [r for r in old["rows"] if r["task"] in kept]
        merge_scores_rows(nxt / "scores.json", old["n"], rows_kept)
    recipes = sorted({r.get("recipe", "?") for r in rows if r["task"] in kept})
    print(
        f"kept {len(kept)} shipped adapters in {nxt} (trained with {', '.join(recipes) or 'no logged recipe'}); "
        f"{len(names) - len(list(nxt.glob('*/adapter_model.safetensors')))} left to train"
    )
    return kept


def merge_scores_rows(into: Path, n: int, rows: list[dict]) -> None:
    """Add `rows` (scored on `n` prompts) to the score file `into`, keeping its rows of other tasks."""
    old = json.loads(into.read_text()) if into.is_file() else {"n": n, "rows": []}
    by_task = {r["task"]: r for r in old["rows"]} if old["n"] == n else {}
    by_task |= {r["task"]: r for r in rows}
    into.write_text(json.dumps({"n": n, "rows": list(by_task.values())}, indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Ship assets/pool_next/ as the pool, or seed it with the shipped adapters.")
    p.add_argument(
        "--keep-shipped",
        action="store_true",
        help="copy the shipped adapters of tasks still in the suite into assets/pool_next/ (then `make pool` trains "
        "only the new tasks) instead of shipping",
    )
    args = p.parse_args(argv)
    nxt, shipped, config = ROOT / "assets" / "pool_next", ROOT / "assets" / "adapters", ROOT / "adapters.yaml"
    if args.keep_shipped:
        nxt.mkdir(parents=True, exist_ok=True)
        keep_shipped(shipped, nxt, ROOT / "docs" / "pool_losses.jsonl", ROOT / "docs" / "pool_scores.json")
        return 0
    tasks = round_robin(adapter_tasks())
    missing = [t.name for t in tasks if not (nxt / t.name / "adapter_model.safetensors").is_file()]
    if missing:
        print(f"not yet: {len(missing)} of {len(tasks)} adapters are missing from {nxt}: {', '.join(missing)}")
        return 1
    names = {t.name for t in tasks}
    for spec in load_config(config).adapters:
        if spec.name not in names:
            shutil.rmtree(shipped / spec.name, ignore_errors=True)
            print(f"retired {spec.name}")
    for t in tasks:
        shutil.rmtree(shipped / t.name, ignore_errors=True)
        shutil.move(str(nxt / t.name), str(shipped / t.name))
        register(t, shipped / t.name, config, keep=names)
    if (nxt / "losses.jsonl").is_file():
        shutil.move(str(nxt / "losses.jsonl"), str(ROOT / "docs" / "pool_losses.jsonl"))
    scored = merge_scores(nxt / "scores.json", ROOT / "docs" / "pool_scores.json")
    shutil.rmtree(nxt)
    print(f"{scored} adapters' scores made while training kept in docs/pool_scores.json")
    print(f"shipped {len(tasks)} adapters; picking their examples, then the background calibration ...")
    return subprocess.call([sys.executable, str(ROOT / "scripts" / "pick_examples.py")]) or subprocess.call(
        [sys.executable, str(ROOT / "scripts" / "ship_calibration.py")]
    )


if __name__ == "__main__":
    sys.exit(main())
