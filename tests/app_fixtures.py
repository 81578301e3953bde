"""Fixtures for the app tests: the names of the shipped adapter pool, and a served app.

The engine itself (`app_engine`: the real SmolLM2 with the 10 trained adapters of adapters.yaml) is a
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
