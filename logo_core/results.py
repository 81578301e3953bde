"""What the engine returns: a routing trace and a generation, plain dataclasses that serialise to JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Routing:
    """The routing trace of one prompt.

    Attributes:
        prompt: the user's text.
        scores: every adapter's score, pool order (empty for an explicit mixture).
        selected: the chosen adapters, best first.
        weights: selected -> merge weight (LoGo's sum to 1).
        options: the routing settings (`RouteOptions.trace()`, with `mode`), or `mode: explicit`.
        ties: adapters whose score equals the score at the top-k cut on both sides of it (the pool order
            decided), empty when the cut is clean.
        timings: `probe_s`.
        notices: what the user should know (a cut prompt, a tie).
        abstain_score: the best score `abstain_below` was compared with (the `abstain_signal`'s, calibrated as the
            routing signal is); None when the routing could not abstain.
    """

    prompt: str
    scores: dict[str, float]
    selected: list[str]
    weights: dict[str, float]
    options: dict
    ties: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    abstain_score: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def explicit(cls, prompt: str, weights: dict[str, float], notices: list[str] | None = None) -> Routing:
        """The trace of a mixture given by the caller (no routing: no scores)."""
        return cls(prompt, {}, list(weights), dict(weights), {"mode": "explicit"}, notices=list(notices or []))


@dataclass
class Generation:
    """A generated answer with its routing, settings, timings and provenance.

    Attributes:
        text: the answer.
        routing: how its mixture was chosen.
        generation: the generation settings (`GenerateOptions`), seed included.
        timings: probe_s, generate_s (prefill + decode), total_s, new_tokens, tokens_per_s, first_token_s.
        stopped: decoding was stopped (Stop, a closed stream) before EOS or the length limit.
        provenance: the model id and revision, the adapter files' hashes: what `replay` needs.
        notices: what the user should know.
    """

    text: str
    routing: Routing
    generation: dict
    timings: dict[str, float]
    stopped: bool = False
    provenance: dict = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def make_timings(probe_s: float, generate_s: float, total_s: float, new_tokens: int) -> dict[str, float]:
    """A generation's timings: probe, prefill + decode, the whole request, tokens and their rate."""
    return {
        "probe_s": probe_s,
        "generate_s": generate_s,
        "total_s": total_s,
        "new_tokens": new_tokens,
        "tokens_per_s": new_tokens / max(generate_s, 1e-9),
    }
