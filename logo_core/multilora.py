"""Train many LoRA adapters at once: one batch holds every adapter's rows, each row goes through its own adapter.

The plain trainer (`train.train_one`) trains one adapter at a time. On a GPU that leaves the chip idle: a 135M
model at batch 8 x 48 tokens is bound by kernel launches, not by arithmetic. Here each adapted projection carries
all N adapters' factors stacked ([N, r, d_in] and [N, d_out, r]) and `rows` says which adapter each row of the
batch goes through. Each adapter's loss is the mean over its own answer tokens and the step minimises their
sum, so every adapter receives exactly its own gradient; AdamW is elementwise and gradients are clipped per
adapter, so each adapter takes the same steps as in its own run (`train_one`, the reference path, tested against
this one). Same recipe, same data order, same initialisation; only the batching differs.

Example (a GPU machine; writes PEFT adapters as `train.py` does):
    python -m logo_core.multilora --tasks all --steps 300 --lr 5e-3 --schedule cosine --bf16 --device cuda \\
        --out runs/pool_gpu
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .tasks import Task
from .train import (
    IGNORE,
    answer_span,
    collate,
    encode,
    lora_model,
    lr_factor,
    recipe_key,
    save_adapter,
    training_examples,
)

log = logging.getLogger(__name__)


class StackedLoRA(nn.Module):
    """A frozen linear layer plus N LoRA adapters; row b of the batch goes through adapter `rows[b]`.

    y = W x + s * B_rows[b] A_rows[b] x, the PEFT LoRA formula (no dropout) with the adapter chosen per row.
    """

    def __init__(self, base: nn.Linear, A0: Tensor, n: int, scale: float) -> None:
        super().__init__()
        self.base = base
        rank, d_in = A0.shape
        self.A = nn.Parameter(A0.detach().float().expand(n, rank, d_in).clone())  # every adapter starts alike
        self.B = nn.Parameter(torch.zeros(n, base.out_features, rank, device=A0.device))  # as PEFT: B = 0
        self.scale = scale
        self.rows: Tensor | None = None  # [batch] adapter index of each row, set before each forward

    def forward(self, x: Tensor) -> Tensor:
        if self.rows is None:
            raise RuntimeError("StackedLoRA.rows is not set: call `use_rows` first")
        A, B = self.A[self.rows].to(x.dtype), self.B[self.rows].to(x.dtype)  # [b, r, d_in], [b, d_out, r]
        z = torch.einsum("bti,bri->btr", x, A)
        return self.base(x) + self.scale * torch.einsum("btr,bor->bto", z, B)


def stack_adapters(peft_model: nn.Module, n: int) -> list[tuple[nn.Module, str, nn.Module, StackedLoRA]]:
    """Swap every PEFT LoRA layer of `peft_model` for a `StackedLoRA` of `n` adapters that start from its init.

    Returns (parent, attribute, the PEFT layer, the stacked layer) for each, so `unstack` can put PEFT's back.
    """
    from peft.tuners.lora import LoraLayer

    swaps = []
    for name, module in list(peft_model.named_modules()):
        if isinstance(module, LoraLayer) and "default" in module.lora_A:
            parent = peft_model.get_submodule(name.rsplit(".", 1)[0])
            stacked = StackedLoRA(
                module.base_layer, module.lora_A["default"].weight, n, float(module.scaling["default"])
            )
            setattr(parent, name.rsplit(".", 1)[1], stacked)
            swaps.append((parent, name.rsplit(".", 1)[1], module, stacked))
    return swaps


def unstack(swaps: list[tuple[nn.Module, str, nn.Module, StackedLoRA]]) -> None:
    """Put PEFT's layers back (their own weights untouched)."""
    for parent, attr, module, _ in swaps:
        setattr(parent, attr, module)


@contextmanager
def use_rows(swaps, rows: Tensor) -> Iterator[None]:
    """Route row b of the next forwards through adapter `rows[b]` (generation keeps its rows, so it may span it)."""
    for *_, stacked in swaps:
        stacked.rows = rows
    try:
        yield
    finally:
        for *_, stacked in swaps:
            stacked.rows = None


def export(swaps, i: int) -> None:
    """Copy adapter `i`'s factors into the PEFT layers (then `save_adapter` writes it as any adapter)."""
    with torch.no_grad():
        for _, _, module, stacked in swaps:
            module.lora_A["default"].weight.data = stacked.A[i].detach().to(module.lora_A["default"].weight)
            module.lora_B["default"].weight.data = stacked.B[i].detach().to(module.lora_B["default"].weight)


def adapter_losses(model: nn.Module, batch: dict[str, Tensor], rows: Tensor, n: int) -> Tensor:
    """[n] each adapter's mean next-token cross-entropy over its own rows' answer tokens (`train.answer_loss`
    per adapter)."""
    labels = batch["labels"]
    K = answer_span(labels)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, logits_to_keep=K).logits  # [B, K, V]
    target = labels[:, -K + 1 :]
    tok = nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), target.flatten(), ignore_index=IGNORE, reduction="none"
    ).view(target.shape)
    per_row, count = tok.sum(-1), (target != IGNORE).sum(-1).float()
    total = torch.zeros(n, device=tok.device).index_add(0, rows, per_row)
    tokens = torch.zeros(n, device=tok.device).index_add(0, rows, count)
    return total / tokens.clamp_min(1)


