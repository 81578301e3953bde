"""Does each trained adapter learn its task? Base vs adapter on the task's own test prompts.

A quick sanity check of the pool, not the routing evaluation (that is `logo_core.eval`): every
adapter is applied alone, greedy decoding, on test items it never saw, and its score is split by
phrasing, so the `test_templates` that training never used show whether it learnt the task or
the template. Writes a JSON file and a Markdown table (docs/pool.md includes the table).

Example:
    python -m logo_core.tasks.check --n 20 --out docs/pool_scores.json --table docs/pool_scores.md
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import logging
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from . import FAMILIES, TASKS, Task

log = logging.getLogger(__name__)


def generate(model, tok, prompts: list[str], max_new_tokens: int, batch_size: int = 24) -> list[str]:
    """Greedy answers to chat-templated prompts, batched with left padding (as the trainer encodes them)."""
    import torch

    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        texts = [
            tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
            for p in prompts[i : i + batch_size]
        ]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            ids = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
            )  # fmt: skip
        out += tok.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return out


def _digest(path: str | None) -> str | None:
    """sha256 of an adapter's weights (None without an adapter): identifies what was scored."""
    if path is None:
        return None
    return hashlib.sha256((Path(path) / "adapter_model.safetensors").read_bytes()).hexdigest()[:16]


def _scores(task: Task, examples, answers: list[str]) -> dict[str, float]:
    """Mean score over all prompts and over those phrased with a test-only template."""
    scores = [task.score(a, ex.answer) for a, ex in zip(answers, examples)]
    held = [s for s, ex in zip(scores, examples) if ex.template in task.test_templates]
    return {"all": sum(scores) / len(scores), "test_only_phrasing": sum(held) / len(held) if held else float("nan")}


