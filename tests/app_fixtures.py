"""Fixtures for the app tests: the shipped pool's names, the page's control values, and a served app.

The engine itself (`app_engine`: the real SmolLM2 with the trained adapters of adapters.yaml) is a
session-scoped fixture in conftest.py, loaded once for all the app test modules.
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

from logo_core.registry import load_config

ROOT = Path(__file__).resolve().parents[1]
POOL = tuple(a.name for a in load_config(ROOT / "adapters.yaml").adapters)  # the shipped pool, in file order
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def values(engine, **changes) -> list:
    """The page's settings controls in `app.FIELDS` order: where the page starts, then `changes`."""
    import app

    return list((app.start_values(engine) | changes).values())


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(demo):
    """Launch a demo on a free port in a background thread; yields its URL and closes it afterwards."""
    import app

    port = free_port()
    demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, show_error=True, **app.LAUNCH
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
        time.sleep(0.2)
