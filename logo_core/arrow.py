"""PEFT's Arrow as a peer of LoGo: its routing read from its own coefficients, on the lab's prompts.

Arrow (peft 0.21, `create_arrow_model`) routes every token at every adapted layer: the cosine-like
similarity |x . p_e| of the token with each adapter's prototype p_e (the top right singular vector of
its B A, computed by PEFT), top-k, softmax. To compare it with LoGo's one choice per prompt, this module
runs the Arrow model over each prompt, recomputes each token's coefficients at each adapted layer from
PEFT's own prototypes with PEFT's formula, and averages them over the user's tokens and all layers: the
adapter with the largest mean coefficient is Arrow's top-1 for the prompt.

`ArrowPeer` answers with Arrow beside LoGo (the Compare tab, the evaluation's Arrow rows). PEFT injects
its layers into the model it is given, and the engine's model is shared and never modified, so the peer
builds its Arrow model once, lazily, on a private copy of the engine's base model.

Example:
    python -m logo_core.arrow --top-k 1 3 --n 10 --out docs/lab/arrow.md
"""

from __future__ import annotations

import argparse
import copy
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def build(cfg, top_k: int, temperature: float = 1.0):
    """(arrow model, tokenizer) over adapters.yaml's pool, adapter e of Arrow = the pool's adapter e."""
    from peft import ArrowConfig, create_arrow_model

    from .loading import load_base

    base, tok = load_base(cfg.base_model)
    paths = [str(cfg.adapter_dir(a)) for a in cfg.adapters]
    model = create_arrow_model(base, paths, ArrowConfig(top_k=top_k, router_temperature=temperature))
    return model.eval(), tok


def token_coefficients(arrow, x: torch.Tensor) -> torch.Tensor:
    """[B, T, E] PEFT's per-token Arrow coefficients at one layer (its `ArrowLoraLinearLayer.forward`):
    |x . p_e| against each prototype, the top-k kept, a softmax at the router's temperature."""
    sim = torch.abs(x.float() @ arrow.prototypes.float().T)  # [B, T, E]
    top_v, idx = torch.topk(sim, arrow.top_k, dim=-1)
    full = torch.full_like(sim, float("-inf")).scatter(-1, idx, top_v)
    return torch.softmax(full / arrow.temperature, dim=-1)


def coefficients(model, encoder, prompts: list[str], batch: int = 8, device=None) -> torch.Tensor:
    """[P, E] each adapter's Arrow coefficient, averaged over the user's tokens and every adapted layer."""
    layers = [
        (name, m) for name, m in model.named_modules() if hasattr(m, "lora_arrow") and "arrow_router" in m.lora_arrow
    ]
    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, a, n=name: inputs.__setitem__(n, a[0])) for name, m in layers]
    out = []
    try:
        for s in range(0, len(prompts), batch):
            enc = encoder(prompts[s : s + batch], 0, device or torch.device("cpu"))
            with torch.inference_mode():
                model(**enc.inputs())
                total = 0
                for name, m in layers:
                    total = total + token_coefficients(m.lora_arrow["arrow_router"], inputs[name])
                w = enc.user.float() / enc.user.float().sum(-1, keepdim=True)  # mean over the user's tokens
                out.append(torch.einsum("bt,bte->be", w, total / len(layers)).cpu())
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(out)


@dataclass
class ArrowAnswer:
    """Arrow's answer to one prompt: its text (filled as it streams), the adapters it leaned on (mean
    coefficient over the user's tokens and layers, those of at least 5% or the top one), and timings."""

    text: str = ""
    weights: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


_BUILT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> {key: ({"model": ...}, lock)}
_BUILT_LOCK = threading.Lock()


def _shared(engine, key: tuple) -> tuple[dict, threading.Lock]:
    """The one Arrow model slot (and its lock) of `engine` for `key` (adapters, temperature, device); it goes
    with the engine."""
    with _BUILT_LOCK:
        return _BUILT.setdefault(engine, {}).setdefault(key, ({"model": None}, threading.Lock()))