def check(
    config: Path,
    n: int,
    max_new_tokens: int,
    only: list[str] | None = None,
    done: dict[str, dict] | None = None,
    on_row: Callable[[dict], None] | None = None,
    pool: Path | None = None,
) -> list[dict]:
    """Score base and adapter on `n` test prompts of each pool adapter's task (and base on unseen tasks).

    Args:
        done: rows of an earlier run by task; a row is reused when its `n`, adapter file hash and test
            prompts (a hash of them and their answers: a changed generator re-scores) match, so the check can
            run in slices while the pool is still training.
        on_row: called with each new row (the CLI saves after every task, so a stopped run keeps its work).
        pool: score the finished adapters of this folder (`make pool`'s assets/pool_next/, one folder a task)
            instead of the config's: the retrained pool is checked while it trains, and since a row is keyed by
            its adapter file's hash, the check after the swap reuses these rows.

    Returns:
        one row per task: name, family, unseen, base, adapter (None for unseen tasks), and the
        same two on prompts phrased with test-only templates.
    """
    from peft import PeftModel

    from ..loading import load_base
    from ..registry import load_config

    cfg = load_config(config)
    base, tok = load_base()
    base.eval()
    if pool is None:
        paths = {a.name: str(cfg.adapter_dir(a)) for a in cfg.adapters if a.name in TASKS}
    else:
        paths = {t: str(pool / t) for t in TASKS if (pool / t / "adapter_model.safetensors").is_file()}
    paths = {t: v for t, v in paths.items() if only is None or t in only}
    tasks = [
        t
        for t in TASKS.values()
        if (only is None or t.name in only) and ((t.unseen and pool is None) or t.name in paths)
    ]
    peft = None
    rows = []
    for task in tasks:
        path = paths.get(task.name)
        digest = _digest(path)
        examples = task.examples("test", n)
        prompts = [ex.prompt for ex in examples]
        items = hashlib.sha256(json.dumps([[ex.prompt, ex.answer] for ex in examples]).encode()).hexdigest()[:16]
        old = (done or {}).get(task.name)
        if old and (old.get("n"), old.get("adapter_sha"), old.get("prompts_sha")) == (n, digest, items):
            rows.append(old)
            continue
        t0 = time.perf_counter()
        if peft is None:
            answers = generate(base, tok, prompts, max_new_tokens)
        else:  # PEFT injected its layers into `base` in place: switch them off for the base answers
            with peft.disable_adapter():
                answers = generate(peft, tok, prompts, max_new_tokens)
        row = {"task": task.name, "family": task.family, "unseen": task.unseen, "n": n, "adapter_sha": digest}
        row["prompts_sha"] = items
        row.update({f"base_{k}": v for k, v in _scores(task, examples, answers).items()})
        row["sample"] = {"prompt": prompts[0], "answer": examples[0].answer, "base": answers[0]}
        if path is not None:
            if peft is None:
                peft = PeftModel.from_pretrained(base, path, adapter_name=task.name).eval()
            else:
                peft.load_adapter(path, adapter_name=task.name)
            peft.set_adapter(task.name)
            answers = generate(peft, tok, prompts, max_new_tokens)
            row.update({f"adapter_{k}": v for k, v in _scores(task, examples, answers).items()})
            row["sample"]["adapter"] = answers[0]
        log.info("%s: %s (%.0f s)", task.name, {k: round(v, 1) for k, v in row.items() if isinstance(v, float)},
                 time.perf_counter() - t0)  # fmt: skip
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def table(rows: list[dict], n: int) -> str:
    """Markdown table of the rows, grouped by family (suite order)."""

    def f(v) -> str:
        return "" if v is None or v != v else f"{v:.0f}"

    lines = [
        f"Scores (0-100) on {n} test prompts per task, greedy; `test-only` = the prompts among them phrased "
        "with a template never used in training. Unseen tasks have no adapter: base only.",
        "",
        "| family | task | metric | base | adapter | gain | base, test-only | adapter, test-only |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        a = r.get("adapter_all")
        gain = None if a is None else a - r["base_all"]
        name = f"{r['task']} (unseen)" if r["unseen"] else r["task"]
        lines.append(
            f"| {r['family']} | {name} | {TASKS[r['task']].metric} | {f(r['base_all'])} | {f(a)} | "
            f"{'' if gain is None else f'{gain:+.0f}'} | {f(r['base_test_only_phrasing'])} | "
            f"{f(r.get('adapter_test_only_phrasing'))} |"
        )
    seen = [r for r in rows if "adapter_all" in r]
    if seen:
        mean = {k: sum(r[k] for r in seen) / len(seen) for k in ("base_all", "adapter_all")}
        wins = sum(r["adapter_all"] > r["base_all"] for r in seen)
        lines += ["", f"Mean over the {len(seen)} adapters: base {mean['base_all']:.1f}, adapter "
                  f"{mean['adapter_all']:.1f}; the adapter beats the base on {wins} of {len(seen)} tasks."]  # fmt: skip
    return "\n".join(lines) + "\n"


def suite_table(adapters: Path = Path("assets/adapters")) -> str:
    """Markdown: each family's tasks (held-out ones marked), data source with installed versions, phrasings,
    and the adapter tasks that have no trained adapter in `adapters` yet."""

    def versions(source: str) -> str:
        names = re.findall(r"[a-z][a-z0-9]+(?= \(|,|$)", source)
        for name in names:
            source = source.replace(name, f"{name} {importlib.metadata.version(name)}", 1)
        return source

    lines = ["| family | tasks with an adapter | held out (no adapter) | data | metric |", "|---|---|---|---|---|"]
    for fam in FAMILIES:
        tasks = fam.tasks()
        seen = ", ".join(t.name for t in tasks if not t.unseen)
        held = ", ".join(t.name for t in tasks if t.unseen)
        held = f"**whole family**: {held}" if fam.whole_unseen else held
        lines.append(f"| {fam.name} | {seen} | {held} | {versions(fam.source)} | {fam.metric} |")
    todo = [
        t.name
        for t in TASKS.values()
        if not t.unseen and not (adapters / t.name / "adapter_model.safetensors").is_file()
    ]
    if todo:  # a pool still being trained says so
        lines += [
            "",
            f"**Not trained yet ({len(todo)} of {sum(not t.unseen for t in TASKS.values())}):** {', '.join(todo)}.",
        ]
    lines += ["", "Phrasings per family (`{x}` = the item, `{name}` = the member; *italic* = test prompts only):", ""]
    for fam in FAMILIES:
        phr = [f"`{t}`" for t in fam.templates] + [f"*`{t}`*" for t in fam.test_templates]
        lines.append(f"- **{fam.name}**: {'; '.join(phr)}")
    return "\n".join(lines) + "\n"


def training_table(log_file: Path) -> str:
    """Markdown: per-adapter training time and final loss, from the trainer's loss log (JSON lines, one
    per adapter: its recipe, seconds, threads and loss curve) or, for the first pool, its text log."""
    if log_file.suffix == ".jsonl":
        runs = {r["task"]: r for r in map(json.loads, log_file.read_text(encoding="utf-8").splitlines()) if r}
        found = [
            (
                t,
                f"{r['seconds']:.0f}" if r["seconds"] >= 10 else f"{r['seconds']:.1f}",
                f"{statistics.fmean(r['losses'][-10:]):.4f}",
            )
            for t, r in runs.items()
        ]
        recipes = sorted({r["recipe"] for r in runs.values()})
        threads = sorted({r.get("threads", 1) for r in runs.values()})
        devices = sorted({r["device"] for r in runs.values() if r.get("device")})
        where = (  # `multilora` trains every adapter at once: an adapter's seconds are its share of that run
            f"trained together on {', '.join(devices)} (seconds: each adapter's share of the batched run)"
            if devices
            else f"{'/'.join(map(str, threads))} CPU threads"
        )
        note = f"recipe {', '.join(f'`{x}`' for x in recipes)}; {where}"
    else:
        found = re.findall(r"(\w+): trained in (\d+) s, final loss ([\d.]+)", log_file.read_text(errors="replace"))
        note = "1 CPU thread each"
    if not found:
        return ""
    total = sum(float(s) for _, s, _ in found)
    lines = [
        f"{len(found)} adapters, {total:.0f} s of training in all ({total / 3600:.2f} h summed over adapters; {note}).",
        "",
        "| adapter | seconds | final loss (mean of the last 10 steps) |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {s} | {loss} |" for name, s, loss in found]
    return "\n".join(lines) + "\n"


def loss_figure(log_file: Path):
    """The loss curve of every adapter in a trainer's loss log (JSON lines), coloured by family."""
    from ..plots import loss_curves

    runs = {r["task"]: r["losses"] for r in map(json.loads, log_file.read_text(encoding="utf-8").splitlines()) if r}
    families = {t: TASKS[t].family if t in TASKS else "retired" for t in runs}
    return loss_curves(runs, families, title="Training loss of every adapter (answer tokens, 10-step mean)")


def targets_table(
    results: Path,
    dev_scores: Path,
    adapters: Path = Path("assets/adapters"),
    bar: float = 70.0,
    test_scores: Path | None = None,
) -> str:
    """Markdown: issue 22's figures from one evaluation run (`make eval`'s results.json): the oracle (each seen
    task's test prompts answered by its own adapter) on average and per task, the base model, the pool's size.

    Beside each task under `bar` go its scores from `scripts/dev_scores.py`: on 60 dev prompts and, where
    `test_scores` is given, on 60 test prompts (`--split test`, the evaluation's 20 among them). A task the model
    does not learn is low on all three; a low draw of 20 prompts is low on one. Rows measured on other weights
    than the shipped ones are left out ("not scored")."""
    import torch

    from ..intervals import bootstrap, fmt

    r = json.loads(results.read_text(encoding="utf-8"))
    n, seen, per = r["n_test"], r["seen_tasks"], r["per_prompt"]["seen"]
    if len(per["oracle"]) != n * len(seen):
        raise ValueError(f"{results}: {len(per['oracle'])} oracle answers for {len(seen)} tasks x {n} prompts")
    own = {t: torch.tensor(per["oracle"][i * n : (i + 1) * n], dtype=torch.float64) for i, t in enumerate(seen)}

    digests = {t: _digest(str(adapters / t)) for t in own}  # the shipped weights, hashed once

    def shipped(path: Path | None) -> dict[str, torch.Tensor]:
        rows = json.loads(path.read_text(encoding="utf-8")) if path is not None and path.is_file() else {}
        return {
            t: torch.tensor(row["scores"], dtype=torch.float64)
            for t, row in rows.items()
            if t in own and row.get("digest") == digests[t]
        }

    dev, more = shipped(dev_scores), shipped(test_scores)
    count = {name: len(next(iter(x.values()))) if x else "" for name, x in (("test", more), ("dev", dev))}
    size = sum(f.stat().st_size for f in adapters.rglob("*.safetensors")) / 1e6
    under = sorted((t for t in seen if own[t].mean() < bar), key=lambda t: own[t].mean())
    lines = [
        f"One evaluation run (docs/eval/results.json, pool {r['pool']}): {n} test prompts per seen task, each answered "
        "by its own adapter (the oracle); 95% bootstrap intervals over prompts.",
        "",
        "| figure | measured | target |",
        "|---|---|---|",
        f"| oracle, average over {len(seen)} tasks | {fmt(bootstrap(torch.cat(list(own.values())), scale=1))} | >= 90 |",
        f"| oracle, tasks under {bar:.0f} | {len(under)} of {len(seen)} | none |",
        f"| base model, average | {fmt(bootstrap(torch.tensor(per['base']), scale=1))} | stays low |",
        f"| pool on disk | {size:.0f} MB | <= 60 MB |",
    ]
    if len(more) == len(seen):  # every task measured again on more test prompts
        low = sorted((t for t in seen if more[t].mean() < bar), key=lambda t: more[t].mean())
        same = sum(int(torch.isclose(more[t][:n], own[t]).sum()) for t in seen)  # its first n are the evaluation's
        lines += [
            f"| oracle, average on {count['test']} test prompts per task (PEFT, `scripts/dev_scores.py --split test`; the "
            f"evaluation's {n} among them, scored the same on {same} of {n * len(seen)}) | "
            f"{fmt(bootstrap(torch.cat(list(more.values())), scale=1))}; under {bar:.0f}: "
            f"{', '.join(f'{t} {more[t].mean():.1f}' for t in low) or 'none'} | |",
        ]
        under += [t for t in low if t not in under]
    lines += [
        "",
        f"| task under {bar:.0f} | family | the evaluation's {n} test prompts | {count['test']} test prompts "
        f"| {count['dev']} dev prompts |",
        "|---|---|---:|---:|---:|",
    ]
    for t in under:
        cells = [fmt(bootstrap(x[t], scale=1)) if t in x else "not scored" for x in (own, more, dev)]
        lines.append(f"| {t} | {TASKS[t].family} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def fill(doc: Path, sections: dict[str, str]) -> None:
    """Replace `<!-- BEGIN name -->...<!-- END name -->` blocks of `doc` with generated text."""
    text = doc.read_text(encoding="utf-8")
    for name, body in sections.items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.DOTALL)
        if not pattern.search(text):
            raise ValueError(f"{doc} has no `<!-- BEGIN {name} -->` section; add the markers first")
        text = pattern.sub(lambda m, body=body: f"{m.group(1)}{body}{m.group(2)}", text)
    doc.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m logo_core.tasks.check", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="adapters.yaml")
    p.add_argument("--n", type=int, default=20, help="Test prompts per task.")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--tasks", default=None, help="Comma-separated task names (default: all).")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="JSON file for the rows; rows already there are reused.")
    p.add_argument("--table", default=None, help="Markdown file for the table.")
    p.add_argument("--doc", default=None, help="Fill the suite/training/scores sections of this Markdown file.")
    p.add_argument(
        "--train-log", default=None, help="The trainer's loss log (.jsonl) or text log, for the training table."
    )
    p.add_argument("--suite-only", action="store_true", help="Only fill the suite section (no model is run).")
    p.add_argument(
        "--targets",
        default=None,
        help="Only fill the `targets` section of --doc from this evaluation's results.json (no model is run).",
    )
    p.add_argument(
        "--pool",
        default=None,
        help="Score the finished adapters of this folder (e.g. assets/pool_next while `make pool` trains) "
        "instead of the config's; unseen tasks are skipped.",
    )
    args = p.parse_args(argv)
    if args.suite_only:
        fill(Path(args.doc), {"suite": suite_table()})
        return
    if args.targets:
        lab = Path("docs/lab")
        text = targets_table(Path(args.targets), lab / "dev_scores.json", test_scores=lab / "test_scores.json")
        fill(Path(args.doc), {"targets": text})
        return
    import torch  # here, so the tables above import without torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    only = None if args.tasks is None else [t.strip() for t in args.tasks.split(",")]
    done: dict[str, dict] = {}
    if args.out and Path(args.out).is_file():
        done = {r["task"]: r for r in json.loads(Path(args.out).read_text())["rows"]}
    merged = dict(done)  # rows of tasks outside `--tasks` are kept

    def save(row: dict) -> None:
        merged[row["task"]] = row
        if args.out:
            rows = [merged[t] for t in TASKS if t in merged]
            Path(args.out).write_text(json.dumps({"n": args.n, "rows": rows}, indent=1, ensure_ascii=False) + "\n")

    pool = None if args.pool is None else Path(args.pool)
    check(Path(args.config), args.n, args.max_new_tokens, only, done, on_row=save, pool=pool)
    rows = [merged[t] for t in TASKS if t in merged]
    text = table(rows, args.n)
    print(text)
    if args.table:
        Path(args.table).write_text(text)
    if args.doc:
        sections = {"suite": suite_table(), "scores": text}
        if args.train_log:
            sections["training"] = training_table(Path(args.train_log))
            if args.train_log.endswith(".jsonl"):  # the loss curves beside the doc
                fig = loss_figure(Path(args.train_log))
                stem = Path(args.doc).with_name("pool_losses")
                fig.write_html(f"{stem}.html", include_plotlyjs="cdn")
                try:
                    fig.write_image(f"{stem}.png", width=1000, height=600)
                except Exception as e:  # kaleido needs a Chrome; the HTML is written
                    log.warning("could not write %s.png (%s)", stem, e)
        fill(Path(args.doc), sections)


if __name__ == "__main__":
    main()
