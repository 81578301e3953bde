"""Shared fixtures: the real tokenizer and the real embedded engine, each loaded once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a hub

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_tok():
    """A tiny byte-level BPE tokenizer with a chat template, built in memory (the math tests need no real model)."""
    from helpers import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tokenizer():
    """SmolLM2's tokenizer (from the cached conversion of the embedded GGUF)."""
    from transformers import AutoTokenizer

    from logo_core.loading import resolve_model_dir
    from logo_core.registry import BaseModelSpec

    source = resolve_model_dir(BaseModelSpec())
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


@pytest.fixture(scope="session")
def app_engine():
    """The app's engine, built as app.py builds it (probe cache on), on the shipped pool of adapters.yaml.

    Only the test-friendly defaults differ from the file: k=2, short answers and a cheaper probe of huge prompts.
    Shared by test_app.py, test_app_client.py and test_browser.py.
    """
    from logo_core.engine import LoGoEngine
    from logo_core.registry import load_config, with_overrides

    cfg = with_overrides(
        load_config(ROOT / "adapters.yaml"),
        defaults={"k": 2, "max_new_tokens": 12},
        engine={"max_prompt_tokens": 512, "probe_cache_mb": 32},
    )
    return LoGoEngine.from_pool_config(cfg)


REAL_MODEL = {"tokenizer", "real_engine", "app_engine"}


def pytest_collection_modifyitems(items):
    """A test on the real model (SmolLM2 and the shipped pool, loaded and calibrated) is slow: `make test-fast`
    (`-m "not slow"`) leaves it out; modules that are slow throughout say so with `pytestmark`."""
    for item in items:
        if REAL_MODEL & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def one_torch_thread_for_tiny_models(request):
    """Tiny models gain nothing from a second intra-op thread, and beside another busy process (these 2 cores
    run a training job) its barrier waits cost 10-100x: route + generate of the tiny model took 0.1-1.4 s with
    2 threads, 10-25 ms with 1. The real model keeps torch's default."""
    from logo_core.bench.common import torch_threads

    with torch_threads(None if REAL_MODEL & set(request.fixturenames) else 1):
        yield
