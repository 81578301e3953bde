"""Fixtures for the app tests: the real SmolLM2 with a small pool of random PEFT adapters, and a served app.

The pool is built once per pytest session (in the session's base temp dir, shared by the test modules);
each module loads its engine once (a session-scoped fixture defined in the module).
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import yaml

from logo_core.engine import LoGoEngine
from logo_core.loading import load_base
from logo_core.pool import load_pool
from logo_core.registry import BaseModelSpec, load_config
from logo_core.tasks import TASKS

POOL = ("arithmetic", "capitals", "sentiment", "translation_en_fr")  # adapters named after suite tasks


def build_engine(root: Path) -> LoGoEngine:
    """The real base model with `POOL` as random-weight adapters (small std: generations stay sane).

    The adapter files and adapters.yaml are written under `root` the first time and reused afterwards.
    """
    from helpers import make_adapter

    model, tok = load_base(BaseModelSpec())
    config = root / "adapters.yaml"
    if not config.is_file():
        root.mkdir(parents=True, exist_ok=True)
        entries = []
        for seed, name in enumerate(POOL):
            make_adapter(model, root / name, seed=seed, r=8, alpha=16, targets=("q_proj", "v_proj"), std=0.02)
            task = TASKS[name]
            entries.append(
                {"name": name, "path": name, "description": task.description, "examples": task.example_prompts(2)}
            )
        # max_prompt_tokens: a 50,000-character prompt is truncated to 512 tokens (a cheaper probe than 2048)
        doc = {"defaults": {"k": 2, "max_new_tokens": 12, "max_prompt_tokens": 512}, "adapters": entries}
        tmp = root / "adapters.yaml.tmp"
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        tmp.rename(config)
    cfg = load_config(config)
    pool, report = load_pool(cfg, model)
    return LoGoEngine(model, tok, pool, cfg.defaults, cfg.neutral_prompts, report)


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(demo, **launch_kwargs):
    """Launch a demo on a free port in a background thread; yields its URL and closes it afterwards."""
    import app

    port = free_port()
    demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, theme=app.THEME,
        css=app.CSS, show_error=True, **launch_kwargs,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
        time.sleep(0.2)
