"""Pick each adapter's example prompts in adapters.yaml: training-split prompts its own adapter answers right.

The app's Examples show each adapter's first example and the visitor sees its answer, so an example that its
own adapter gets wrong teaches nothing about routing (issue 22). Candidates are the task's first `--candidates`
training-split prompts (`Task.example_candidates`, the sample `Task.example_prompts` takes its prompts from);
each adapter answers them alone, greedy, and the first three it answers right (the task's metric at its top)
become its examples, in the candidates' order. An adapter with fewer right keeps its wrong ones after them and
is printed. The examples are also the background prompts of the calibration, so run
`scripts/ship_calibration.py` afterwards (`scripts/swap_pool.py` does both). How well each adapter does on
prompts nobody picked is docs/pool.md's table, not this.

    python scripts/pick_examples.py [--candidates 12]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from logo_core.engine import LoGoEngine  # noqa: E402
from logo_core.eval import Runner, max_tokens  # noqa: E402
from logo_core.registry import load_config  # noqa: E402
from logo_core.tasks import TASKS, Task  # noqa: E402
from logo_core.tasks.base import Example  # noqa: E402
from logo_core.train import register  # noqa: E402


def pick(task: Task, exs: list[Example], answers: list[str], k: int = 3) -> tuple[list[str], int]:
    """The first k prompts answered right, then (if fewer) the first wrong ones; and how many were right."""
    right = [task.score(a, ex.answer) >= 100.0 for ex, a in zip(exs, answers, strict=True)]
    chosen = [ex.prompt for ex, ok in zip(exs, right) if ok] + [ex.prompt for ex, ok in zip(exs, right) if not ok]
    return chosen[:k], sum(right)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/pick_examples.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "adapters.yaml"))
    p.add_argument(
        "--candidates", type=int, default=Task.EXAMPLE_CANDIDATES, help="Training-split prompts tried per adapter."
    )
    args = p.parse_args(argv)
    config = Path(args.config)
    engine = LoGoEngine.from_config(config)
    specs = [s for s in load_config(config).adapters if s.name in TASKS and s.name in engine.adapters]
    rows = [(TASKS[s.name], ex) for s in specs for ex in TASKS[s.name].example_candidates(args.candidates)]
    jobs = [(ex.prompt, {task.name: 1.0}, max_tokens([ex], engine.tokenizer)) for task, ex in rows]
    answers = Runner(engine, batch_size=48).run(jobs, "own adapters")
    short = 0
    for i, spec in enumerate(specs):
        task = TASKS[spec.name]
        mine = slice(i * args.candidates, (i + 1) * args.candidates)
        exs, ans = [ex for _, ex in rows[mine]], answers[mine]
        chosen, n_right = pick(task, exs, ans)
        if n_right < 3:
            short += 1
            print(f"{spec.name}: only {n_right} of {args.candidates} candidates answered right")
        register(task, config.parent / spec.path, config, examples=chosen)
    print(f"examples picked for {len(specs)} adapters; {short} with fewer than 3 right")
    return 0


if __name__ == "__main__":
    sys.exit(main())