class ArrowPeer:
    """PEFT's Arrow over an engine's pool, on its own copy of the base model (built on first use).

    Args:
        engine: a loaded `LoGoEngine` (its model is copied, never modified).
        top_k, temperature: `ArrowConfig`'s (per token and layer: top-k adapters, softmax temperature).
        adapters: the pool's adapters Arrow routes over (default: all of them, in pool order).
    """

    def __init__(self, engine, top_k: int = 3, temperature: float = 1.0, adapters: list[str] | None = None) -> None:
        from .loading import on_zero_gpu

        self.engine, self.top_k, self.temperature = engine, top_k, temperature
        self.names = list(engine.adapters) if adapters is None else list(adapters)
        unknown = [n for n in self.names if n not in engine.adapters]
        if unknown or not self.names or not 1 <= top_k <= len(self.names):
            raise ValueError(
                f"adapters={adapters!r} with top_k={top_k}: give 1 or more of the pool's adapters "
                f"({', '.join(engine.adapters[:4])}, ...) and 1 <= top_k <= their number; unknown: {unknown}"
            )
        # ZeroGPU lends a GPU per call only: a copy made inside one call would not outlive it, so there
        # Arrow runs on the CPU (the 135M default answers in seconds); elsewhere beside the engine's model.
        self.device = torch.device("cpu") if on_zero_gpu() else engine.placement.device
        # The built model and its lock, shared by every peer of this engine over the same adapters (the Compare
        # tab, the evaluation, the `with_top_k` views): building copies the base model and loads every adapter.
        self._built, self._lock = _shared(engine, (tuple(self.names), temperature, str(self.device)))

    def with_top_k(self, top_k: int) -> ArrowPeer:
        """This peer routing with another `top_k`: a view that shares the built model and its lock. PEFT's
        routers read their top_k on every forward, so a new k costs nothing, where a new model copies the base
        model and loads every adapter (about a minute on a CPU for the 48 of the default pool)."""
        if not 1 <= top_k <= len(self.names):
            raise ValueError(f"top_k={top_k}: give 1 <= top_k <= {len(self.names)} (the adapters Arrow routes over)")
        view = copy.copy(self)  # shares `_built` and `_lock`
        view.top_k = top_k
        return view

    def model(self):
        """The Arrow model; the first call copies the base model and loads every adapter (seconds)."""
        from peft import ArrowConfig, create_arrow_model

        with self._lock:
            if self._built["model"] is None:
                files = dict(zip(self.engine.adapters, self.engine.pool.files))
                paths = [str(f.path.parent if f.path.is_file() else f.path) for f in map(files.get, self.names)]
                cfg = ArrowConfig(top_k=self.top_k, router_temperature=self.temperature)
                base = copy.deepcopy(self.engine.model).to(self.device)
                self._built["model"] = create_arrow_model(base, paths, cfg).eval()
            return self._built["model"]

    def _mine(self, model):
        """`model` routing with this view's top_k (PEFT's `ArrowLoraLinearLayer.top_k`); hold the lock."""
        for m in model.modules():
            if hasattr(m, "lora_arrow") and "arrow_router" in m.lora_arrow:
                m.lora_arrow["arrow_router"].top_k = self.top_k
        return model

    def coefficients(self, prompts: list[str]) -> torch.Tensor:
        """[P, E] each adapter's mean Arrow coefficient per prompt (`coefficients`), routed with this view's top_k."""
        model = self.model()
        with self._lock:
            return coefficients(self._mine(model), self.engine.encode, prompts, device=self.device)

    def weights(self, prompts: list[str]) -> list[dict[str, float]]:
        """Per prompt, the adapters Arrow leaned on: {name: mean coefficient}, those >= 5% (at least one)."""
        names, out = self.names, []
        for row in self.coefficients(prompts).tolist():
            order = sorted(range(len(names)), key=lambda i: -row[i])
            out.append({names[i]: row[i] for i in order if row[i] >= 0.05 or i == order[0]})
        return out

    def stream(self, prompt: str, max_new_tokens: int) -> Iterator[ArrowAnswer]:
        """Greedy answer, yielded as it grows (the same `ArrowAnswer`, its text longer each time)."""
        from transformers import TextIteratorStreamer

        t0 = time.perf_counter()
        answer = ArrowAnswer(weights=self.weights([prompt])[0])
        model, tok = self.model(), self.engine.tokenizer
        enc = self.engine.encode([prompt], max_new_tokens, self.device)
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=120)
        box: dict = {}

        def work() -> None:
            try:
                with self._lock, torch.inference_mode():
                    box["ids"] = self._mine(model).generate(
                        **enc.inputs(),
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        streamer=streamer,
                        pad_token_id=tok.pad_token_id,
                    )
            except BaseException as e:  # raised to the consumer below
                box["error"] = e
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        first = None
        for piece in streamer:
            first = first or time.perf_counter() - t0
            answer.text += piece
            yield answer
        thread.join()
        if "error" in box:
            raise box["error"]
        total = time.perf_counter() - t0
        n = int(box["ids"].shape[1] - enc.input_ids.shape[1])
        answer.timings = {
            "first_token_s": first or total,
            "total_s": total,
            "tokens_per_s": n / max(total - (first or 0), 1e-9),
        }
        yield answer

    def generate_batch(self, prompts: list[str], max_new_tokens: int, batch: int = 16) -> list[str]:
        """Greedy answers for many prompts (the evaluation's Arrow rows), left-padded batches."""
        model, tok, out = self.model(), self.engine.tokenizer, []
        for s in range(0, len(prompts), batch):
            enc = self.engine.encode(prompts[s : s + batch], max_new_tokens, self.device)
            with self._lock, torch.inference_mode():
                ids = self._mine(model).generate(
                    **enc.inputs(), max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
                )
            out += tok.batch_decode(ids[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
        return [t.strip() for t in out]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m logo_core.arrow", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="adapters.yaml")
    p.add_argument("--top-k", type=int, nargs="+", default=[1, 3])
    p.add_argument("--n", type=int, default=10, help="test and people-style prompts per task")
    p.add_argument("--out", default="docs/lab/arrow.md")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    from .engine import LoGoEngine
    from .intervals import bootstrap, fmt, paired
    from .tasks import TASKS

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    engine = LoGoEngine.from_config(args.config)
    names = engine.adapters
    families = [engine.pool.family(n) for n in names]
    from .lab import pool_hash
    from .registry import load_config

    pool = pool_hash(load_config(args.config))
    lines = [
        f"# PEFT's Arrow as a routing peer\n\nPool `{args.config}` (sha256 of its weights {pool}). "
        f"`python -m logo_core.arrow --n {args.n}`: {args.n} test and {args.n} "
        "people-style prompts per task (the lab's items). Arrow's top-1 = the adapter with the largest coefficient, "
        "averaged over the user's tokens and all adapted layers (PEFT's prototypes and formula); LoGo's = the "
        "shipped default's best-scored adapter on the same prompts (abstaining aside). 95% bootstrap intervals; "
        "LoGo - Arrow is paired over the same prompts.",
        "",
        "| router | prompts | own top-1 | family hit (seen) | unseen family hit |",
        "|---|---|---:|---:|---:|",
    ]
    prompts = {
        split: [(t, ex) for t in TASKS.values() for ex in t.examples(split, args.n)] for split in ("test", "people")
    }

    def figures(rows, top: list[int]) -> dict[str, torch.Tensor]:
        seen = [(t, j) for (t, _), j in zip(rows, top) if t.name in names]
        unseen = [(t, j) for (t, _), j in zip(rows, top) if t.unseen and t.family in families]
        return {
            "own": torch.tensor([float(names[j] == t.name) for t, j in seen]),
            "family": torch.tensor([float(families[j] == t.family) for t, j in seen]),
            "unseen_family": torch.tensor([float(families[j] == t.family) for t, j in unseen]),
        }

    logo = {}
    for split, rows in prompts.items():
        routed = [
            r for i in range(0, len(rows), 16) for r in engine.route_batch([ex.prompt for _, ex in rows[i : i + 16]])
        ]
        logo[split] = figures(rows, [max(range(len(names)), key=lambda i, r=r: r.scores[names[i]]) for r in routed])
        f = logo[split]
        lines.append(f"| LoGo (shipped default) | {split} | " + " | ".join(fmt(bootstrap(f[m])) for m in f) + " |")
    peer = ArrowPeer(engine, top_k=args.top_k[0])  # one built model; each k routes through its own view
    for k in args.top_k:
        for split, rows in prompts.items():
            coeff = peer.with_top_k(k).coefficients([ex.prompt for _, ex in rows])
            f = figures(rows, coeff.argmax(-1).tolist())
            lines.append(f"| Arrow top_k {k} | {split} | " + " | ".join(fmt(bootstrap(f[m])) for m in f) + " |")
            diff = " | ".join(fmt(paired(logo[split][m], f[m])) for m in f)
            lines.append(f"| LoGo - Arrow top_k {k} (paired) | {split} | {diff} |")
            log.info(lines[-2])
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
