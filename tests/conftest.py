"""Shared fixtures: the real tokenizer and the real embedded engine, each loaded once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tokenizer():
    """SmolLM2's tokenizer (from the cached conversion of the embedded GGUF)."""
    from transformers import AutoTokenizer

    from logo_core.loading import resolve_model_dir
    from logo_core.registry import BaseModelSpec

    source, _ = resolve_model_dir(BaseModelSpec())
    tok = AutoTokenizer.from_pretrained(source)
    tok.padding_side = "left"
    return tok


@pytest.fixture(scope="session")
def real_engine():
    """The embedded default: SmolLM2-135M-Instruct with the shipped pool of adapters.yaml."""
    from logo_core.engine import LoGoEngine

    engine = LoGoEngine.from_config(ROOT / "adapters.yaml")
    if len(engine.pool) < 2:
        pytest.skip("the shipped pool in adapters.yaml has fewer than 2 adapters")
    return engine