def clip_per_adapter(params: list[nn.Parameter], max_norm: float = 1.0) -> None:
    """`clip_grad_norm_` for each adapter alone: params are stacked [N, ...], adapter i owns slice i of each."""
    sq = sum(p.grad.float().pow(2).flatten(1).sum(1) for p in params)  # [N]
    coef = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.mul_(coef.view(-1, *([1] * (p.grad.dim() - 1))).to(p.grad.dtype))


@dataclass
class Trained:
    """N adapters trained together: the PEFT-wrapped base with the stacked layers in place, and each loss curve."""

    model: nn.Module
    tok: object
    tasks: list[Task]
    swaps: list
    curves: dict[str, list[float]]
    seconds: float

    def save(self, out: Path, recipe: str | None = None) -> None:
        """Write every adapter to `out/<task>` as PEFT safetensors in fp16, with its `recipe` (`train.save_adapter`)."""
        with torch.no_grad():  # answers from here on come from the weights as written
            for *_, stacked in self.swaps:
                stacked.A.copy_(stacked.A.half().float())
                stacked.B.copy_(stacked.B.half().float())
        unstack(self.swaps)
        try:
            for i, task in enumerate(self.tasks):
                export(self.swaps, i)
                save_adapter(self.model, Path(out) / task.name, recipe)
        finally:
            for parent, attr, _, stacked in self.swaps:
                setattr(parent, attr, stacked)

    def answers(self, prompts: list[str], adapters: list[int], max_new_tokens: int) -> list[str]:
        """Greedy answers, prompt j with adapter `adapters[j]` alone (what `tasks.check.generate` gives with PEFT)."""
        from .tasks.check import generate

        device = next(self.model.parameters()).device
        with use_rows(self.swaps, torch.tensor(adapters, device=device)):
            return generate(self.model, self.tok, prompts, max_new_tokens, batch_size=max(1, len(prompts)))


_ENCODED: dict[tuple[str, int, int, float], list] = {}  # recipes of one length share their data within a process


def _encoded(task: Task, tok, n: int, seed: int, extra: float = 0.0) -> list[tuple[list[int], list[int]]]:
    """`train_one`'s training rows of one task (`train.training_examples`), encoded, shuffled by `seed`."""
    key = (task.name, n, seed, extra)
    if key not in _ENCODED:
        rows = [encode(tok, ex.prompt, ex.answer) for ex in training_examples(task, n, seed, extra)]
        random.Random(seed).shuffle(rows)
        _ENCODED[key] = rows
    return _ENCODED[key]


def train_many(tasks: list[Task], args: argparse.Namespace, device: str = "cpu") -> Trained:
    """Train one adapter per task with `args`' recipe (as `train.train_one` would, all at once)."""
    from .loading import load_base

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    base, tok = load_base()
    # the same init as `train_one` (same seed, same order)
    model = lora_model(base, args.rank, args.alpha, args.extra_modules)
    model.to(device)
    n = len(tasks)
    swaps = stack_adapters(model, n)
    model.train()
    extra = args.extra_train
    data = [_encoded(task, tok, args.steps * args.batch_size, args.seed, extra) for task in tasks]
    params = [p for *_, s in swaps for p in (s.A, s.B)]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, args.steps, args.schedule))
    rows = torch.arange(n, device=device).repeat_interleave(args.batch_size)
    losses = []
    for step in range(args.steps):
        part = [r for d in data for r in d[step * args.batch_size : (step + 1) * args.batch_size]]
        batch = {k: v.to(device) for k, v in collate(part, tok.pad_token_id, args.max_len).items()}
        with use_rows(swaps, rows), torch.autocast(torch.device(device).type, torch.bfloat16, enabled=args.bf16):
            per = adapter_losses(model, batch, rows, n)
        per.sum().backward()
        clip_per_adapter(params)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(per.detach())
    curve = torch.stack(losses).float().cpu() if losses else torch.zeros(0, n)
    model.eval()
    curves = {t.name: [round(x, 4) for x in curve[:, i].tolist()] for i, t in enumerate(tasks)}
    return Trained(model, tok, tasks, swaps, curves, time.perf_counter() - t0)


def device_name(device: str) -> str:
    """What the loss log records as where the pool trained (the GPU's name, or `cpu`)."""
    return torch.cuda.get_device_name(torch.device(device)) if torch.device(device).type == "cuda" else "cpu"


def main(argv: list[str] | None = None) -> None:
    from .tasks import adapter_tasks, get_task
    from .train import parse_args, round_robin

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--device", default="cpu")
    known, rest = p.parse_known_args(argv)
    args = parse_args(rest)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    tasks = (
        round_robin(adapter_tasks()) if args.tasks == "all" else [get_task(t.strip()) for t in args.tasks.split(",")]
    )
    try:
        trained = train_many(tasks, args, known.device)
    except ValueError as e:  # a recipe the model cannot take (e.g. an --extra-modules name it lacks)
        raise SystemExit(str(e)) from None
    trained.save(Path(args.out), recipe_key(args))
    seconds, curves = trained.seconds, trained.curves
    log.info("%d adapters (%s) in %.0f s on %s", len(tasks), recipe_key(args), seconds, known.device)
    if args.loss_log:
        with open(args.loss_log, "a", encoding="utf-8") as f:
            for task in tasks:
                record = {"task": task.name, "recipe": recipe_key(args), "seconds": round(seconds / len(tasks), 1)}
                record |= {"threads": args.threads, "device": device_name(known.device)}
                f.write(json.dumps(record | {"losses": curves[task.name]}) + "\n")


if __name__ == "__main__":
    main()
