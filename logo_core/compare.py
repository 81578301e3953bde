"""The Compare tab's peers: the base model, LoGo, PEFT's Arrow and retrieval answer one prompt side by side.

Each peer yields `Row`s as its answer grows, the last one with its timings and the adapters it used, so
the page shows every answer streaming and, at the end, who chose what. LoGo, retrieval and the base model
generate through the engine (one mixing code); Arrow generates in its own PEFT model (`arrow.ArrowPeer`).
Arrow and retrieval run at the page's k: Arrow's `top_k` per token and layer, retrieval's top-k prompts.

Example:
    >>> peers = Peers(engine)
    >>> for label in PEERS:
    ...     *_, last = peers.rows(label, "Spell out 19 in German.", {"k": 1}, {"max_new_tokens": 16})
    ...     print(label, last.text, last.weights)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from .arrow import ArrowPeer
from .baselines import Retriever

ABSTAINED = {  # the Compare row's note, per `abstain_reason`
    "short": "LoGo abstained: the prompt is too short to route, the base model answered",
    "no_standout": "LoGo abstained: no adapter stood out, the base model answered",
    "unlike_pool": "LoGo abstained: the prompt is unlike the prompts this pool is for, the base model answered",
}

PEERS = ("Base model", "LoGo", "Arrow (PEFT)", "Retrieval")


@dataclass
class Row:
    """One peer's answer so far; `timings` (first_token_s, tokens_per_s) and `weights` once it is done."""

    text: str = ""
    weights: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    note: str = ""


class Peers:
    """Builds Arrow and the retriever on first use (seconds each) and keeps them for the next prompt."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self._arrow: ArrowPeer | None = None
        self._retriever: Retriever | None = None
        self._lock = threading.Lock()

    def arrow(self, k: int) -> ArrowPeer:
        """Arrow at `top_k = k`: one model is built (on first use) and every k is a view of it."""
        k = min(k, len(self.engine.adapters))
        with self._lock:
            if self._arrow is None:
                self._arrow = ArrowPeer(self.engine, top_k=k)
            return self._arrow.with_top_k(k)

    def retriever(self) -> Retriever:
        with self._lock:
            if self._retriever is None:
                self._retriever = Retriever(self.engine.pool.specs)
            return self._retriever

    def rows(self, label: str, prompt: str, route: dict, gen: dict) -> Iterator[Row]:
        """`label`'s answer to `prompt` as it grows (`route`, `gen`: the page's settings)."""
        k = int(route.get("k") or self.engine.route_options(**route).k)
        if label == "Arrow (PEFT)":
            for a in self.arrow(k).stream(prompt, int(self.engine.generate_options(**gen).max_new_tokens)):
                yield Row(a.text, a.weights, a.timings, f"Arrow: top_k {self._arrow.top_k} per token and layer")
            return
        if label == "Retrieval":
            try:
                mixture = self.retriever().select([prompt], k)[0]
            except ImportError as e:
                yield Row(note=str(e))
                return
            yield from self._engine_rows(prompt, mixture, {}, gen, f"retrieval: top {k} by sentence embedding")
        elif label == "LoGo":
            yield from self._engine_rows(prompt, None, route, gen, "")
        else:
            yield from self._engine_rows(prompt, {}, {}, gen, "")

    def _engine_rows(self, prompt: str, mixture, route: dict, gen: dict, note: str) -> Iterator[Row]:
        t0, first, row = time.perf_counter(), None, Row(note=note)
        stream = self.engine.stream(prompt, adapters=mixture, **route, **gen)
        for piece in stream:
            first, row.text = first or time.perf_counter() - t0, row.text + piece
            yield row
        g = stream.result
        row.weights = dict(g.routing.weights)
        row.timings = {"first_token_s": first or g.timings["total_s"], "tokens_per_s": g.timings["tokens_per_s"]}
        if g.routing.options.get("mode") == "abstained":
            row.note = ABSTAINED.get(g.routing.options.get("abstain_reason"), ABSTAINED["no_standout"])
        yield row
