"""Train the LoRA pool: one PEFT adapter per seen task, written in fp16 and added to adapters.yaml.

Every adapter gets the same recipe (steps, batch, lr, rank): LoGo routes by the size of each
adapter's output, so adapters trained with unequal intensity would be unequally loud.

The whole pool is one resumable command: a finished adapter is kept (its file exists), an
interrupted one restarts from scratch (files are written atomically), one of another recipe (its
recipe.json) stops the run, and the outer progress bar says how many are done and how long the rest
will take.

Example:
    make pool                                        # the committed pool's recipe (the Makefile's POOL_RECIPE)
    python -m logo_core.train --tasks all --threads 2   # a quick pool (the defaults: 50 steps, q/v only)
    python -m logo_core.train --tasks date_fr,money_de --force
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import random
import re
import shutil
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torch import nn

from .loading import EMBEDDED_HUB_ID, load_base
from .registry import AdapterSpec, UnseenExample, load_config, parse_config, save_config
from .tasks import TASKS, Task, adapter_tasks, get_task

log = logging.getLogger(__name__)
IGNORE = -100  # label of tokens that carry no loss (prompt, padding)


def encode(tok, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """(input ids, labels) for one example: chat-templated prompt, then answer + <|im_end|>.

    The prompt is templated exactly as at inference (`add_generation_prompt=True`), so the
    adapter learns to answer right after `<|im_start|>assistant\\n`. Loss only on the answer.
    """
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    p_ids = tok(text, add_special_tokens=False)["input_ids"]
    a_ids = tok(answer, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    return p_ids + a_ids, [IGNORE] * len(p_ids) + a_ids


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int, max_len: int) -> dict[str, torch.Tensor]:
    """Left-padded batch (B, T) with explicit position ids.

    Left padding puts every answer at the end of its row, so the LM head (a 49k-word matmul,
    ~20% of a step) only runs on the last `K` positions (`logits_to_keep`).
    """
    T = min(max(len(ids) for ids, _ in rows), max_len)
    B = len(rows)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    for b, (ids, lab) in enumerate(rows):
        ids, lab = ids[-T:], lab[-T:]  # over-long rows keep their answer (cut from the left)
        input_ids[b, T - len(ids) :] = torch.tensor(ids)
        labels[b, T - len(lab) :] = torch.tensor(lab)
        mask[b, T - len(ids) :] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids, "labels": labels}


def answer_span(labels: torch.Tensor) -> int:
    """K: the last positions whose logits the loss reads (left-padded rows: the longest answer + the token before)."""
    answer = labels != IGNORE  # (B, T)
    return int((answer.shape[1] - answer.float().argmax(-1)).max()) + 1


def answer_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over answer tokens, computing logits only where needed."""
    labels = batch["labels"]
    K = answer_span(labels)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, logits_to_keep=K).logits  # (B, K, V): positions T-K .. T-1
    # The logit at position t predicts token t + 1.
    return nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, -K + 1 :].flatten(), ignore_index=IGNORE
    )


PROBED = ("q_proj", "v_proj")  # always adapted, at the recipe's rank: what the router reads


def extra_modules(text: str) -> dict[str, int]:
    """`--extra-modules "down_proj:2,o_proj:4"` -> {module: rank}: modules adapted beside q_proj and v_proj, each
    at its own rank (PEFT's rank_pattern), with the recipe's alpha / rank kept (so the same scale)."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, rank = part.partition(":")
        if not name.isidentifier() or not rank.isdigit() or int(rank) <= 0 or name in PROBED:
            raise argparse.ArgumentTypeError(
                f"--extra-modules: {part!r} is not name:rank (e.g. down_proj:2; q_proj and v_proj are always "
                "adapted at --rank)"
            )
        if name in out:
            raise argparse.ArgumentTypeError(f"--extra-modules: {name!r} is given twice; give each module once")
        out[name] = int(rank)
    return out


def lora_model(model: nn.Module, rank: int, alpha: int, extra: dict[str, int] | None = None) -> nn.Module:
    """Wrap the base model with a fresh LoRA on q_proj and v_proj (the paper's FLAN adapters' targets), plus
    `extra` modules at their own ranks where a recipe adds them (alpha / rank kept, so every module's scale is
    the same)."""
    from peft import LoraConfig, get_peft_model

    extra = extra or {}
    missing = sorted(set(extra) - {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()})
    if missing:  # PEFT would adapt the others and quietly leave these out
        linear = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
        raise ValueError(
            f"--extra-modules: the model has no linear module named {', '.join(map(repr, missing))}; "
            f"its linear modules are {', '.join(sorted(linear))}"
        )
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=[*PROBED, *extra],
        rank_pattern=dict(extra),
        alpha_pattern={m: r * alpha / rank for m, r in extra.items()},
    )
    return get_peft_model(model, config)


def training_examples(task: Task, n: int, seed: int, extra_share: float = 0.0) -> list:
    """The `n` examples an adapter trains on: its task's train split (dev and test items are never trained on),
    `extra_share` of them replaced by the task's train-only pseudo-items where it has them (`--extra-train`)."""
    extra = task.extra_examples(round(extra_share * n), seed=seed)
    return task.examples("train", n - len(extra), seed=seed, distinct=False) + extra


