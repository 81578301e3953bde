"""The app's public API: `/route` and `/generate`, typed endpoints whose parameters come from the options
models, each with its meaning, range and default (adapters.yaml's, the same the page starts from).

Example:
    >>> with gr.Blocks() as demo:
    ...     add_api(demo, engine)
    >>> Client(url).predict("What is 47 + 38?", k=2, api_name="/route")
"""

from __future__ import annotations

import json
import threading

import gradio as gr

from .engine import LoGoEngine
from .errors import LoGoError
from .hosting import document_inputs, field_params, gpu, typed_endpoint
from .options import GENERATE_FIELDS, ROUTE_FIELDS, GenerateOptions, RouteOptions


def add_api(demo: gr.Blocks, engine: LoGoEngine, gate: threading.Semaphore | None = None) -> None:
    """Add /route and /generate to `demo`; a bad request is an error with the library's message.

    Args:
        gate: bounds the generations running at once (shared with the page's own heavy events).
    """
    fields = ROUTE_FIELDS + GENERATE_FIELDS
    n, L = len(engine.pool), engine.n_layers
    notes = {f: f" Omitted: adapters.yaml's {json.dumps(getattr(engine.defaults, f), default=list)}." for f in fields}
    notes["k"] = f" Here 1-{n}." + notes["k"]
    notes["layer"] = f" Here 0..{L - 1} or -{L}..-1, e.g. 15:30 or 3,5." + notes["layer"]
    hints = {"layer": int | str | list[int], "module": str | list[str]}  # what a JSON client sends
    params = {"prompt": (str, "The user's message (the chat template is applied on the server).")}
    params |= field_params([RouteOptions, GenerateOptions], fields, notes, hints)

    def route(prompt, **settings):
        return engine.route(prompt, **settings).to_dict()

    def generate(prompt, **settings):
        g = engine.generate(prompt, **settings)
        return g.text, g.to_dict()

    endpoints = [
        (route, ROUTE_FIELDS, "Route a prompt: every adapter's score, the chosen top-k and their weights.", dict, None),
        (
            generate,
            fields,
            "Route a prompt and answer it with its mixture: the answer and its trace.",
            tuple[str, dict],
            gate,
        ),
    ]
    for call, chosen_fields, summary, returns, gate_ in endpoints:
        chosen = {p: params[p] for p in ("prompt", *chosen_fields)}
        endpoint = gpu(typed_endpoint(call, call.__name__, summary, chosen, returns), known=(LoGoError,), gate=gate_)
        dep = gr.api(endpoint, api_name=call.__name__)
        document_inputs(demo, dep, [d for _, d in chosen.values()])
