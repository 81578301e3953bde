"""The generating side: a `Plan` (routed rows, their ids, settings and mixture) -> new tokens -> `Generation`.

Three backends, one interface (`Decoder.run`):

- eager: a private view of the model carrying the plan's mixture (`mixing.attach`); the reference;
- compiled: `compiled.CompiledDecoder` (static KV cache, the mixture as fixed-shape buffers), when
  enabled and the plan fits it, else eager;
- micro-batched: `batcher.MicroBatcher` groups concurrent one-row plans into one decode, when on.

Example:
    >>> plan = engine.plan(["What is 47 + 38?"], max_new_tokens=16)
    >>> [engine.decoder.finish(d).text for d in engine.decoder.run(plan)]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from . import generation
from .errors import RequestError
from .loading import save_peft_adapter
from .mixing import Mixture, attach
from .options import GenerateOptions
from .pool import AdapterPool
from .prompts import Encoded
from .results import Generation, Routing, make_timings


@dataclass
class Plan:
    """One request, ready to decode: its rows' routings, inputs, settings and mixture."""

    routings: list[Routing]
    enc: Encoded
    gen: GenerateOptions
    mixture: Mixture | None
    started: float
    seeds: list[int] | None = None  # a sampled request's seed per row (drawn when none was given)


@dataclass
class Decoded:
    """Row `row` of a decoded plan (a micro-batch's merged plan, or the request's own)."""

    plan: Plan
    row: int
    ids: Tensor  # [T_new] the row's new token ids
    seconds: float  # prefill + decode of the batch it ran in


class Decoder:
    """Decode plans on the eager, compiled or micro-batched backend.

    Args:
        model: the shared base model (never modified: every decode runs on a private view).
        tokenizer: its tokenizer.
        pool: the adapters (the factors of a plan's mixture).
        device: the model's input device (the seeded samplers' generators live there).
        mixture: adapters.yaml's `engine.mixture`: "fold" a one-mixture request into private weights
            W + Bw A, or keep a "lowrank" pair per module; "auto" folds on a CPU.
        provenance: model id, revision and adapter hashes, recorded in every generation.
    """

    def __init__(
        self, model: nn.Module, tokenizer, pool: AdapterPool, device: torch.device, mixture: str, provenance: dict
    ) -> None:
        self.model, self.tokenizer, self.pool, self.device = model, tokenizer, pool, device
        self.fold = mixture == "fold" or (mixture == "auto" and device.type == "cpu")
        self.provenance = provenance
        self.compiled = None  # a `compiled.CompiledDecoder`, when enabled
        self.batcher = None  # a `batcher.MicroBatcher`, when batching is on

    def mixture_for(self, routings: Sequence[Routing]) -> Mixture | None:
        """The low-rank mixture of each row (one shared mixture when all rows agree)."""
        return Mixture.build([[(self.pool.factors(n), w) for n, w in r.weights.items()] for r in routings])

    def plan(self, routings: list[Routing], enc: Encoded, gen: GenerateOptions, started: float) -> Plan:
        """A request's plan: its rows' mixture and, when it samples, a seed per row (drawn when none was given)."""
        seeds = (
            [gen.seed if gen.seed is not None else generation.new_seed() for _ in routings] if gen.do_sample else None
        )
        return Plan(routings, enc, gen, self.mixture_for(routings), started, seeds)

    def merge(self, plans: Sequence[Plan]) -> Plan:
        """One plan of several one-row plans with the same generation settings (a micro-batch)."""
        routings = [r for p in plans for r in p.routings]
        enc = Encoded.stack([p.enc for p in plans], self.tokenizer.pad_token_id)
        seeds = [s for p in plans for s in p.seeds] if plans[0].seeds else None
        return Plan(routings, enc, plans[0].gen, self.mixture_for(routings), min(p.started for p in plans), seeds)

    def decode(self, plan: Plan, streamer=None, stops: Sequence[threading.Event] = ()) -> Tensor:
        """Generate the plan's new tokens ([B, T_new]): compiled when enabled and the plan fits, else eager.

        Args:
            streamer: transformers' streamer interface (put/end), fed every new token.
            stops: one event for all rows, or one per row: a set event ends that row (Stop).
        """
        cfg = generation.generation_config(plan.gen, self.tokenizer)
        processors = [generation.SeededSampler(plan.seeds, self.device)] if plan.seeds else []
        criteria = [generation.StopOnEvent(list(stops))] if stops else []
        if self.compiled is not None and self.compiled.accepts(plan):
            out = self.compiled.generate(plan, cfg, processors, criteria, streamer)
        else:
            view = attach(self.model, plan.mixture, fold_weights=self.fold)
            out = generation.run_generate(view, plan.enc.inputs(), cfg, processors, criteria, streamer)
        return out[:, plan.enc.input_ids.shape[1] :]

    def run(self, plan: Plan, streamer=None, stops: Sequence[threading.Event] = ()) -> list[Decoded]:
        """Decode a plan, through the micro-batcher when it is on and the plan has one row. One `Decoded` a row."""
        if self.batcher is not None and len(plan.routings) == 1:
            return [self.batcher.submit(plan, streamer, stops[0] if stops else threading.Event())]
        t0 = time.perf_counter()
        new = self.decode(plan, streamer, stops)
        seconds = time.perf_counter() - t0
        return [Decoded(plan, i, new[i], seconds) for i in range(len(plan.routings))]

    def finish(self, d: Decoded, text: str | None = None, stopped: bool = False) -> Generation:
        """A decoded row's `Generation`: text, routing, settings, timings, provenance."""
        plan, i, tok = d.plan, d.row, self.tokenizer
        r, gen = plan.routings[i], plan.gen.model_dump()
        n_tok = generation.count_tokens(d.ids, tok.eos_token_id, tok.pad_token_id)
        timings = make_timings(r.timings.get("probe_s", 0.0), d.seconds, time.perf_counter() - plan.started, n_tok)
        if text is None:
            text = tok.decode(d.ids, skip_special_tokens=True)
        if plan.seeds:
            gen["seed"] = plan.seeds[i]  # the seed actually used: `replay` gives the same answer
        return Generation(text, r, gen, timings, stopped, self.provenance, r.notices)

    def export(self, weights: dict[str, float], directory: Path) -> Path:
        """Write a checked mixture {adapter: weight} as one PEFT adapter (the rank-concatenated LoRA,
        docs/method.md §6) that `PeftModel.from_pretrained` loads to compute what the decoder computes."""
        if (mixture := self.mixture_for([Routing.explicit("", weights)])) is None:
            raise RequestError("`adapters` is empty: there is no mixture to export")
        return save_peft_adapter(mixture, self.model, directory, self.provenance.get("model", ""))

    def enable_compiled(self, max_rank: int, buckets, max_cache_len: int, encode: Callable, log=print) -> float:
        """Build and compile the fixed-shape decode path (`compiled.py`) for every module the pool adapts.
        Returns seconds."""
        from .compiled import CompiledDecoder

        keys = {key for f in self.pool.files for key in f.keys}
        self.compiled = CompiledDecoder(self.model, keys, self.pool.where, max_rank, buckets, max_cache_len)
        return self.compiled.warm_up(encode, self.tokenizer, log)

    def enable_batching(self, window_s: float = 0.02, max_rows: int = 8):
        """Turn micro-batching on (`batcher.py`): concurrent one-row plans share a decode. Returns the batcher."""
        from .batcher import MicroBatcher

        self.batcher = MicroBatcher(self, window_s, max_rows)
        return self.batcher