def train_one(task: Task, args: argparse.Namespace) -> float:
    """Train one adapter and write it atomically to `args.out/<task>`. Returns the final mean loss."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    base, tok = load_base()
    model = lora_model(base, args.rank, args.alpha, args.extra_modules)
    model.train()
    examples = training_examples(task, args.steps * args.batch_size, args.seed, args.extra_train)
    data = [encode(tok, ex.prompt, ex.answer) for ex in examples]
    random.Random(args.seed).shuffle(data)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, args.steps, args.schedule))
    losses: list[float] = []
    bar = tqdm(range(args.steps), desc=task.name, unit="step", leave=False)
    for step in bar:
        batch = collate(data[step * args.batch_size : (step + 1) * args.batch_size], tok.pad_token_id, args.max_len)
        # bf16 autocast: matmuls in bf16 (fast on CPUs with AVX512-BF16/AMX), weights and optimiser in fp32.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = answer_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
    save_adapter(model, Path(args.out) / task.name, recipe_key(args))
    if args.loss_log:  # the loss curve, one line per adapter, for docs/pool.md's plot
        with open(args.loss_log, "a", encoding="utf-8") as f:
            f.write(
                json.dumps(
                    {
                        "task": task.name,
                        "recipe": recipe_key(args),
                        "seconds": round(time.perf_counter() - t0, 1),
                        "threads": args.threads,
                        "losses": [round(x, 4) for x in losses],
                    }
                )
                + "\n"
            )
    return sum(losses[-10:]) / len(losses[-10:])


def lr_factor(step: int, steps: int, schedule: str) -> float:
    """Multiplier of lr at `step`: 10% linear warm-up, then linear decay to 10% or cosine to 0."""
    warmup = max(1, steps // 10)
    if step < warmup:
        return (step + 1) / warmup
    done = (step - warmup) / max(1, steps - warmup)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * done))
    return 1.0 - 0.9 * done


def recipe_key(args: argparse.Namespace) -> str:
    """The recipe as one readable string (every adapter of a pool shares it)."""
    extra = args.extra_train
    return (
        f"steps{args.steps}-b{args.batch_size}-lr{args.lr:g}-{args.schedule}-r{args.rank}-a{args.alpha}"
        f"-{'bf16' if args.bf16 else 'fp32'}-seed{args.seed}"
        + (f"-extra{extra:g}" if extra else "")
        + "".join(f"-{m}{r}" for m, r in args.extra_modules.items())
    )


RECIPE_FILE = "recipe.json"  # beside a trained adapter: its recipe, so a resumed run never mixes two recipes


def save_adapter(model: nn.Module, directory: Path, recipe: str | None = None) -> None:
    """fp16 safetensors in PEFT format, with `recipe` (`recipe_key`) in RECIPE_FILE; written to a temp dir and
    renamed so a crash leaves nothing."""
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = p.data.half()
    # The base was loaded from a local cache dir; record the hub id so the adapter loads anywhere.
    model.peft_config["default"].base_model_name_or_path = EMBEDDED_HUB_ID
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".tmp-{directory.name}-"))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True, save_embedding_layers=False)
        (tmp / "README.md").unlink(missing_ok=True)  # PEFT's auto model card is boilerplate
        if recipe is not None:
            (tmp / RECIPE_FILE).write_text(json.dumps({"recipe": recipe}) + "\n", encoding="utf-8")
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def trained_recipe(directory: Path) -> str | None:
    """The recipe the adapter in `directory` was trained with; None where none is recorded (older adapters)."""
    f = directory / RECIPE_FILE
    return json.loads(f.read_text(encoding="utf-8"))["recipe"] if f.is_file() else None


def unseen_examples(per_task: int = 1) -> list[UnseenExample]:
    """Test prompts of the tasks without an adapter, for the demo (`unseen_examples:` in adapters.yaml).

    `family` is left empty for a family held out whole, as `UnseenExample` documents.
    """
    return [
        UnseenExample(task=t.name, family="" if _whole_family_unseen(t) else t.family, prompt=ex.prompt)
        for t in TASKS.values()
        if t.unseen
        for ex in t.examples("test", per_task, seed=Task.EXAMPLE_SEED)
    ]


def _whole_family_unseen(task: Task) -> bool:
    return all(t.unseen for t in TASKS.values() if t.family == task.family)


def register(
    task: Task, directory: Path, config: Path, keep: set[str] | None = None, examples: list[str] | None = None
) -> None:
    """Add or replace the task's entry in adapters.yaml and refresh `unseen_examples:`.

    `keep`: if given, entries of other adapters not named in it are dropped (a task retired from the
    suite). `examples`: the entry's example prompts (default: `task.example_prompts(3)`;
    scripts/pick_examples.py passes those its adapter answers right). Only the trailing
    `adapters:`/`unseen_examples:` sections are rewritten, so the hand-written header (base model,
    defaults, comments) survives.
    """
    cfg = load_config(config)
    rel = os.path.relpath(directory.resolve(), config.resolve().parent)
    spec = AdapterSpec(
        name=task.name,
        path=rel,
        description=task.description,
        family=task.family,
        examples=examples if examples is not None else task.example_prompts(3),
    )
    if keep is not None:
        cfg.adapters = [a for a in cfg.adapters if a.name in keep or a.name == task.name]
    names = [a.name for a in cfg.adapters]
    if task.name in names:
        cfg.adapters[names.index(task.name)] = spec
    else:
        cfg.adapters.append(spec)
    cfg.unseen_examples = unseen_examples()
    text = config.read_text(encoding="utf-8")
    head = re.search(r"^(adapters|unseen_examples):", text, re.MULTILINE)
    tail_keys = set(re.findall(r"^(\w+):", text[head.start() :], re.MULTILINE)) if head else set()
    if head is None or not tail_keys <= {"adapters", "unseen_examples"}:
        save_config(cfg, config)  # other sections follow the pool: rewrite (comments are lost)
        return
    tail = {
        "adapters": [a.model_dump(mode="json", exclude_none=True) for a in cfg.adapters],
        "unseen_examples": [u.model_dump(mode="json") for u in cfg.unseen_examples],
    }
    new = text[: head.start()] + yaml.safe_dump(tail, sort_keys=False, allow_unicode=True, width=100)
    parse_config(yaml.safe_load(new), str(config), config.resolve().parent)  # never write an invalid pool
    config.write_text(new, encoding="utf-8")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m logo_core.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="all", help="`all` (every seen task) or a comma-separated list of names.")
    p.add_argument("--steps", type=int, default=50, help="Optimiser steps per adapter (same for all).")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--schedule", choices=["linear", "cosine"], default="linear", help="lr decay after warm-up.")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (weights and optimiser stay fp32).")
    p.add_argument("--loss-log", default=None, help="Append each adapter's loss curve (JSON lines) here.")
    p.add_argument("--no-register", action="store_true", help="Do not add the adapters to --config.")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=int, default=16)
    p.add_argument("--max-len", type=int, default=96, help="Longer sequences are cut from the left.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--extra-train",
        type=float,
        default=0.0,
        help="Share of each adapter's training examples drawn from its task's train-only pseudo-items "
        "(transliteration: pseudo-names); tasks without them train on their own items alone.",
    )
    p.add_argument(
        "--extra-modules",
        type=extra_modules,
        default={},
        help='Modules adapted beside q_proj and v_proj, each at its own rank: "down_proj:2,o_proj:4" (the size '
        "of the pool grows; the router still reads q_proj and v_proj).",
    )
    p.add_argument("--out", default="assets/adapters", help="Adapters go to OUT/<task>/.")
    p.add_argument("--config", default="adapters.yaml", help="Pool file to add the adapters to.")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads.")
    p.add_argument("--force", action="store_true", help="Retrain adapters that already exist.")
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "rank", "alpha", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    return args


def round_robin(tasks: list[Task]) -> list[Task]:
    """One task of each family in turn, so a pool trained part way already covers every family."""
    by: dict[str, list[Task]] = {}
    for t in tasks:
        by.setdefault(t.family, []).append(t)
    rounds = itertools.zip_longest(*by.values())
    return [t for r in rounds for t in r if t is not None]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    try:
        tasks = (
            round_robin(adapter_tasks())
            if args.tasks == "all"
            else [get_task(n.strip()) for n in args.tasks.split(",")]
        )
    except ValueError as e:
        raise SystemExit(f"--tasks: {e}") from None
    from tqdm import tqdm

    def done(task: Task) -> bool:
        return (Path(args.out) / task.name / "adapter_model.safetensors").is_file() and not args.force

    key = recipe_key(args)
    other = {t.name: r for t in tasks if done(t) and (r := trained_recipe(Path(args.out) / t.name)) not in (None, key)}
    if other:  # resuming must not ship a pool of two recipes
        name, recipe = next(iter(other.items()))
        raise SystemExit(
            f"--out {args.out}: {len(other)} finished adapter(s) there were trained with another recipe ({name}: {recipe}), "
            f"not {key}; pass --force to retrain them, or choose another --out"
        )
    todo = [t for t in tasks if not done(t)]
    log.info(
        "recipe %s: %d of %d adapters done, %d to train",
        key,
        len(tasks) - len(todo),
        len(tasks),
        len(todo),
    )
    for task in tqdm(todo, desc="pool", unit="adapter"):  # the ETA covers only what is left
        if done(task):  # finished meanwhile by another trainer on the same folder
            continue
        t0 = time.perf_counter()
        try:
            loss = train_one(task, args)
        except ValueError as e:  # a recipe the model cannot take (e.g. an --extra-modules name it lacks)
            raise SystemExit(str(e)) from None
        log.info("%s: trained in %.0f s, final loss %.4f", task.name, time.perf_counter() - t0, loss)
    if not args.no_register:
        for task in tasks:
            register(task, Path(args.out) / task.name, Path(args.config))


if __name__ == "__main__":
    main()
